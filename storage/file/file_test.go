package file_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/file"
	"github.com/mastodon-on-balena/mastodon-balena/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Store {
		s, err := file.New(filepath.Join(t.TempDir(), "backups"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestModesAndLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	s, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "x/y/z.bin", strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]fs.FileMode{
		dir:                             0o700 | fs.ModeDir,
		filepath.Join(dir, "x"):         0o700 | fs.ModeDir,
		filepath.Join(dir, "x/y"):       0o700 | fs.ModeDir,
		filepath.Join(dir, "x/y/z.bin"): 0o600,
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	// No temporary file left beside it.
	entries, _ := os.ReadDir(filepath.Join(dir, "x/y"))
	if len(entries) != 1 {
		t.Errorf("x/y holds %v, want only z.bin", entries)
	}
	// Delete removes the directories it empties, not the store's own.
	if err := s.Delete(ctx, "x/y/z.bin"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("x still exists after its last object was deleted: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the store's directory is gone: %v", err)
	}
	if got := s.String(); got != "file://"+dir {
		t.Errorf("String() = %q", got)
	}
}

func TestTemporaryFilesAreNotListed(t *testing.T) {
	dir := t.TempDir()
	s, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	// What a crash midway through a Put leaves behind.
	if err := os.WriteFile(filepath.Join(dir, ".mastokeeper-tmp-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	objs, err := s.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 0 {
		t.Errorf("List = %v, want nothing", objs)
	}
	if err := s.Put(context.Background(), "a/.mastokeeper-tmp-x", strings.NewReader("x")); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("Put of a key with a reserved segment: %v, want ErrInvalidKey", err)
	}
}

func TestNewRejectsRelative(t *testing.T) {
	if _, err := file.New("relative/dir"); err == nil {
		t.Error("New(relative): no error")
	}
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := file.New(f); err == nil {
		t.Error("New(a file): no error")
	}
}

func TestListRemovesTheTemporaryFilesOfWritesKilledLongAgo(t *testing.T) {
	dir := t.TempDir()
	s, err := file.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Put(ctx, "snapshots/a/db", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "snapshots", "a", ".mastokeeper-tmp-killed")
	fresh := filepath.Join(dir, "snapshots", "a", ".mastokeeper-tmp-running")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	day := time.Now().Add(-25 * time.Hour)
	os.Chtimes(old, day, day)
	if _, err := s.List(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a day-old temporary file is still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a running write's temporary file was removed: %v", err)
	}
}
