package restore

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
)

var sumA, sumB = strings.Repeat("a", 64), strings.Repeat("b", 64)

func entry(p, sum string) snapshot.MediaEntry {
	return snapshot.MediaEntry{Path: p, Size: 1, Mode: 0o644, ModTime: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), SHA256: sum}
}

func TestTheMediaIndexIsCheckedWholeBeforeAnythingIsTouched(t *testing.T) {
	m := &snapshot.Manifest{ID: "20261201T000000.000Z", MediaBlobs: []string{sumA}, MediaFiles: 1, Authenticated: true}
	log := slog.New(slog.DiscardHandler)
	if _, err := checkIndex(log, m, []snapshot.MediaEntry{entry("accounts/a.png", sumA)}); err != nil {
		t.Fatalf("a good index: %v", err)
	}
	for name, index := range map[string][]snapshot.MediaEntry{
		"a path leaving the volume":       {entry("../keeper/instance.json", sumA)},
		"an absolute path":                {entry("/etc/passwd", sumA)},
		"a blob the manifest lacks":       {entry("accounts/a.png", sumB)},
		"a path listed twice":             {entry("a.png", sumA), entry("a.png", sumA)},
		"a file that is also a directory": {entry("a", sumA), entry("a/b", sumA)},
		"a setuid mode":                   {{Path: "a.png", Mode: 0o4755, SHA256: sumA}},
		"the staging area":                {entry(".mastokeeper-restore/"+sumA, sumA)},
	} {
		mm := *m
		mm.MediaFiles = len(index)
		if _, err := checkIndex(log, &mm, index); !errors.Is(err, snapshot.ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", name, err)
		}
	}
	// An index with fewer files than its authenticated manifest counts.
	if _, err := checkIndex(log, &snapshot.Manifest{MediaBlobs: []string{sumA}, MediaFiles: 2, Authenticated: true}, []snapshot.MediaEntry{entry("a.png", sumA)}); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Errorf("a short index: %v; want ErrCorrupt", err)
	}
}

func TestPlacingMediaRemovesPlantedSymlinksAndNeverWritesOutside(t *testing.T) {
	media, outside := t.TempDir(), t.TempDir()
	victim := filepath.Join(outside, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o600)
	// Planted by a process that can write to the volume: a directory of
	// the backup's path is a symlink out, and a file of it is a symlink to
	// a file out.
	os.Symlink(outside, filepath.Join(media, "accounts"))
	os.MkdirAll(filepath.Join(media, "media_attachments"), 0o755)
	os.Symlink(victim, filepath.Join(media, "media_attachments", "b.png"))
	os.MkdirAll(filepath.Join(media, mediaStaging), 0o700)
	os.WriteFile(filepath.Join(media, mediaStaging, sumA), []byte("A"), 0o600)
	os.WriteFile(filepath.Join(media, mediaStaging, sumB), []byte("B"), 0o600)

	r := &Restore{MediaDir: media, Dir: instance.Dir{Path: t.TempDir()}}
	st := &staged{media: []snapshot.MediaEntry{entry("accounts/a.png", sumA), entry("media_attachments/b.png", sumB), entry("media_attachments/c.png", sumB)}}
	if err := r.placeMedia(st); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the file outside the volume was changed: %q", b)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Errorf("something was written outside the volume: %v", ents)
	}
	for p, want := range map[string]string{"accounts/a.png": "A", "media_attachments/b.png": "B", "media_attachments/c.png": "B"} {
		fi, err := os.Lstat(filepath.Join(media, p))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: %v, %v; want a regular file of mode 0644", p, fi, err)
			continue
		}
		if b, _ := os.ReadFile(filepath.Join(media, p)); string(b) != want {
			t.Errorf("%s holds %q, want %q", p, b, want)
		}
	}
}
