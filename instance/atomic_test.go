package instance

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// onlyEntries lists the names in dir, failing the test on error.
func onlyEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFileAtomic_WritesContentWithTheGivenMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "secret.json")
	if err := WriteFileAtomic(path, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "hello\n" {
		t.Fatalf("content = %q, %v; want %q", b, err, "hello\n")
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v; want 0600", fi.Mode().Perm())
	}
}

func TestWriteFileAtomic_ModeIsExactRegardlessOfUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "marker")
	if err := WriteFileAtomic(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v; want 0644", fi.Mode().Perm())
	}
}

func TestWriteFileAtomic_LeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if names := onlyEntries(t, dir); len(names) != 1 || names[0] != "f" {
		t.Errorf("directory holds %v; want only [f]", names)
	}
}

func TestWriteFileAtomic_ReplacesByRenameNotInPlace(t *testing.T) {
	// A reader that opened the old file keeps seeing the old content in
	// full: the new content arrives as a new file, never over the old.
	path := filepath.Join(t.TempDir(), "f")
	if err := WriteFileAtomic(path, []byte("old content"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := WriteFileAtomic(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	old, _ := io.ReadAll(f)
	if string(old) != "old content" {
		t.Errorf("reader of the old file saw %q; want %q", old, "old content")
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("path holds %q; want %q", b, "new")
	}
}

func TestWriteFileAtomic_FailsInAMissingDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing", "f")
	err := WriteFileAtomic(path, []byte("x"), 0o600)
	if err == nil {
		t.Fatal("want an error")
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the path", err)
	}
	if names := onlyEntries(t, dir); len(names) != 0 {
		t.Errorf("directory holds %v after a failed write; want nothing", names)
	}
}

func TestWriteFileAtomic_FailedRenameLeavesTheOriginalAndNoTemporaryFile(t *testing.T) {
	// The target is a non-empty directory, so the final rename fails after
	// the temporary file has been written.
	dir := t.TempDir()
	path := filepath.Join(dir, "target")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path, "inside"), []byte("original"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("new"), 0o600); err == nil {
		t.Fatal("want an error")
	}
	if b, _ := os.ReadFile(filepath.Join(path, "inside")); string(b) != "original" {
		t.Errorf("original content is now %q", b)
	}
	if names := onlyEntries(t, dir); len(names) != 1 || names[0] != "target" {
		t.Errorf("directory holds %v; want only [target]", names)
	}
}

func TestWriteFileAtomic_FailedWriteLeavesTheOriginalFileUntouched(t *testing.T) {
	// A file size limit makes the write itself fail (the Go runtime ignores
	// SIGXFSZ, so write returns EFBIG). The limit is process-wide: this
	// test must not run in parallel with others that write files.
	dir := t.TempDir()
	path := filepath.Join(dir, "instance.json")
	if err := os.WriteFile(path, []byte("original"), 0o600); err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	lim := old
	lim.Cur = 1024
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	err := WriteFileAtomic(path, make([]byte, 64<<10), 0o600)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatalf("restoring the file size limit: %v", err)
	}
	if err == nil {
		t.Fatal("want an error from a write beyond the file size limit")
	}
	if !errors.Is(err, syscall.EFBIG) {
		t.Logf("error: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "original" {
		t.Errorf("original file now holds %d bytes; want it untouched", len(b))
	}
	if names := onlyEntries(t, dir); len(names) != 1 || names[0] != "instance.json" {
		t.Errorf("directory holds %v; want only [instance.json]", names)
	}
}

func TestWriteFileAtomic_ErrorWrapsTheCause(t *testing.T) {
	err := WriteFileAtomic(filepath.Join(t.TempDir(), "no", "f"), nil, 0o600)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v does not wrap fs.ErrNotExist", err)
	}
}

func TestWriteFileOnce_NeverReplacesAnExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "record")
	if err := WriteFileOnce(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := WriteFileOnce(path, []byte("second"), 0o600)
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteFileOnce = %v; want an fs.ErrExist error", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "first" {
		t.Errorf("content %q; want the first write's", b)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("%d files left; want only the record", len(ents))
	}
}

func TestWritesInTheStateDirectoryNeverFollowASymlinkOut(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	outside := t.TempDir()
	// Planted by a service sharing the volume: the markers directory and
	// the record lead outside it.
	os.Symlink(outside, filepath.Join(d.Path, "markers"))
	os.Symlink(filepath.Join(outside, "victim"), filepath.Join(d.Path, "instance.json"))
	if err := d.Mark(MarkerSeeded); err == nil {
		t.Error("a marker was written through a symlink leading out")
	}
	if err := d.WriteAtomic("instance.json", []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if names := onlyEntries(t, outside); len(names) != 0 {
		t.Errorf("written outside the state directory: %v", names)
	}
	if fi, err := os.Lstat(filepath.Join(d.Path, "instance.json")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("instance.json is %v, %v; want a regular file replacing the link", fi, err)
	}
}
