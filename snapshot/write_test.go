package snapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func newMediaBackup(t testing.TB) (*Backup, string) {
	s, k := newTarget(t)
	media := t.TempDir()
	return &Backup{Store: s, Key: k, Dir: instance.Dir{Path: t.TempDir()}, MediaDir: media, Log: slog.New(slog.DiscardHandler)}, media
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestABackupReadsOnlyTheUploadsThemselves(t *testing.T) {
	b, media := newMediaBackup(t)
	outside := filepath.Join(t.TempDir(), "secret")
	write(t, outside, []byte("not media"))
	write(t, filepath.Join(media, "accounts/a.png"), []byte("A"))
	write(t, filepath.Join(media, "cache/remote.png"), []byte("remote"))
	write(t, filepath.Join(media, ".mastokeeper-restore", sum([]byte("S"))), []byte("S")) // a killed restore's staging
	os.Symlink(outside, filepath.Join(media, "accounts/link.png"))
	os.Symlink(filepath.Dir(outside), filepath.Join(media, "linkdir"))

	res := &Result{Manifest: &Manifest{ID: NewID(base)}}
	if err := b.backupMedia(context.Background(), b.Log, res); err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	if m.MediaFiles != 1 || !slices.Equal(m.MediaBlobs, []string{sum([]byte("A"))}) {
		t.Errorf("backed up %d files, blobs %v; want only accounts/a.png", m.MediaFiles, m.MediaBlobs)
	}
}

func TestABlobIsNeverStoredUnderAnotherContentsName(t *testing.T) {
	b, media := newMediaBackup(t)
	p := "accounts/a.png"
	write(t, filepath.Join(media, p), []byte("grown since it was hashed"))
	root, _ := os.OpenRoot(media)
	defer root.Close()
	stale := MediaEntry{Path: p, Size: 5, SHA256: sum([]byte("first"))}
	if err := b.uploadFile(context.Background(), root, p, stale); !errors.Is(err, errChanged) {
		t.Fatalf("upload of a changed file: %v; want errChanged", err)
	}
	if objs, _ := b.Store.List(context.Background(), MediaPrefix); len(objs) != 0 {
		t.Errorf("the target kept %v", objs)
	}
}

func TestAStoredBlobOfTheWrongSizeIsUploadedAgain(t *testing.T) {
	b, media := newMediaBackup(t)
	content := bytes.Repeat([]byte("x"), 100_000)
	write(t, filepath.Join(media, "a.png"), content)
	ctx := context.Background()
	put(t, b.Store, BlobKey(sum(content)), "cut short")
	res := &Result{Manifest: &Manifest{ID: NewID(base)}}
	if err := b.backupMedia(ctx, b.Log, res); err != nil {
		t.Fatal(err)
	}
	if len(res.Uploaded) != 1 {
		t.Fatalf("uploaded %v; want the damaged blob again", res.Uploaded)
	}
	var out bytes.Buffer
	if err := (&Reader{Store: b.Store, Key: b.Key}).ReadBlob(ctx, sum(content), &out); err != nil || !bytes.Equal(out.Bytes(), content) {
		t.Errorf("read back: %v", err)
	}
	// Unchanged and whole: not uploaded a second time.
	res = &Result{Manifest: &Manifest{ID: NewID(base.Add(1))}}
	b.backupMedia(ctx, b.Log, res)
	if len(res.Uploaded) != 0 {
		t.Errorf("uploaded %v again", res.Uploaded)
	}
}

func TestScheduledVerificationReplacesADamagedBlobFromTheDevice(t *testing.T) {
	b, media := newMediaBackup(t)
	ctx := context.Background()
	content := []byte("an avatar")
	write(t, filepath.Join(media, "accounts/a.png"), content)
	res := &Result{Manifest: testManifest(base, "social.example.org")}
	if err := b.backupMedia(ctx, b.Log, res); err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	// The manifest's own objects are fake here: the check of the dump is
	// not what this test is about, so it reads media directly.
	put(t, b.Store, BlobKey(sum(content)), "bit rot")
	rd := &Reader{Store: b.Store, Key: b.Key}
	if err := rd.ReadBlob(ctx, sum(content), &bytes.Buffer{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged blob reads: %v", err)
	}
	if err := b.reupload(ctx, m.MediaBlobs[0], sum(content)); err == nil {
		t.Error("reupload took a blob name for a path")
	}
	p := b.localSums()[sum(content)]
	if err := b.reupload(ctx, p, sum(content)); err != nil {
		t.Fatal(err)
	}
	if err := rd.ReadBlob(ctx, sum(content), &bytes.Buffer{}); err != nil {
		t.Errorf("after the repair: %v", err)
	}
}
