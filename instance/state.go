package instance

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Record is what the keeper writes once, at first provisioning: the
// instance's name and its secrets - and, once tor first makes one, the onion
// service's key, which keeps its .onion address across a move.
type Record struct {
	LocalDomain string `json:"local_domain"`
	// InstanceID is random, made at the first provisioning and kept by a
	// restore: an instance provisioned anew - even with the same domain on
	// the same device - has another one, and never takes over the backups
	// of the one before.
	InstanceID string    `json:"instance_id,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	// Adopted lists the secrets that were provided rather than generated.
	Adopted []string  `json:"adopted,omitempty"`
	Secrets Secrets   `json:"secrets"`
	Onion   *OnionKey `json:"onion,omitempty"`
}

// OnionKey is a Tor onion service's identity: its address and tor's key
// files, as tor wrote them.
type OnionKey struct {
	Hostname  string `json:"hostname"`
	PublicKey []byte `json:"hs_ed25519_public_key"`
	SecretKey []byte `json:"hs_ed25519_secret_key"`
}

// Dir is the keeper's state directory (its named volume).
type Dir struct {
	Path string
}

const recordFile = "instance.json"

// ErrNotProvisioned means the instance record does not exist yet.
var ErrNotProvisioned = errors.New("instance not provisioned yet")

// Read loads the instance record, or ErrNotProvisioned.
func (d Dir) Read() (*Record, error) {
	b, err := os.ReadFile(filepath.Join(d.Path, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotProvisioned
	}
	if err != nil {
		return nil, fmt.Errorf("read instance record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read instance record %s: %w (the file is damaged; restore it from a backup)", filepath.Join(d.Path, recordFile), err)
	}
	if r.LocalDomain == "" || len(r.Secrets) == 0 {
		return nil, fmt.Errorf("read instance record %s: it has no domain or no secrets (the file is damaged; restore it from a backup)", filepath.Join(d.Path, recordFile))
	}
	return &r, nil
}

// Create writes the record once. It refuses to replace an existing one:
// secrets regenerated for an existing database would make its encrypted
// columns and every session unreadable.
func (d Dir) Create(r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("create instance record: %w", err)
	}
	return d.WriteOnce(recordFile, append(b, '\n'), 0o600)
}

// NewInstanceID makes a random instance ID.
func NewInstanceID() string {
	b := make([]byte, 16)
	if _, err := io.ReadFull(RandomReader, b); err != nil {
		panic(fmt.Sprintf("instance ID: %v", err)) // the system's randomness failed
	}
	return hex.EncodeToString(b)
}

// EnsureInstanceID gives a record made before instance IDs existed its ID,
// written once, atomically; every later read returns the same.
func (d Dir) EnsureInstanceID(ctx context.Context) (*Record, error) {
	rec, err := d.Read()
	if err != nil || rec.InstanceID != "" {
		return rec, err
	}
	unlock, err := d.Lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if rec, err = d.Read(); err != nil || rec.InstanceID != "" {
		return rec, err
	}
	rec.InstanceID = NewInstanceID()
	if err := d.Replace(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// Replace writes rec over the record, atomically: only a restore, which
// brings another instance's record, EnsureInstanceID and the adoption of
// the onion key do.
func (d Dir) Replace(rec *Record) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("write instance record: %w", err)
	}
	return d.WriteAtomic(recordFile, append(b, '\n'), 0o600)
}

// RecordPath is where the record lives, for messages.
func (d Dir) RecordPath() string { return filepath.Join(d.Path, recordFile) }

// Marker names. A marker is written last, after the step it stands for has
// fully succeeded, so its presence is the proof of that step.
const (
	MarkerSeeded         = "seeded"          // schema loaded and seeds run at least once
	MarkerOwnerAnnounced = "owner-announced" // the Owner's first password was shown
	// MarkerRestoring is written before a restore changes anything and
	// removed when it has finished: while it exists the device holds a
	// half-restored instance, which must be restored again, never served.
	MarkerRestoring = "restore-incomplete"
)

// ReadyMarker is written once the database schema matches Mastodon version;
// web, sidekiq and streaming of that version wait for it.
func ReadyMarker(version string) string { return "ready-" + sanitize(version) }

func sanitize(v string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, v)
}

func (d Dir) markerPath(name string) string { return filepath.Join(d.Path, "markers", name) }

// Has reports whether marker name exists.
func (d Dir) Has(name string) bool {
	_, err := os.Stat(d.markerPath(name))
	return err == nil
}

// Mark writes marker name with a timestamp.
func (d Dir) Mark(name string) error {
	return d.WriteAtomic("markers/"+name, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

// Unmark removes marker name.
func (d Dir) Unmark(name string) error {
	if err := d.Remove("markers/" + name); err != nil {
		return fmt.Errorf("unmark %s: %w", name, err)
	}
	return nil
}

// ReadyVersions lists the versions the schema was ever made ready for.
func (d Dir) ReadyVersions() []string {
	names, _ := d.Markers()
	var vs []string
	for _, n := range names {
		if v, ok := strings.CutPrefix(n, "ready-"); ok {
			vs = append(vs, v)
		}
	}
	return vs
}

// ClearReady removes every ready marker.
func (d Dir) ClearReady() error {
	vs := d.ReadyVersions()
	if len(vs) == 0 {
		return nil
	}
	for _, v := range vs {
		if err := d.Remove("markers/" + ReadyMarker(v)); err != nil {
			return fmt.Errorf("clear marker: %w", err)
		}
	}
	return nil
}

// Markers lists the markers present.
func (d Dir) Markers() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(d.Path, "markers"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list markers: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Lock takes an exclusive lock on the state directory, waiting until ctx is
// done. It serialises keepers sharing one volume (a hand-over, a terminal
// next to the service) around the record's creation.
func (d Dir) Lock(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", d.Path, err)
	}
	f, err := os.OpenFile(filepath.Join(d.Path, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", d.Path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", d.Path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", d.Path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// BackupKey returns the instance's backup key (its text form), creating it
// with generate on first use. It is write-once: every backup on a target
// shares it, so a new one would orphan the old backups.
func (d Dir) BackupKey(generate func() (string, error)) (string, error) {
	return d.readOrCreate(BackupKeyFile, generate)
}

// BackupKeyFile holds the instance's backup key, in the state directory
// (write-once; the backup format's, named here, the lowest layer).
const BackupKeyFile = "backup-key"

// ReadBackupKey returns the backup key without creating one: an
// fs.ErrNotExist error on a device that never took a backup.
func (d Dir) ReadBackupKey() (string, error) {
	b, err := os.ReadFile(filepath.Join(d.Path, BackupKeyFile))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// DeviceID names this device for the backup target's split-brain guard:
// balena's device UUID, or an ID generated once for a plain Docker host.
func (d Dir) DeviceID(getenv func(string) string) (string, error) {
	if uuid := getenv("BALENA_DEVICE_UUID"); uuid != "" {
		return uuid, nil
	}
	return d.readOrCreate("device-id", func() (string, error) {
		b := make([]byte, 16)
		if _, err := io.ReadFull(RandomReader, b); err != nil {
			return "", err
		}
		return "docker-" + hex.EncodeToString(b), nil
	})
}

func (d Dir) readOrCreate(name string, generate func() (string, error)) (string, error) {
	path := filepath.Join(d.Path, name)
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	v, err := generate()
	if err != nil {
		return "", err
	}
	err = d.WriteOnce(name, []byte(v+"\n"), 0o600)
	if errors.Is(err, fs.ErrExist) { // created meanwhile by another keeper
		return d.readOrCreate(name, generate)
	}
	return v, err
}
