package jobs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/postgres"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Backup takes one snapshot of the instance to a storage target: the
// database (pg_dump streamed through zstd and age, never a temporary file),
// the instance record, and local uploads (incremental: a file already
// stored is never uploaded again). The manifest goes last, so an
// interrupted backup never looks complete.
type Backup struct {
	Cfg             *config.Config
	Rec             *instance.Record
	Dir             instance.Dir
	Store           storage.Store
	Key             *snapshot.Key
	Sealer          snapshot.Sealer
	Device          string // who owns the target (split-brain guard)
	MediaDir        string // public/system; its cache/ is left out
	MastodonVersion string
	// Compression is the zstd level of the database dump (zero: default).
	Compression zstd.EncoderLevel
	Log         *slog.Logger
	Now         func() time.Time
}

// compressionLevels are BACKUP_COMPRESSION's values. Against default, on 2
// cores: fast backs up 1.6x faster into 5% more; small is 12% smaller but
// compresses 7x slower (the backup takes 3x as long).
var compressionLevels = map[string]zstd.EncoderLevel{
	"fast":    zstd.SpeedFastest,
	"default": zstd.SpeedDefault,
	"small":   zstd.SpeedBetterCompression,
}

// CompressionFromEnv reads BACKUP_COMPRESSION; a bad value stops backups
// only, so it is not part of the keeper's configuration.
func CompressionFromEnv(getenv func(string) string) (zstd.EncoderLevel, error) {
	v := getenv("BACKUP_COMPRESSION")
	if v == "" {
		return zstd.SpeedDefault, nil
	}
	if l, ok := compressionLevels[v]; ok {
		return l, nil
	}
	return zstd.SpeedDefault, fmt.Errorf("BACKUP_COMPRESSION is %q; it must be fast, default or small (example: BACKUP_COMPRESSION=fast)", v)
}

// ErrNotOwner means another device has taken over the target (a restore
// elsewhere): this one must stop writing there.
var ErrNotOwner = errors.New("another device owns this backup target")

// Run takes the snapshot and returns its manifest.
func (b *Backup) Run(ctx context.Context) (*snapshot.Manifest, error) {
	start := time.Now()
	if b.Dir.Has(instance.MarkerRestoring) {
		// It would become the newest backup: the one the next restore takes.
		return nil, &RefusedError{errors.New("no backup while a restore onto this device is under way or unfinished: it would save a half-restored database as the newest backup. Finish the restore first ('mastokeeper restore')")}
	}
	if err := b.claim(ctx); err != nil {
		return nil, err
	}
	if err := b.sealKey(ctx); err != nil {
		return nil, err
	}

	m := &snapshot.Manifest{
		Format: snapshot.Format, ID: snapshot.NewID(b.now()), LocalDomain: b.Rec.LocalDomain,
		Device: b.Device, MastodonVersion: b.MastodonVersion,
	}
	m.CreatedAt, _ = time.Parse("20060102T150405Z", m.ID)
	log := b.Log.With("backup", m.ID, "target", b.Store.String())
	log.Info("backup started")

	pgVersion, err := b.dumpDatabase(ctx, m)
	if err != nil {
		return nil, err
	}
	m.PostgresVersion = pgVersion
	log.Info("database dumped", "stored_bytes", m.Objects[0].Size)

	rec, err := json.Marshal(b.Rec)
	if err != nil {
		return nil, err
	}
	if err := b.putEncrypted(ctx, m, snapshot.Secrets, bytes.NewReader(rec)); err != nil {
		return nil, err
	}
	uploaded, err := b.backupMedia(ctx, m)
	if err != nil {
		return nil, err
	}
	log.Info("media backed up", "files", m.MediaFiles, "bytes", m.MediaBytes, "newly_uploaded", uploaded)

	mb, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if err := b.Store.Put(ctx, snapshot.ManifestKey(m.ID), bytes.NewReader(mb)); err != nil {
		return nil, err
	}
	log.Info("backup complete", "took", time.Since(start).Round(time.Second).String(), "stored_bytes", m.Size())
	return m, nil
}

func (b *Backup) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// claim checks the split-brain guard: the target belongs to this device,
// or to nobody yet (then it is claimed), and holds this instance.
func (b *Backup) claim(ctx context.Context) error {
	o, err := ReadOwner(ctx, b.Store)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return WriteOwner(ctx, b.Store, snapshot.Owner{Device: b.Device, LocalDomain: b.Rec.LocalDomain, Since: b.now().UTC()})
	case err != nil:
		return err
	case o.LocalDomain != b.Rec.LocalDomain:
		return &RefusedError{fmt.Errorf("the backup target %s holds the backups of %s, not of this instance (%s): set BACKUP_TARGET to a place of this instance's own, e.g. a different prefix", b.Store, o.LocalDomain, b.Rec.LocalDomain)}
	case o.Device != b.Device:
		return &RefusedError{fmt.Errorf("%w: since %s the backups of %s at %s are written by device %s (it was restored there). This device stops writing to it; if this device is the one to keep, run 'mastokeeper backup claim' in a terminal on the keeper service", ErrNotOwner, o.Since.Format(time.RFC3339), o.LocalDomain, b.Store, o.Device)}
	}
	return nil
}

