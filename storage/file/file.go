// Package file is the file:// backup target: a directory (a named volume,
// a mounted disk). Keys with '/' are subdirectories.
//
//	BACKUP_TARGET=file:///var/lib/mastokeeper/backups
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// tmpPrefix starts the name of an object being written; List skips such
// files and keys may not have a segment starting with it.
const tmpPrefix = ".mastokeeper-tmp-"

// staleTemp is the age at which List removes a temporary file.
const staleTemp = 24 * time.Hour

const (
	fileMode = 0o600
	dirMode  = 0o700
)

func init() {
	storage.Register(storage.Backend{
		Scheme:  "file",
		Example: "file:///var/lib/mastokeeper/backups",
		Check: func(t storage.Target, _ func(string) string) []problem.Problem {
			return check(t.Path)
		},
		Open: func(_ context.Context, t storage.Target, _ func(string) string) (storage.Store, error) {
			return New(t.Path)
		},
	})
}

func check(dir string) []problem.Problem {
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return []problem.Problem{{
			Var:     storage.TargetVar,
			What:    fmt.Sprintf("file://%s is not a directory", dir),
			Example: "file:///var/lib/mastokeeper/backups",
		}}
	}
	return nil
}

// Store is a directory of objects.
type Store struct {
	dir string
}

var _ storage.Store = (*Store)(nil)

// New returns the store in dir (absolute), creating it (mode 0700) if
// needed.
func New(dir string) (*Store, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("file: %q is not an absolute path", dir)
	}
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("file: %s is not a directory", dir)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) String() string { return "file://" + s.dir }

func checkKey(key string) error {
	if err := storage.CheckKey(key); err != nil {
		return err
	}
	for _, seg := range strings.Split(key, "/") {
		if strings.HasPrefix(seg, tmpPrefix) {
			return fmt.Errorf("%w: key %q has a segment starting with %q (reserved)", storage.ErrInvalidKey, key, tmpPrefix)
		}
	}
	return nil
}

func (s *Store) path(key string) string {
	return filepath.Join(s.dir, filepath.FromSlash(key))
}

// Put writes r to a temporary file beside the target, syncs it, renames it
// over the target and syncs the directory: the object appears complete or
// not at all.
func (s *Store) Put(ctx context.Context, key string, r io.Reader) (err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("file: put %s: %w", key, err)
		}
	}()
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	target := s.path(key)
	var f *os.File
	// A concurrent Delete may remove a directory we just created: try again.
	for attempt := 0; ; attempt++ {
		if err := s.mkdirs(filepath.Dir(target)); err != nil {
			return err
		}
		f, err = os.CreateTemp(filepath.Dir(target), tmpPrefix+"*")
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 3 {
			return err
		}
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := f.Chmod(fileMode); err != nil {
		return err
	}
	if _, err := io.Copy(&writeback{f: f}, &ctxReader{ctx: ctx, r: r}); err != nil {
		var re *readError
		if errors.As(err, &re) {
			return storage.Permanent(fmt.Errorf("reading the data: %w", re.err))
		}
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if fi, err := os.Lstat(target); err == nil && fi.IsDir() {
		return storage.Permanent(fmt.Errorf("%s is a directory", target))
	}
	if err := os.Rename(tmp, target); err != nil {
		return err
	}
	return syncDir(filepath.Dir(target))
}

// mkdirs creates dir and its missing parents below s.dir (mode 0700),
// syncing the parent of each directory it creates.
func (s *Store) mkdirs(dir string) error {
	if dir == s.dir {
		return nil
	}
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return storage.Permanent(fmt.Errorf("%s is not a directory", dir))
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Get opens key; a missing key (or a directory) gives storage.ErrNotFound.
func (s *Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("file: get %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("file: get %s: %w", key, err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, fmt.Errorf("file: get %s: %w", key, storage.ErrNotFound)
		}
		return nil, fmt.Errorf("file: get %s: %w", key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("file: get %s: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("file: get %s: %w", key, storage.ErrNotFound)
	}
	return f, nil
}

// List walks the directory recursively for the regular files whose key
// starts with prefix.
func (s *Store) List(ctx context.Context, prefix string) ([]storage.Object, error) {
	if err := storage.CheckPrefix(prefix); err != nil {
		return nil, fmt.Errorf("file: list %s: %w", prefix, err)
	}
	// Walk only the deepest directory the prefix names.
	root := s.dir
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		root = s.path(prefix[:i])
	}
	var objs []storage.Object
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) {
				return fs.SkipAll
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			if p == root {
				return nil
			}
			// Skip directories that cannot hold a key with this prefix.
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(d.Name(), tmpPrefix) {
			// A write killed midway (kill -9, power cut) leaves its temporary
			// file: no live write takes a day, so one that old is removed.
			if fi, err := d.Info(); err == nil && time.Since(fi.ModTime()) > staleTemp {
				os.Remove(p)
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		objs = append(objs, storage.Object{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("file: list %s: %w", prefix, err)
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	return objs, nil
}

// Delete removes key, then the directories it leaves empty; a missing key
// is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("file: delete %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("file: delete %s: %w", key, err)
	}
	p := s.path(key)
	if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
		return nil // not an object
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("file: delete %s: %w", key, err)
	}
	dir := filepath.Dir(p)
	_ = syncDir(dir)
	for dir != s.dir && strings.HasPrefix(dir, s.dir+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			break // not empty (or gone)
		}
		dir = filepath.Dir(dir)
	}
	return nil
}

// ctxReader stops reading once ctx is done and marks the source's own
// errors, so they are told apart from the destination's.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = &readError{err: err}
	}
	return n, err
}
