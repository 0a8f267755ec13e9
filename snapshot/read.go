package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mastodon-on-balena/mastodon-balena/pgarchive"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// ErrCorrupt means a stored object does not match its manifest.
var ErrCorrupt = errors.New("backup is damaged")

// ErrNoBackup means the target holds no complete backup (or not the one asked for).
var ErrNoBackup = errors.New("no backup found")

// Reader reads the snapshots on a target with the instance's backup key.
type Reader struct {
	Store storage.Store
	Key   *Key
	// TrustOldFormat reads format 1 manifests, which carry no
	// authentication, as snapshots. Only a person who knows that no one
	// else could write to the target may ask for it: otherwise anyone who
	// can write there could simply write an old-format manifest.
	TrustOldFormat bool
}

// Unreadable is a manifest that could not be used, and why.
type Unreadable struct {
	ID  string
	Err error
}

// Listing is what a target holds.
type Listing struct {
	// Snapshots are the complete, authenticated snapshots (and format 1
	// ones when TrustOldFormat), oldest first.
	Snapshots []*Manifest
	// Old are format 1 manifests that were not trusted: their names are
	// checked, nothing else can be.
	Old []*Manifest
	// Unreadable are manifests that are damaged, forged, of another
	// instance or of a newer format. Never deleted automatically.
	Unreadable []Unreadable
	// verified are the IDs with a verification record (not yet checked).
	verified map[string]bool
}

// List reads every manifest on the target. A manifest it cannot use is
// reported in Unreadable, never fatal: one damaged object must not stop
// listing, restoring or pruning the others. Only a failing target is an error.
func (r *Reader) List(ctx context.Context) (*Listing, error) {
	objs, err := r.Store.List(ctx, SnapshotsPrefix)
	if err != nil {
		return nil, err
	}
	l := &Listing{verified: map[string]bool{}}
	for _, o := range objs {
		if id, ok := SnapshotOf(o.Key); ok && o.Key == VerifiedKey(id) {
			l.verified[id] = true
		}
	}
	for _, o := range objs {
		id, ok := ParseManifestKey(o.Key)
		if !ok {
			continue
		}
		m, err := r.ReadManifest(ctx, id)
		switch {
		case err == nil:
			l.Snapshots = append(l.Snapshots, m)
		case errors.Is(err, errOldFormat) && m != nil:
			l.Old = append(l.Old, m)
		case errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnauthentic) || errors.Is(err, errOldFormat):
			l.Unreadable = append(l.Unreadable, Unreadable{ID: id, Err: err})
		case errors.Is(err, storage.ErrNotFound):
			// deleted since it was listed
		default:
			return nil, err
		}
	}
	sortByTime(l.Snapshots)
	sortByTime(l.Old)
	return l, nil
}

func sortByTime(ms []*Manifest) {
	sort.SliceStable(ms, func(i, j int) bool {
		if !ms[i].CreatedAt.Equal(ms[j].CreatedAt) {
			return ms[i].CreatedAt.Before(ms[j].CreatedAt)
		}
		return ms[i].ID < ms[j].ID
	})
}

// ReadManifest reads and authenticates one snapshot's manifest. A format 1
// manifest is returned with an errOldFormat error unless TrustOldFormat,
// its names checked all the same.
func (r *Reader) ReadManifest(ctx context.Context, id string) (*Manifest, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	key := ManifestKey(id)
	rc, err := r.Store.Get(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: there is no complete backup %s at %s (see 'mastokeeper backup list'): %w", ErrNoBackup, id, r.Store, err)
	}
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var m Manifest
	raw, err := r.Key.open("manifest", key, rc, 64<<20, &m)
	switch {
	case errors.Is(err, errOldFormat):
		m = Manifest{}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%w: backup %s: its manifest is unreadable: %v", ErrCorrupt, id, err)
		}
		if err := m.check(id); err != nil {
			return nil, fmt.Errorf("%w: backup %s: its manifest is not valid: %v", ErrCorrupt, id, err)
		}
		if r.TrustOldFormat {
			return &m, nil
		}
		return &m, fmt.Errorf("backup %s is in %w: it cannot be told apart from one forged by whoever can write to %s. Restore it only if no one else can write there, with 'mastokeeper restore --trust-old-format --backup %s'", id, errOldFormat, r.Store, id)
	case errors.Is(err, ErrUnauthentic):
		return nil, fmt.Errorf("backup %s: its manifest is %w: it was written by another instance (another backup key) or changed by someone else", id, err)
	case err != nil:
		return nil, fmt.Errorf("%w: backup %s: its manifest is unreadable: %v", ErrCorrupt, id, err)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("%w: backup %s: its authenticated manifest says format %d", ErrCorrupt, id, m.Format)
	}
	if err := m.check(id); err != nil {
		return nil, fmt.Errorf("%w: backup %s: its manifest is not valid: %v", ErrCorrupt, id, err)
	}
	m.Authenticated = true
	return &m, nil
}