// sealKey stores the backup key on the target, sealed with the current
// passphrase or age recipient - again whenever those change, so a new
// passphrase opens every backup there (they all share the key). Sealing
// with a passphrase costs scrypt's 256 MiB and a second or two, so it is
// skipped when the target already holds the key sealed for the same
// passphrase, as a fingerprint in the state directory records.
func (b *Backup) sealKey(ctx context.Context) error {
	fpPath := filepath.Join(b.Dir.Path, "backup-key-sealed")
	mac := hmac.New(sha256.New, []byte(b.Key.String()))
	fmt.Fprintf(mac, "%s\x00%s\x00%s", b.Store, b.Sealer.Passphrase, b.Sealer.Recipient)
	fp := hex.EncodeToString(mac.Sum(nil))
	if old, err := os.ReadFile(fpPath); err == nil && strings.TrimSpace(string(old)) == fp {
		if objs, err := b.Store.List(ctx, snapshot.BackupKey); err == nil && len(objs) == 1 {
			return nil
		}
	}
	sealed, err := b.Sealer.Seal(b.Key)
	// scrypt's working memory is garbage now: give it back before the
	// dump, or the next collection waits until the heap doubles it.
	debug.FreeOSMemory()
	if err != nil {
		return &RefusedError{err}
	}
	if err := b.Store.Put(ctx, snapshot.BackupKey, bytes.NewReader(sealed)); err != nil {
		return err
	}
	return instance.WriteFileAtomic(fpPath, []byte(fp+"\n"), 0o600)
}

// ReadOwner reads the target's owner record.
func ReadOwner(ctx context.Context, s storage.Store) (*snapshot.Owner, error) {
	rc, err := s.Get(ctx, snapshot.OwnerKey)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var o snapshot.Owner
	if err := json.NewDecoder(io.LimitReader(rc, 1<<16)).Decode(&o); err != nil {
		return nil, fmt.Errorf("read %s: %w", snapshot.OwnerKey, err)
	}
	return &o, nil
}

// WriteOwner records which device owns the target from now on.
func WriteOwner(ctx context.Context, s storage.Store, o snapshot.Owner) error {
	b, _ := json.MarshalIndent(o, "", "  ")
	return s.Put(ctx, snapshot.OwnerKey, bytes.NewReader(b))
}

// hashingWriter counts and hashes what is written to w.
type hashingWriter struct {
	w    io.Writer
	h    hashState
	size int64
}

type hashState interface {
	io.Writer
	Sum([]byte) []byte
}

func newHashingWriter(w io.Writer) *hashingWriter { return &hashingWriter{w: w, h: sha256.New()} }

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.size += int64(n)
	return n, err
}

func (hw *hashingWriter) object(name string) snapshot.Object {
	return snapshot.Object{Name: name, Size: hw.size, SHA256: hex.EncodeToString(hw.h.Sum(nil))}
}

// upload streams what produce writes, encrypted, to the snapshot's object
// name, recording its size and checksum in the manifest.
func (b *Backup) upload(ctx context.Context, m *snapshot.Manifest, key, name string, produce func(w io.Writer) error) error {
	pr, pw := io.Pipe()
	hw := newHashingWriter(pw)
	done := make(chan error, 1)
	go func() {
		err := b.Store.Put(ctx, key, pr)
		// A store that gave up must not leave the producer blocked on the pipe.
		if err != nil {
			pr.CloseWithError(err)
		} else {
			pr.Close()
		}
		done <- err
	}()
	err := func() error {
		ew, err := b.Key.Encrypt(hw)
		if err != nil {
			return err
		}
		if err := produce(ew); err != nil {
			return err
		}
		return ew.Close()
	}()
	pw.CloseWithError(err) // the store sees the failure and keeps nothing
	putErr := <-done
	if err != nil {
		return err
	}
	if putErr != nil {
		return putErr
	}
	if name != "" {
		m.Objects = append(m.Objects, hw.object(name))
	}
	return nil
}

