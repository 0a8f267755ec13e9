// Package restore reads backups back: it lists and verifies snapshots on a
// storage target and restores one onto a fresh device.
package restore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// List returns the manifests of every complete snapshot, oldest first.
// Snapshots without a manifest (interrupted uploads) are not listed.
func List(ctx context.Context, s storage.Store) ([]*snapshot.Manifest, error) {
	objs, err := s.List(ctx, snapshot.SnapshotsPrefix)
	if err != nil {
		return nil, err
	}
	var out []*snapshot.Manifest
	for _, o := range objs {
		id, ok := snapshot.ParseManifestKey(o.Key)
		if !ok {
			continue
		}
		m, err := ReadManifest(ctx, s, id)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// ReadManifest reads one snapshot's manifest.
func ReadManifest(ctx context.Context, s storage.Store, id string) (*snapshot.Manifest, error) {
	if err := snapshot.CheckID(id); err != nil {
		return nil, err
	}
	rc, err := s.Get(ctx, snapshot.ManifestKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("backup %s: no such complete backup at %s (see 'mastokeeper backup list'): %w", id, s, err)
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var m snapshot.Manifest
	if err := json.NewDecoder(io.LimitReader(rc, 64<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("backup %s: manifest unreadable: %w", id, err)
	}
	if m.Format != snapshot.Format || m.ID != id {
		return nil, fmt.Errorf("backup %s: manifest of format %d for %q; this mastokeeper reads format %d", id, m.Format, m.ID, snapshot.Format)
	}
	return &m, nil
}

// OpenKey fetches and opens the target's backup key.
func OpenKey(ctx context.Context, s storage.Store, sealer snapshot.Sealer) (*snapshot.Key, error) {
	rc, err := s.Get(ctx, snapshot.BackupKey)
	if err != nil {
		return nil, fmt.Errorf("read the backup key at %s: %w", s, err)
	}
	defer rc.Close()
	sealed, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the backup key at %s: %w", s, err)
	}
	k, err := sealer.Open(sealed)
	debug.FreeOSMemory() // scrypt's 256 MiB are garbage now
	return k, err
}

// ErrCorrupt means a stored object does not match its manifest.
var ErrCorrupt = errors.New("backup is damaged")

// Object opens one of a snapshot's objects, decrypted. Its stored bytes are
// checked against the manifest's size and checksum as they are read: the
// reader returns an ErrCorrupt error at the end if they differ, and
// decryption fails as soon as a chunk was changed.
func Object(ctx context.Context, s storage.Store, k *snapshot.Key, m *snapshot.Manifest, name string) (io.ReadCloser, error) {
	want, ok := m.Object(name)
	if !ok {
		return nil, fmt.Errorf("%w: backup %s has no %s", ErrCorrupt, m.ID, name)
	}
	rc, err := s.Get(ctx, snapshot.ObjectKey(m.ID, name))
	if err != nil {
		return nil, fmt.Errorf("backup %s: %s: %w", m.ID, name, err)
	}
	cr := &checkedReader{r: rc, h: sha256.New(), want: want, what: m.ID + "/" + name}
	pr, err := k.Decrypt(cr)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, cr.what, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{&untilChecked{pr, cr}, rc}, nil
}

// checkedReader hashes the stored bytes as they pass.
type checkedReader struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n    int64
	want snapshot.Object
	what string
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err == io.EOF {
		if c.n != c.want.Size || hex.EncodeToString(c.h.Sum(nil)) != c.want.SHA256 {
			return n, fmt.Errorf("%w: %s: %d bytes with sha256 %s, the manifest says %d bytes with sha256 %s",
				ErrCorrupt, c.what, c.n, hex.EncodeToString(c.h.Sum(nil)), c.want.Size, c.want.SHA256)
		}
	}
	return n, err
}

// untilChecked reads the plaintext, then drains the stored stream so its
// checksum is always checked before EOF is reported.
type untilChecked struct {
	r  io.Reader
	cr *checkedReader
}

func (u *untilChecked) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if err == io.EOF {
		if _, derr := io.Copy(io.Discard, u.cr); derr != nil {
			return n, derr
		}
	}
	if err != nil && err != io.EOF && !errors.Is(err, ErrCorrupt) {
		err = fmt.Errorf("%w: %s: %v", ErrCorrupt, u.cr.what, err)
	}
	return n, err
}

// Verify downloads every part of snapshot id, checks every checksum,
// decrypts everything and has pg_restore list the dump. It changes nothing.
// Without media, the shared media blobs are left out (a quick check of a
// new snapshot whose blobs were hashed as they were uploaded).
func Verify(ctx context.Context, s storage.Store, k *snapshot.Key, id string, media bool) (*snapshot.Manifest, error) {
	m, err := ReadManifest(ctx, s, id)
	if err != nil {
		return nil, err
	}
	for _, o := range m.Objects {
		rc, err := Object(ctx, s, k, m, o.Name)
		if err != nil {
			return m, err
		}
		var r io.Reader = rc
		if o.Name == snapshot.DBDump {
			err = listDump(ctx, rc, 1)
		} else {
			_, err = io.Copy(io.Discard, r)
		}
		rc.Close()
		if err != nil {
			return m, fmt.Errorf("verify %s/%s: %w", m.ID, o.Name, err)
		}
	}
	for _, sum := range m.MediaBlobs {
		if !media {
			break
		}
		if err := readBlob(ctx, s, k, sum, io.Discard); err != nil {
			return m, err
		}
	}
	return m, nil
}

// listDump decompresses the dump into `pg_restore --list`, which reads
// the archive's table of contents and fails on a damaged archive.
func listDump(ctx context.Context, r io.Reader, decoders int) error {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(decoders), zstd.WithDecoderLowmem(decoders == 1))
	if err != nil {
		return err
	}
	defer zr.Close()
	cmd := exec.CommandContext(ctx, "pg_restore", "--list")
	var stderr bytes.Buffer
	// A plain Reader: os/exec ignores the broken pipe when pg_restore stops
	// reading after the table of contents only if it sees the bare write
	// error, which zstd's WriteTo would wrap.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = struct{ io.Reader }{zr}, io.Discard, &stderr
	runErr := cmd.Run()
	// pg_restore stops reading after the table of contents: read the rest
	// so that every byte is decrypted and checked.
	_, drainErr := io.Copy(io.Discard, zr)
	if drainErr != nil {
		return drainErr
	}
	if runErr != nil {
		return fmt.Errorf("pg_restore --list: %w: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// readBlob copies media blob sum, decrypted, to w and checks that its
// content has that sum: a blob is named by the SHA-256 of its plaintext.
func readBlob(ctx context.Context, s storage.Store, k *snapshot.Key, sum string, w io.Writer) error {
	rc, err := s.Get(ctx, snapshot.BlobKey(sum))
	if err != nil {
		return fmt.Errorf("media blob %s: %w", sum, err)
	}
	defer rc.Close()
	pr, err := k.Decrypt(rc)
	if err != nil {
		return fmt.Errorf("%w: media blob %s: %v", ErrCorrupt, sum, err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, h), pr); err != nil {
		return fmt.Errorf("%w: media blob %s: %v", ErrCorrupt, sum, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("%w: media blob %s has content with sha256 %s", ErrCorrupt, sum, got)
	}
	return nil
}
