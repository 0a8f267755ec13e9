// Package instance holds what makes this Mastodon instance itself: its
// domain, its secrets and the provisioning markers, all kept in the keeper's
// named volume, which the other services of the stack mount too.
package instance

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
)

// Every write in the state directory goes through an os.Root opened on the
// directory: the volume is shared with web and sidekiq, and a symlink
// planted there must never lead a write of the keeper, which runs as root,
// outside it.

// WriteAtomic replaces rel ('/'-separated, inside the state directory)
// with data so that a reader - or a crash at any instant - sees either the
// old content or the new, never a mix: write a temporary file beside it,
// fsync, rename over, fsync the directory. Missing parent directories are
// created.
func (d Dir) WriteAtomic(rel string, data []byte, perm os.FileMode) error {
	return d.write(rel, data, perm, false)
}

// WriteOnce creates rel with data, all or nothing like WriteAtomic, but
// fails with an fs.ErrExist error instead of replacing an existing file -
// even one another process creates meanwhile: a hard link, unlike a
// rename, never overwrites.
func (d Dir) WriteOnce(rel string, data []byte, perm os.FileMode) error {
	return d.write(rel, data, perm, true)
}

// Remove removes rel, inside the state directory, and syncs its directory;
// a missing file is not an error.
func (d Dir) Remove(rel string) error {
	root, err := d.openRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.Remove(rel); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("remove %s: %w", filepath.Join(d.Path, rel), err)
	}
	return syncDir(root, path.Dir(rel), d.Path)
}

func (d Dir) openRoot() (*os.Root, error) {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", d.Path, err)
	}
	root, err := os.OpenRoot(d.Path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d.Path, err)
	}
	return root, nil
}

func (d Dir) write(rel string, data []byte, perm os.FileMode, once bool) error {
	root, err := d.openRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	if dir := path.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("write %s: %w", filepath.Join(d.Path, rel), err)
		}
	}
	return writeIn(root, d.Path, rel, data, perm, once)
}

// WriteFileAtomic is WriteAtomic for a file named by its path, confined
// to its directory.
func WriteFileAtomic(p string, data []byte, perm os.FileMode) error {
	return writeFile(p, data, perm, false)
}

// WriteFileOnce is WriteOnce for a file named by its path, confined to its
// directory.
func WriteFileOnce(p string, data []byte, perm os.FileMode) error {
	return writeFile(p, data, perm, true)
}

func writeFile(p string, data []byte, perm os.FileMode, once bool) error {
	root, err := os.OpenRoot(filepath.Dir(p))
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	defer root.Close()
	return writeIn(root, filepath.Dir(p), filepath.Base(p), data, perm, once)
}

// writeIn writes rel under root via a synced temporary file beside it,
// then renames (or, once, links) it into place and syncs the directory.
func writeIn(root *os.Root, base, rel string, data []byte, perm os.FileMode, once bool) (err error) {
	full := filepath.Join(base, rel)
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := path.Join(path.Dir(rel), "."+path.Base(rel)+".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	defer func() {
		if err != nil {
			root.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", full, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", full, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: sync: %w", full, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	if once {
		err = root.Link(tmp, rel)
		root.Remove(tmp)
		if err != nil {
			return fmt.Errorf("create %s: %w", full, err)
		}
	} else if err := root.Rename(tmp, rel); err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	return syncDir(root, path.Dir(rel), base)
}

func syncDir(root *os.Root, rel, base string) error {
	d, err := root.Open(rel)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", filepath.Join(base, rel), err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", filepath.Join(base, rel), err)
	}
	return nil
}