func (b *Backup) putEncrypted(ctx context.Context, m *snapshot.Manifest, name string, r io.Reader) error {
	return b.upload(ctx, m, snapshot.ObjectKey(m.ID, name), name, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// dumpDatabase streams pg_dump's custom format, uncompressed by pg_dump,
// through zstd into the store. It returns the server's version.
func (b *Backup) dumpDatabase(ctx context.Context, m *snapshot.Manifest) (string, error) {
	pg := postgres.Server{Host: b.Cfg.DBHost, Port: b.Cfg.DBPort, User: b.Cfg.PostgresUser, Password: b.Rec.Secrets[instance.PostgresPassword]}
	c, err := pg.Connect(ctx, b.Cfg.DBName)
	if err != nil {
		return "", err
	}
	var version string
	err = c.QueryRow(ctx, "SHOW server_version").Scan(&version)
	c.Close(context.WithoutCancel(ctx))
	if err != nil {
		return "", fmt.Errorf("postgres: server version: %w", err)
	}
	version, _, _ = strings.Cut(version, " ")

	var stderr bytes.Buffer
	err = b.upload(ctx, m, snapshot.ObjectKey(m.ID, snapshot.DBDump), snapshot.DBDump, func(w io.Writer) error {
		// BACKUP_COMPRESSION's level: by default about as small
		// as pg_dump -Fc's gzip output in 0.5-0.7x its time. Two encoder
		// goroutines (every supported device has four cores): about 35 MiB
		// in all at the default level, 25 with fast. WithLowerEncoderMem
		// would save 7.5 MiB but halves the speed. Restore reads any level.
		level := b.Compression
		if level == 0 {
			level = zstd.SpeedDefault
		}
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(2))
		if err != nil {
			return fmt.Errorf("zstd level %v: %w", level, err)
		}
		cmd := exec.CommandContext(ctx, "pg_dump", "--format=custom", "--compress=0", "--no-password",
			"--host", pg.Host, "--port", strconv.Itoa(pg.Port), "--username", pg.User, "--dbname", b.Cfg.DBName)
		// The password travels in the environment, never as an argument.
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.Password)
		cmd.Stdout, cmd.Stderr = zw, &stderr
		if err := cmd.Run(); err != nil {
			zw.Close()
			return fmt.Errorf("pg_dump: %w: %s", err, strings.TrimSpace(stderr.String()))
		}
		return zw.Close()
	})
	return version, err
}

// hashCache remembers sums of files by path, size and mtime, so an
// unchanged file is not read again at every backup.
type hashCache map[string]snapshot.MediaEntry

const hashCacheFile = "media-hashes.json"

// backupMedia uploads the local uploads that no earlier backup stored and
// writes this snapshot's media index. It returns how many it uploaded.
func (b *Backup) backupMedia(ctx context.Context, m *snapshot.Manifest) (int, error) {
	stored := map[string]bool{}
	objs, err := b.Store.List(ctx, snapshot.MediaPrefix)
	if err != nil {
		return 0, err
	}
	for _, o := range objs {
		stored[o.Key] = true
	}
	cache := hashCache{}
	cachePath := filepath.Join(b.Dir.Path, hashCacheFile)
	if raw, err := os.ReadFile(cachePath); err == nil {
		json.Unmarshal(raw, &cache) // a damaged cache only costs re-hashing
	}
	var index []snapshot.MediaEntry
	uploaded := 0
	blobs := map[string]bool{}
	err = filepath.WalkDir(b.MediaDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path == b.MediaDir {
				return filepath.SkipAll // no uploads yet
			}
			return err
		}
		rel, _ := filepath.Rel(b.MediaDir, path)
		if d.IsDir() {
			if rel == "cache" { // remote media: re-fetched on demand, never backed up
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := snapshot.MediaEntry{Path: filepath.ToSlash(rel), Size: fi.Size(), Mode: fi.Mode().Perm(), ModTime: fi.ModTime().UTC()}
		if c, ok := cache[e.Path]; ok && c.Size == e.Size && c.ModTime.Equal(e.ModTime) {
			e.SHA256 = c.SHA256
		} else if e.SHA256, err = fileSum(path); err != nil {
			return err
		}
		cache[e.Path] = e
		if key := snapshot.BlobKey(e.SHA256); !stored[key] {
			if err := b.uploadFile(ctx, key, path); err != nil {
				return err
			}
			stored[key] = true
			uploaded++
		}
		index = append(index, e)
		if !blobs[e.SHA256] {
			blobs[e.SHA256] = true
			m.MediaBlobs = append(m.MediaBlobs, e.SHA256)
		}
		m.MediaFiles++
		m.MediaBytes += e.Size
		return ctx.Err()
	})
	if err != nil {
		return uploaded, fmt.Errorf("back up media from %s: %w", b.MediaDir, err)
	}
	sort.Strings(m.MediaBlobs)
	ib, _ := json.Marshal(index)
	if err := b.putEncrypted(ctx, m, snapshot.MediaIndex, bytes.NewReader(ib)); err != nil {
		return uploaded, err
	}
	// Best effort: a cache that failed to save is rebuilt next time.
	for p := range cache {
		if _, err := os.Stat(filepath.Join(b.MediaDir, filepath.FromSlash(p))); err != nil {
			delete(cache, p)
		}
	}
	if cb, err := json.Marshal(cache); err == nil {
		instance.WriteFileAtomic(cachePath, cb, 0o600)
	}
	return uploaded, nil
}

func (b *Backup) uploadFile(ctx context.Context, key, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return b.upload(ctx, nil, key, "", func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