// Verification is the record of a full read-back check of a snapshot.
type Verification struct {
	ID         string    `json:"id"`
	VerifiedAt time.Time `json:"verified_at"`
	// Media is true when every media blob was read back too.
	Media bool `json:"media"`
}

// Verified reads snapshot id's verification record; false when it has
// none or one that does not authenticate.
func (r *Reader) Verified(ctx context.Context, l *Listing, id string) bool {
	if l != nil && !l.verified[id] {
		return false
	}
	key := VerifiedKey(id)
	rc, err := r.Store.Get(ctx, key)
	if err != nil {
		return false
	}
	defer rc.Close()
	var v Verification
	if _, err := r.Key.open("verified", key, rc, 1<<16, &v); err != nil || v.ID != id {
		return false
	}
	return true
}

// Newest returns the newest snapshot to restore by default: the newest
// verified one, and why when that is not the newest of all.
func (r *Reader) Newest(ctx context.Context, l *Listing) (m *Manifest, why string, err error) {
	if len(l.Snapshots) == 0 {
		return nil, "", fmt.Errorf("%w at %s", ErrNoBackup, r.Store)
	}
	newest := l.Snapshots[len(l.Snapshots)-1]
	for i := len(l.Snapshots) - 1; i >= 0; i-- {
		m := l.Snapshots[i]
		if r.Verified(ctx, l, m.ID) {
			if m != newest {
				return m, fmt.Sprintf("the newest verified backup; %d newer one(s), the newest %s, were never verified (pick one with --backup)", len(l.Snapshots)-1-i, newest.ID), nil
			}
			return m, "the newest backup, verified", nil
		}
	}
	return newest, "the newest backup; none was ever verified", nil
}

// OpenKey fetches and opens the target's backup key.
func OpenKey(ctx context.Context, s storage.Store, sealer Sealer) (*Key, error) {
	rc, err := s.Get(ctx, BackupKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w at %s: it holds no backup key, so no backup of this project was ever completed there (check the URL and its prefix)", ErrNoBackup, s)
	}
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

// Object opens one of a snapshot's objects, decrypted. Its stored bytes are
// checked against the manifest's size and checksum as they are read: the
// reader returns an ErrCorrupt error at the end if they differ, and
// decryption fails as soon as a chunk was changed.
func (r *Reader) Object(ctx context.Context, m *Manifest, name string) (io.ReadCloser, error) {
	want, ok := m.Object(name)
	if !ok {
		return nil, fmt.Errorf("%w: backup %s has no %s", ErrCorrupt, m.ID, name)
	}
	rc, err := r.Store.Get(ctx, ObjectKey(m.ID, name))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: backup %s: its %s is missing", ErrCorrupt, m.ID, name)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %s: %w", m.ID, name, err)
	}
	cr := &checkedReader{r: rc, h: sha256.New(), want: want, what: m.ID + "/" + name}
	pr, err := r.Key.Decrypt(cr)
	if err != nil {
		rc.Close()
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
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
	want Object
	what string
	// srcErr is the target's own read error: an outage, not damage.
	srcErr error
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.srcErr = err
		return n, err
	}
	c.h.Write(p[:n])
	c.n += int64(n)
	if c.n > c.want.Size {
		return n, fmt.Errorf("%w: %s is longer than the %d bytes its manifest says", ErrCorrupt, c.what, c.want.Size)
	}
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
	switch {
	case err == nil || err == io.EOF || errors.Is(err, ErrCorrupt):
	case u.cr.srcErr != nil:
		// The target failed while sending: an outage, not damage.
		err = fmt.Errorf("backup %s: reading from the target: %w", u.cr.what, u.cr.srcErr)
	default:
		err = fmt.Errorf("%w: %s: %v", ErrCorrupt, u.cr.what, err)
	}
	return n, err
}

// srcReader remembers the target's own read error.
type srcReader struct {
	r   io.Reader
	err error
}

