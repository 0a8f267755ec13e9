// Package snapshot owns the backup format: what one backup is, how it is
// laid out on a storage target, and every rule about it - names,
// authentication, consistency, writing, reading, verifying and pruning.
// Package restore only applies a snapshot this package has checked.
//
//	owner.json                            which instance and device write here; authenticated
//	keys/backup-key.age                   the instance's backup key, sealed with the passphrase or the admin's age key
//	media/<ab>/<sha256>.age               one local upload, encrypted; shared by every snapshot that has it
//	snapshots/<id>/db.dump.zst.age        pg_dump custom format, zstd, encrypted (see DumpLayout)
//	snapshots/<id>/secrets.json.age       the instance record (domain, secrets), encrypted
//	snapshots/<id>/media-index.json.age   path -> blob of every local upload, encrypted
//	snapshots/<id>/manifest.json          sizes and checksums of the above; authenticated; uploaded LAST
//	snapshots/<id>/verified.json          written after a full read-back check; authenticated
//
// The target is hostile storage: anyone who can write to it can replace or
// replay any object. So every manifest and owner record carries an HMAC
// with a key derived from the backup key, which only the instance (and
// whoever holds the passphrase) has, and it is checked before any field is
// used; every name is checked by strict syntax; every object is checked
// against the manifest's SHA-256 as it is read; and a whole snapshot is
// checked for consistency before a restore touches anything.
//
// A snapshot without its manifest is an incomplete upload and is never
// listed, verified, restored or counted by retention as a backup.
package snapshot

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"time"
)

// Format is the layout version written in every manifest. Format 1
// (before 2026-12) had no authentication: see Reader.TrustOldFormat.
const Format = 2

// formatOld is the unauthenticated format of the first releases.
const formatOld = 1

// Object names inside a snapshot.
const (
	DBDump     = "db.dump.zst.age"
	Secrets    = "secrets.json.age"
	MediaIndex = "media-index.json.age"
	manifest   = "manifest.json"
	verified   = "verified.json"
	OwnerKey   = "owner.json"
	BackupKey  = "keys/backup-key.age"
	prefix     = "snapshots/"
)

// The layouts of the database dump (Manifest.DumpLayout). Both are one
// object, DBDump; a reader tells them apart by their first bytes too.
const (
	// LayoutFrames: `pg_dump -Fc -Z0`'s archive, its rows in large chunks,
	// in independent zstd frames compressed by the keeper's own workers.
	// Every backup of before, and any from a pg_dump older than 16.
	LayoutFrames = ""
	// LayoutArchive: `pg_dump -Fc -Z zstd:N`'s archive as pg_dump wrote
	// it, each table's data compressed by pg_dump. pg_restore reads it
	// directly, with several jobs, without staging it uncompressed.
	LayoutArchive = "archive"
)

// objectNames are the only objects a manifest may list.
var objectNames = map[string]bool{DBDump: true, Secrets: true, MediaIndex: true}

// Manifest describes a complete snapshot.
type Manifest struct {
	Format    int       `json:"format"`
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	// InstanceID is the random ID of the instance that took it: a new
	// instance on the same device, with the same domain, has another one.
	InstanceID      string `json:"instance_id,omitempty"`
	LocalDomain     string `json:"local_domain"`
	Device          string `json:"device"`
	MastodonVersion string `json:"mastodon_version"`
	PostgresVersion string `json:"postgres_version"`
	// Objects are the snapshot's own objects with the size and SHA-256 of
	// their stored (encrypted) bytes.
	Objects []Object `json:"objects"`
	// MediaBlobs are the plaintext SHA-256 sums (and blob names) of the
	// local uploads this snapshot needs.
	MediaBlobs []string `json:"media_blobs"`
	// DumpLayout says how the database dump is compressed: LayoutFrames
	// or LayoutArchive.
	DumpLayout string `json:"dump_layout,omitempty"`
	// DumpBytes is the size of the archive pg_dump wrote, which a restore
	// stages whole: uncompressed in LayoutFrames (0 in backups of before).
	DumpBytes  int64 `json:"dump_bytes,omitempty"`
	MediaFiles int   `json:"media_files"`
	MediaBytes int64 `json:"media_bytes"`

	// Authenticated is false for a format 1 manifest, which anyone who can
	// write to the target could have written.
	Authenticated bool `json:"-"`
}

// Object is one stored object and its checksum.
type Object struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Size is the total stored size of the snapshot's own objects.
func (m *Manifest) Size() int64 {
	var n int64
	for _, o := range m.Objects {
		n += o.Size
	}
	return n
}

// Object returns the named object's entry.
func (m *Manifest) Object(name string) (Object, bool) {
	for _, o := range m.Objects {
		if o.Name == name {
			return o, true
		}
	}
	return Object{}, false
}

