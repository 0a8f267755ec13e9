// Package snapshot defines what one backup is and how it is laid out on a
// storage target:
//
//	owner.json                            which device writes here (split-brain guard)
//	keys/backup-key.age                   the instance's backup key, sealed with the passphrase or the admin's age key
//	media/<ab>/<sha256>.age               one local upload, encrypted; shared by every snapshot that has it
//	snapshots/<id>/db.dump.zst.age        pg_dump custom format, zstd, encrypted
//	snapshots/<id>/secrets.json.age       the instance record (domain, secrets), encrypted
//	snapshots/<id>/media-index.json.age   path -> blob of every local upload, encrypted
//	snapshots/<id>/manifest.json          sizes and checksums of the above; uploaded LAST
//
// A snapshot without its manifest is an incomplete upload and is never
// listed, verified, restored or counted by retention as a backup.
package snapshot

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"time"
)

// Format is the layout version written in every manifest.
const Format = 1

// Object names inside a snapshot.
const (
	DBDump     = "db.dump.zst.age"
	Secrets    = "secrets.json.age"
	MediaIndex = "media-index.json.age"
	manifest   = "manifest.json"
	OwnerKey   = "owner.json"
	BackupKey  = "keys/backup-key.age"
	prefix     = "snapshots/"
)

// Manifest describes a complete snapshot.
type Manifest struct {
	Format          int       `json:"format"`
	ID              string    `json:"id"`
	CreatedAt       time.Time `json:"created_at"`
	LocalDomain     string    `json:"local_domain"`
	Device          string    `json:"device"`
	MastodonVersion string    `json:"mastodon_version"`
	PostgresVersion string    `json:"postgres_version"`
	// Objects are the snapshot's own objects with the size and SHA-256 of
	// their stored (encrypted) bytes.
	Objects []Object `json:"objects"`
	// MediaBlobs are the plaintext SHA-256 sums (and blob names) of the
	// local uploads this snapshot needs.
	MediaBlobs []string `json:"media_blobs"`
	MediaFiles int      `json:"media_files"`
	MediaBytes int64    `json:"media_bytes"`
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

var idRe = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z$`)

// NewID names a snapshot taken at t; IDs sort by time.
func NewID(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

// CheckID says whether id names a snapshot.
func CheckID(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("backup ID %q is not of the form 20261128T031500Z (see 'mastokeeper backup list')", id)
	}
	return nil
}

// ObjectKey is the storage key of a snapshot's object.
func ObjectKey(id, name string) string { return prefix + id + "/" + name }

// ManifestKey is the storage key of a snapshot's manifest.
func ManifestKey(id string) string { return ObjectKey(id, manifest) }

// BlobKey is the storage key of a media blob with plaintext SHA-256 sum.
func BlobKey(sum string) string { return "media/" + sum[:2] + "/" + sum + ".age" }

// SnapshotsPrefix is where snapshots are listed from.
const SnapshotsPrefix = prefix

// MediaPrefix is where media blobs are listed from.
const MediaPrefix = "media/"

// ParseManifestKey returns the snapshot ID when key is a manifest's key.
func ParseManifestKey(key string) (string, bool) {
	if len(key) != len(prefix)+16+1+len(manifest) || key[:len(prefix)] != prefix || key[len(key)-len(manifest):] != manifest {
		return "", false
	}
	id := key[len(prefix) : len(prefix)+16]
	return id, idRe.MatchString(id)
}

// Marshal renders a manifest.
func (m *Manifest) Marshal() ([]byte, error) { return json.MarshalIndent(m, "", "  ") }

// MediaEntry is one local upload in a snapshot's media index.
type MediaEntry struct {
	Path    string      `json:"path"` // relative to public/system, '/'-separated
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mtime"`
	SHA256  string      `json:"sha256"` // the blob holding its content
}

// Owner is the split-brain guard: the device that last took the target.
type Owner struct {
	Device      string    `json:"device"`
	LocalDomain string    `json:"local_domain"`
	Since       time.Time `json:"since"`
}