func (s *srcReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// MediaSelection says which media blobs Verify reads back.
type MediaSelection struct {
	All   bool
	Blobs []string // when not All
}

// Verify downloads every object of snapshot id, checks every checksum,
// decrypts everything, has pg_restore list the dump and reads back the
// selected media blobs. It changes nothing.
func (r *Reader) Verify(ctx context.Context, id string, media MediaSelection) (*Manifest, error) {
	m, err := r.ReadManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, o := range m.Objects {
		rc, err := r.Object(ctx, m, o.Name)
		if err != nil {
			return m, err
		}
		if o.Name == DBDump {
			err = ListDump(ctx, rc, 1)
		} else {
			_, err = io.Copy(io.Discard, rc)
		}
		rc.Close()
		if err != nil {
			return m, fmt.Errorf("verify %s/%s: %w", m.ID, o.Name, err)
		}
	}
	blobs := media.Blobs
	if media.All {
		blobs = m.MediaBlobs
	}
	for _, sum := range blobs {
		if err := r.ReadBlob(ctx, sum, io.Discard); err != nil {
			return m, err
		}
	}
	return m, nil
}

// MarkVerified records on the target that snapshot m read back whole.
func MarkVerified(ctx context.Context, s storage.Store, k *Key, m *Manifest, media bool, at time.Time) error {
	key := VerifiedKey(m.ID)
	return s.Put(ctx, key, bytes.NewReader(k.seal("verified", key, Verification{ID: m.ID, VerifiedAt: at.UTC(), Media: media})))
}

// ErrPgRestoreTooOld means the dump was made by a newer pg_dump than the
// device's pg_restore reads: the backup is fine, the device is older.
var ErrPgRestoreTooOld = errors.New("this device's pg_restore is older than the pg_dump that made the backup")

// OpenDump reads a decrypted database dump of either layout as the
// archive pg_dump wrote: frames are decompressed (with decoders
// goroutines), an archive is passed on as it is. Close releases the
// decoder.
func OpenDump(r io.Reader, decoders int) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(pgarchive.Magic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if string(head) == pgarchive.Magic {
		return io.NopCloser(br), nil
	}
	zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(decoders), zstd.WithDecoderLowmem(decoders == 1))
	if err != nil {
		return nil, err
	}
	return zr.IOReadCloser(), nil
}

// ListDump has `pg_restore --list` read the dump's table of contents, then
// reads the rest so that every byte is decrypted and checked.
func ListDump(ctx context.Context, r io.Reader, decoders int) error {
	dump, err := OpenDump(r, decoders)
	if err != nil {
		return err
	}
	defer dump.Close()
	cmd := exec.CommandContext(ctx, "pg_restore", "--list")
	var stderr bytes.Buffer
	// A plain Reader: os/exec ignores the broken pipe when pg_restore stops
	// reading after the table of contents only if it sees the bare write
	// error, which zstd's WriteTo would wrap.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = struct{ io.Reader }{dump}, io.Discard, &stderr
	runErr := cmd.Run()
	// pg_restore stops reading after the table of contents: read the rest
	// so that every byte is decrypted and checked.
	_, drainErr := io.Copy(io.Discard, dump)
	if drainErr != nil {
		return drainErr
	}
	return listed(runErr, &stderr)
}

// ListDumpFile has `pg_restore --list` read a pg_dump archive staged in a
// file (not the keeper's zstd frames).
func ListDumpFile(ctx context.Context, f *os.File) error {
	cmd := exec.CommandContext(ctx, "pg_restore", "--list", "/dev/fd/3")
	var stderr bytes.Buffer
	cmd.ExtraFiles, cmd.Stdout, cmd.Stderr = []*os.File{f}, io.Discard, &stderr
	return listed(cmd.Run(), &stderr)
}

// listed is pg_restore --list's verdict.
func listed(runErr error, stderr *bytes.Buffer) error {
	if runErr != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "unsupported version") {
			return fmt.Errorf("%w: %s", ErrPgRestoreTooOld, msg)
		}
		return fmt.Errorf("%w: pg_restore --list: %v: %s", ErrCorrupt, runErr, msg)
	}
	return nil
}

// ReadBlob copies media blob sum, decrypted, to w and checks that its
// content has that sum: a blob is named by the SHA-256 of its plaintext.
// A blob whose content differs gives an ErrCorrupt error at its end.
func (r *Reader) ReadBlob(ctx context.Context, sum string, w io.Writer) error {
	if !IsSum(sum) {
		return fmt.Errorf("%w: media blob name %q", ErrCorrupt, sum)
	}
	rc, err := r.Store.Get(ctx, BlobKey(sum))
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%w: media blob %s is missing", ErrCorrupt, sum)
	}
	if err != nil {
		return fmt.Errorf("media blob %s: %w", sum, err)
	}
	defer rc.Close()
	src := &srcReader{r: rc}
	pr, err := r.Key.Decrypt(src)
	if err == nil {
		h := sha256.New()
		if _, err = io.Copy(io.MultiWriter(w, h), pr); err == nil {
			if got := hex.EncodeToString(h.Sum(nil)); got != sum {
				return fmt.Errorf("%w: media blob %s has content with sha256 %s", ErrCorrupt, sum, got)
			}
			return nil
		}
	}
	switch {
	case src.err != nil:
		return fmt.Errorf("media blob %s: reading from the target: %w", sum, src.err)
	case errors.Is(err, ErrDecrypt):
		return fmt.Errorf("%w: media blob %s: %v", ErrCorrupt, sum, err)
	default: // writing it out failed (a full disk)
		return fmt.Errorf("media blob %s: %w", sum, err)
	}
}