// check validates every field a reader will use as a name, a path or a
// number: a manifest that passes can be used without further checks.
func (m *Manifest) check(id string) error {
	if m.ID != id {
		return fmt.Errorf("it names itself %q", m.ID)
	}
	if m.LocalDomain == "" || strings.ContainsAny(m.LocalDomain, "/\\\x00 ") {
		return fmt.Errorf("its domain %q is not a domain", m.LocalDomain)
	}
	seen := map[string]bool{}
	for _, o := range m.Objects {
		if !objectNames[o.Name] || seen[o.Name] {
			return fmt.Errorf("it lists an object named %q", o.Name)
		}
		seen[o.Name] = true
		if !IsSum(o.SHA256) || o.Size < 0 {
			return fmt.Errorf("object %s has checksum %q and size %d", o.Name, o.SHA256, o.Size)
		}
	}
	for name := range objectNames {
		if !seen[name] {
			return fmt.Errorf("it lists no %s", name)
		}
	}
	if m.DumpLayout != LayoutFrames && m.DumpLayout != LayoutArchive {
		return fmt.Errorf("its database dump has the layout %q", m.DumpLayout)
	}
	for _, b := range m.MediaBlobs {
		if !IsSum(b) {
			return fmt.Errorf("it lists a media blob named %q", b)
		}
	}
	if m.MediaFiles < 0 || m.MediaBytes < 0 {
		return fmt.Errorf("it counts %d media files of %d bytes", m.MediaFiles, m.MediaBytes)
	}
	return nil
}

// IsSum says whether s is a SHA-256 sum as blob names use it: 64 lowercase
// hexadecimal digits.
func IsSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// IDs are UTC times to the millisecond. The first releases used seconds;
// those IDs stay valid.
var idRe = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}(\.[0-9]{3})?Z$`)

const idLayout = "20060102T150405.000Z"

// NewID names a snapshot taken at t; IDs sort by time.
func NewID(t time.Time) string { return t.UTC().Format(idLayout) }

// IDTime is the time an ID names.
func IDTime(id string) (time.Time, error) {
	if err := CheckID(id); err != nil {
		return time.Time{}, err
	}
	if strings.Contains(id, ".") {
		return time.Parse(idLayout, id)
	}
	return time.Parse("20060102T150405Z", id)
}

// CheckID says whether id names a snapshot.
func CheckID(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("backup ID %q is not of the form 20261128T031500.000Z (see 'mastokeeper backup list')", id)
	}
	return nil
}

// ObjectKey is the storage key of a snapshot's object.
func ObjectKey(id, name string) string { return prefix + id + "/" + name }

// ManifestKey is the storage key of a snapshot's manifest.
func ManifestKey(id string) string { return ObjectKey(id, manifest) }

// VerifiedKey is the storage key of a snapshot's verification record.
func VerifiedKey(id string) string { return ObjectKey(id, verified) }

// BlobKey is the storage key of a media blob with plaintext SHA-256 sum;
// sum must pass IsSum.
func BlobKey(sum string) string {
	if !IsSum(sum) {
		// Callers check; a bad sum must never become a path nor a panic.
		return "media/invalid/" + fmt.Sprintf("%x", sum) + ".age"
	}
	return "media/" + sum[:2] + "/" + sum + ".age"
}

// SnapshotsPrefix is where snapshots are listed from.
const SnapshotsPrefix = prefix

// MediaPrefix is where media blobs are listed from.
const MediaPrefix = "media/"

// ParseManifestKey returns the snapshot ID when key is a manifest's key.
func ParseManifestKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/"+manifest)
	return id, ok && idRe.MatchString(id)
}

// SnapshotOf returns the snapshot ID a key under SnapshotsPrefix belongs to.
func SnapshotOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, "/")
	return id, ok && idRe.MatchString(id)
}

// MediaEntry is one local upload in a snapshot's media index.
type MediaEntry struct {
	Path    string      `json:"path"` // relative to public/system, '/'-separated
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mtime"`
	SHA256  string      `json:"sha256"` // the blob holding its content
}

// CheckMediaPath says whether p may name a file under the media directory:
// relative, clean, '/'-separated, no "..", no NUL, not in a hidden
// top-level directory (the keeper's staging area is one).
func CheckMediaPath(p string) error {
	switch {
	case p == "" || p == ".":
		return fmt.Errorf("media path %q is empty", p)
	case strings.ContainsRune(p, 0) || strings.ContainsRune(p, '\\'):
		return fmt.Errorf("media path %q has a NUL or a backslash", p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("media path %q is absolute", p)
	case path.Clean(p) != p:
		return fmt.Errorf("media path %q is not clean", p)
	case !fs.ValidPath(p):
		return fmt.Errorf("media path %q is not a valid relative path", p)
	case strings.HasPrefix(p, "."):
		return fmt.Errorf("media path %q is hidden", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return fmt.Errorf("media path %q leaves the media directory", p)
		}
	}
	return nil
}

// Owner is the split-brain guard: the instance and device that write the
// target.
type Owner struct {
	InstanceID  string    `json:"instance_id,omitempty"`
	Device      string    `json:"device"`
	LocalDomain string    `json:"local_domain"`
	Since       time.Time `json:"since"`
}

// marshal renders v for storage.
func marshal(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err) // only plain structs are marshalled
	}
	return b
}
