package snapshot

import (
	"bufio"
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
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/pgarchive"
	"github.com/mastodon-on-balena/mastodon-balena/postgres"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// State files of the backup format in the keeper's state directory.
const (
	// KeyFile holds the instance's backup key (write-once).
	KeyFile = instance.BackupKeyFile
	// sealedFile records what this device last sealed on the target.
	sealedFile = "backup-key-sealed"
	// hashCacheFile remembers the sums of unchanged media files.
	hashCacheFile = "media-hashes.json"
)

// The staging areas of a restore: the dump in the state directory, media
// blobs in a hidden directory of the media volume (a rename away from their
// place). A backup never reads them, and removes what a killed restore left.
const (
	StateStaging = "restore-staging"
	MediaStaging = ".mastokeeper-restore"
)

// removeStaging removes what a killed restore left in the staging areas:
// the job lock keeps a running restore out.
func (b *Backup) removeStaging() {
	for _, s := range []struct{ dir, name string }{{b.Dir.Path, StateStaging}, {b.MediaDir, MediaStaging}} {
		root, err := os.OpenRoot(s.dir)
		if err != nil {
			continue
		}
		if _, err := root.Lstat(s.name); err == nil {
			if err := root.RemoveAll(s.name); err == nil {
				b.Log.Info("removed what an interrupted restore left", "path", filepath.Join(s.dir, s.name))
			}
		}
		root.Close()
	}
}

// ForgetLocalState drops what this device remembers of its target - the
// sealed key's checksum and the media sums - after a restore replaced the
// instance: the next backup checks everything anew.
func ForgetLocalState(d instance.Dir) {
	d.Remove(sealedFile)
	d.Remove(hashCacheFile)
}

// Backup takes one snapshot of the instance to a storage target: the
// database (pg_dump streamed through zstd and age, never a temporary file),
// the instance record, and local uploads (incremental: a file already
// stored is never uploaded again). The manifest goes last, so an
// interrupted backup never looks complete. The caller holds the job lock.
type Backup struct {
	Cfg             *config.Config
	Rec             *instance.Record
	Dir             instance.Dir
	Store           storage.Store
	Key             *Key
	Sealer          Sealer
	Device          string // who owns the target (split-brain guard)
	MediaDir        string // public/system; its cache/ is left out
	MastodonVersion string
	// Compression is the zstd level of the database dump (zero: default).
	Compression zstd.EncoderLevel
	// MediaConcurrency is how many media files are hashed and uploaded at
	// once (zero: DefaultMediaConcurrency).
	MediaConcurrency int
	Log              *slog.Logger
	Now              func() time.Time
	// DuringRestore: the safety backup a restore takes once its snapshot
	// is staged; the staging areas are the restore's, not leftovers.
	DuringRestore bool
}

// Result is a finished backup.
type Result struct {
	Manifest *Manifest
	// Uploaded are the media blobs this backup stored: not read back yet.
	Uploaded []string
	// Skipped are media files left out (changing or unreadable), with why.
	Skipped []string
}

// compressionLevels are BACKUP_COMPRESSION's values. Against default, on 2
// cores: with pg_dump 17's zstd (archiveLevels), fast backs up 1.4x faster
// into 8% more and small is 12% smaller but 4x slower; in the keeper's 2
// MiB frames, fast is 1.2x faster into 5% more and small 5% smaller but 4x
// slower.
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
	return zstd.SpeedDefault, problem.List{{Var: "BACKUP_COMPRESSION", What: fmt.Sprintf("is %q; it must be fast, default or small", v), Example: "fast"}}
}

// Run takes the snapshot.
func (b *Backup) Run(ctx context.Context) (*Result, error) {
	start := time.Now()
	if b.Dir.Has(instance.MarkerRestoring) {
		// It would become the newest backup: the one the next restore takes.
		return nil, &problem.Refused{Err: errors.New("no backup while a restore onto this device is under way or unfinished: it would save a half-restored database as the newest backup. Finish the restore first ('mastokeeper restore')")}
	}
	if b.Rec.InstanceID == "" {
		return nil, errors.New("the instance record has no instance ID yet (the keeper adds it at its start)")
	}
	// A backup that cannot seal its key is refused before it writes
	// anything to the target, owner record included.
	if b.Sealer.Passphrase == "" && b.Sealer.Recipient == "" {
		return nil, &problem.Refused{Err: errors.New("set BACKUP_PASSPHRASE (or BACKUP_AGE_RECIPIENT) so that backups can be opened on new hardware (example: BACKUP_PASSPHRASE=\"four random words you keep elsewhere\")")}
	}
	if err := b.Sealer.CheckSeal(); err != nil {
		return nil, &problem.Refused{Err: err}
	}
	if !b.DuringRestore {
		b.removeStaging()
	}
	me := Owner{InstanceID: b.Rec.InstanceID, Device: b.Device, LocalDomain: b.Rec.LocalDomain, Since: b.now().UTC()}
	if err := Claim(ctx, b.Store, b.Key, me); err != nil {
		return nil, err
	}
	if err := b.sealKey(ctx); err != nil {
		return nil, err
	}
	id, err := b.newID(ctx)
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		Format: Format, ID: id, InstanceID: b.Rec.InstanceID, LocalDomain: b.Rec.LocalDomain,
		Device: b.Device, MastodonVersion: b.MastodonVersion,
	}
	m.CreatedAt, _ = IDTime(id)
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
	if err := b.putEncrypted(ctx, m, Secrets, bytes.NewReader(rec)); err != nil {
		return nil, err
	}
	res := &Result{Manifest: m}
	if err := b.backupMedia(ctx, log, res); err != nil {
		return nil, err
	}
	log.Info("media backed up", "files", m.MediaFiles, "bytes", m.MediaBytes, "newly_uploaded", len(res.Uploaded), "skipped", len(res.Skipped))

	key := ManifestKey(m.ID)
	if err := b.Store.Put(ctx, key, bytes.NewReader(b.Key.seal("manifest", key, m))); err != nil {
		return nil, err
	}
	log.Info("backup complete", "took", time.Since(start).Round(time.Second).String(), "stored_bytes", m.Size())
	return res, nil
}

func (b *Backup) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// newID picks an ID no object on the target uses yet. The job lock keeps
// this device's backups apart; the check keeps a clock set back, or
// another writer, from mixing two backups into one.
func (b *Backup) newID(ctx context.Context) (string, error) {
	t := b.now()
	for range 1000 {
		id := NewID(t)
		objs, err := b.Store.List(ctx, ObjectKey(id, ""))
		if err != nil {
			return "", err
		}
		if len(objs) == 0 {
			return id, nil
		}
		t = t.Add(time.Millisecond)
	}
	return "", fmt.Errorf("no free backup ID after %s at %s", NewID(b.now()), b.Store)
}

// sealed is what this device sealed on the target last.
type sealed struct {
	// For is an HMAC of the target, passphrase and recipient it was sealed
	// for: when one changes, the key is sealed again.
	For string `json:"for"`
	// SHA256 is the sealed object's checksum: when the target holds other
	// bytes (damaged, replaced, deleted), the key is sealed again.
	SHA256 string `json:"sha256"`
}

// sealKey makes sure the target holds the backup key sealed with the
// current passphrase or age recipient, whole: a new passphrase then opens
// every backup there (they all share the key), and a sealed key damaged on
// the target is replaced at the next backup rather than found missing on
// the day of a restore. Sealing with a passphrase costs scrypt's 256 MiB
// and a second or two, so it is done only when needed: a backup reads the
// small sealed object and compares its checksum. Claim has run: the
// target is this instance's.
func (b *Backup) sealKey(ctx context.Context) error {
	mac := hmac.New(sha256.New, []byte(b.Key.String()))
	fmt.Fprintf(mac, "%s\x00%s\x00%s", b.Store, b.Sealer.Passphrase, b.Sealer.Recipient)
	want := hex.EncodeToString(mac.Sum(nil))
	path := filepath.Join(b.Dir.Path, sealedFile)
	var last sealed
	if raw, err := os.ReadFile(path); err == nil {
		json.Unmarshal(raw, &last) // a damaged or old record only costs a new seal
	}
	if last.For == want {
		sum, err := objectSum(ctx, b.Store, BackupKey)
		switch {
		case err == nil && sum == last.SHA256:
			return nil
		case err == nil || errors.Is(err, storage.ErrNotFound):
			b.Log.Warn("the sealed backup key on the target is missing or not what this device sealed there (damaged or replaced): sealing it again", "target", b.Store.String())
		default:
			return err
		}
	}
	sealedKey, err := b.Sealer.Seal(b.Key)
	// scrypt's working memory is garbage now: give it back before the
	// dump, or the next collection waits until the heap doubles it.
	debug.FreeOSMemory()
	if err != nil {
		return &problem.Refused{Err: err}
	}
	if err := b.Store.Put(ctx, BackupKey, bytes.NewReader(sealedKey)); err != nil {
		return err
	}
	sum := sha256.Sum256(sealedKey)
	rec, _ := json.Marshal(sealed{For: want, SHA256: hex.EncodeToString(sum[:])})
	return b.Dir.WriteAtomic(sealedFile, rec, 0o600)
}

// objectSum is the SHA-256 of a small object's stored bytes.
func objectSum(ctx context.Context, s storage.Store, key string) (string, error) {
	rc, err := s.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(rc, 1<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashingWriter counts and hashes what is written to w.
type hashingWriter struct {
	w io.Writer
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	size int64
}

func newHashingWriter(w io.Writer) *hashingWriter { return &hashingWriter{w: w, h: sha256.New()} }

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	hw.size += int64(n)
	return n, err
}

func (hw *hashingWriter) object(name string) Object {
	return Object{Name: name, Size: hw.size, SHA256: hex.EncodeToString(hw.h.Sum(nil))}
}

// upload streams what produce writes, encrypted, to key, recording its size
// and checksum in the manifest under name (none when m is nil). When the
// target fails first, its error is returned, not the producer's (which
// would only be "broken pipe").
func (b *Backup) upload(ctx context.Context, m *Manifest, key, name string, produce func(w io.Writer) error) error {
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
	switch {
	case err == nil && putErr == nil:
	case putErr == nil || errors.Is(putErr, err):
		return err // the producer failed; the store only passed that on
	default:
		// The store failed on its own: what the producer saw next (a
		// broken pipe) is only a consequence.
		return fmt.Errorf("the backup target failed: %w", putErr)
	}
	if m != nil {
		m.Objects = append(m.Objects, hw.object(name))
	}
	return nil
}

func (b *Backup) putEncrypted(ctx context.Context, m *Manifest, name string, r io.Reader) error {
	return b.upload(ctx, m, ObjectKey(m.ID, name), name, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// rechunkSize is the length of the chunks a table's rows are stored in
// (pgarchive.Rechunk): big enough that their lengths cost nothing, small
// enough that pg_restore's buffer for one stays small.
const rechunkSize = 256 << 10

// archiveLevels are BACKUP_COMPRESSION's levels for pg_dump's own zstd,
// the same trade-offs as the keeper's.
var archiveLevels = map[zstd.EncoderLevel]int{
	zstd.SpeedFastest:           1,
	zstd.SpeedDefault:           3,
	zstd.SpeedBetterCompression: 9,
}

// dumpDatabase streams pg_dump's custom format into the store. A pg_dump
// of 16 or later compresses the table data itself (LayoutArchive); an
// older one writes it uncompressed, its rows rechunked, and the keeper
// compresses it in zstd frames (LayoutFrames). It returns the server's
// version.
//
// Why pg_dump's own zstd where it has one: it is C's zstd, which needs
// 10-25% less CPU per byte than Go's at the same level, it makes a dump 1%
// smaller than the keeper's frames (whose matches cannot reach into the
// frame before), and only the compressed archive crosses the pipe into the
// keeper. A whole backup took a quarter less CPU on 2 cores: that is the
// CPU a Pi's Mastodon has back during the nightly backup.
// pg_restore reads the archive with several jobs as it is, so a restore
// no longer stages the dump uncompressed. It compresses on one core,
// where the frames use two: on four cores or more the frames would finish
// sooner, with more CPU.
func (b *Backup) dumpDatabase(ctx context.Context, m *Manifest) (string, error) {
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
	tools, err := postgres.ToolMajor(ctx, "pg_dump")
	if err != nil {
		return "", err
	}
	level := b.Compression
	if level == 0 {
		level = zstd.SpeedDefault
	}

	var stderr bytes.Buffer
	err = b.upload(ctx, m, ObjectKey(m.ID, DBDump), DBDump, func(w io.Writer) error {
		compress := "--compress=0"
		if tools >= 16 {
			compress = "--compress=zstd:" + strconv.Itoa(archiveLevels[level])
		}
		cmd := exec.CommandContext(ctx, "pg_dump", "--format=custom", compress, "--no-password",
			"--host", pg.Host, "--port", strconv.Itoa(pg.Port), "--username", pg.User, "--dbname", b.Cfg.DBName)
		// The password travels in the environment, never as an argument.
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pg.Password)
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			return fmt.Errorf("pg_dump: %w", err)
		}
		var n int64
		if tools >= 16 {
			m.DumpLayout = LayoutArchive
			n, err = copyArchive(w, stdout)
		} else {
			m.DumpLayout = LayoutFrames
			n, err = compressFrames(w, stdout, level)
		}
		if err != nil {
			// The target failed, or the output is no archive: pg_dump
			// need not go on.
			cmd.Process.Kill()
		}
		if werr := cmd.Wait(); werr != nil {
			return fmt.Errorf("pg_dump: %w: %s", werr, strings.TrimSpace(stderr.String()))
		}
		if err != nil {
			return fmt.Errorf("pg_dump's output: %w", err)
		}
		m.DumpBytes = n
		return nil
	})
	return version, err
}

// copyArchive stores pg_dump's compressed archive as it comes, after
// checking that it is one.
func copyArchive(w io.Writer, r io.Reader) (int64, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	head, err := br.Peek(len(pgarchive.Magic))
	if err != nil || string(head) != pgarchive.Magic {
		return 0, fmt.Errorf("it is no pg_dump archive (it begins %q)", head)
	}
	return br.WriteTo(w)
}

// compressFrames stores pg_dump's uncompressed archive, its rows
// rechunked, in zstd frames at level: 1% smaller than pg_dump -Fc's gzip
// output, compressed two frames at a time (see frameWriter).
func compressFrames(w io.Writer, r io.Reader, level zstd.EncoderLevel) (int64, error) {
	zw, err := newFrameWriter(w, level)
	if err != nil {
		return 0, fmt.Errorf("zstd level %v: %w", level, err)
	}
	n, err := pgarchive.Rechunk(zw, r, rechunkSize)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// hashCache remembers sums of files by path, size and mtime, so an
// unchanged file is not read again at every backup.
type hashCache map[string]MediaEntry

// errChanged means a media file changed while it was read.
var errChanged = errors.New("the file changed while it was read")

// backupMedia uploads the local uploads that no earlier backup stored and
// writes this snapshot's media index. Every file is read through a root
// that cannot be left (a symlink planted in the volume leads nowhere
// outside it), hidden top-level entries (the keeper's restore staging) and
// cache/ are left out, and a file that vanishes during the walk is
// skipped, as is one that keeps changing or cannot be read - each with a
// log line, never failing the whole backup.
func (b *Backup) backupMedia(ctx context.Context, log *slog.Logger, res *Result) error {
	m := res.Manifest
	stored := &storedBlobs{size: map[string]int64{}, busy: map[string]chan struct{}{}}
	objs, err := b.Store.List(ctx, MediaPrefix)
	if err != nil {
		return err
	}
	for _, o := range objs {
		stored.size[o.Key] = o.Size
	}
	cache := hashCache{}
	cachePath := filepath.Join(b.Dir.Path, hashCacheFile)
	if raw, err := os.ReadFile(cachePath); err == nil {
		json.Unmarshal(raw, &cache) // a damaged cache only costs re-hashing
	}
	var index []MediaEntry
	blobs := map[string]bool{}
	root, err := os.OpenRoot(b.MediaDir)
	if errors.Is(err, fs.ErrNotExist) {
		root = nil // no uploads yet
	} else if err != nil {
		return fmt.Errorf("back up media from %s: %w", b.MediaDir, err)
	}
	if root != nil {
		defer root.Close()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		pool := newMediaPool(ctx, cancel, b, root, cache, stored)
		err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			if err != nil {
				if p == "." {
					return err
				}
				if !errors.Is(err, fs.ErrNotExist) {
					res.Skipped = append(res.Skipped, p+": "+err.Error())
					log.Warn("a media directory cannot be read; left out of this backup", "path", p, "error", err.Error())
				}
				return nil // vanished during the walk
			}
			if p == "." {
				return nil
			}
			if !strings.Contains(p, "/") && (p == "cache" || strings.HasPrefix(p, ".")) {
				// cache/: remote media, re-fetched on demand. Hidden: the
				// keeper's own staging, never an upload.
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			return pool.add(ctx, p)
		})
		// The files' outcomes, in the walk's order, as if one at a time.
		results, poolErr := pool.wait()
		if err == nil || errors.Is(err, context.Canceled) && poolErr != nil {
			err = poolErr // a failed upload stopped the walk: its error is the cause
		}
		if err != nil {
			return fmt.Errorf("back up media from %s: %w", b.MediaDir, err)
		}
		for _, r := range results {
			e, p := r.e, r.path
			switch err := r.err; {
			case errors.Is(err, fs.ErrNotExist):
				continue // deleted meanwhile: not part of the instance any more
			case errors.Is(err, errChanged):
				res.Skipped = append(res.Skipped, p+": "+err.Error())
				log.Warn("a media file kept changing while it was read; left out of this backup (the next one takes it)", "path", p)
				continue
			case errors.Is(err, errReadFile):
				res.Skipped = append(res.Skipped, p+": "+err.Error())
				log.Warn("a media file cannot be read; left out of this backup", "path", p, "error", err.Error())
				continue
			}
			if r.uploaded {
				res.Uploaded = append(res.Uploaded, e.SHA256)
			}
			index = append(index, e)
			if !blobs[e.SHA256] {
				blobs[e.SHA256] = true
				m.MediaBlobs = append(m.MediaBlobs, e.SHA256)
			}
			m.MediaFiles++
			m.MediaBytes += e.Size
		}
	}
	sort.Strings(m.MediaBlobs)
	ib, _ := json.Marshal(index)
	if err := b.putEncrypted(ctx, m, MediaIndex, bytes.NewReader(ib)); err != nil {
		return err
	}
	// Best effort: a cache that failed to save is rebuilt next time.
	kept := hashCache{}
	for _, e := range index {
		kept[e.Path] = e
	}
	if cb, err := json.Marshal(kept); err == nil {
		b.Dir.WriteAtomic(hashCacheFile, cb, 0o600)
	}
	return nil
}

// errReadFile marks a media file that could not be read.
var errReadFile = errors.New("cannot read")

// backupFile indexes one media file, uploading its content unless a blob
// of it is stored already. The blob's name is the SHA-256 of exactly the
// bytes uploaded: the upload is hashed as it is read and aborted - the
// target keeps nothing - when those bytes are not the ones the name was
// taken from. A file that changes is read again, up to three times.
func (b *Backup) backupFile(ctx context.Context, root *os.Root, p string, cache hashCache, stored *storedBlobs) (MediaEntry, bool, error) {
	var lastErr error
	useCache := true
	for range 3 {
		fi, err := root.Stat(p)
		if err != nil {
			return MediaEntry{}, false, readErr(err)
		}
		if !fi.Mode().IsRegular() {
			return MediaEntry{}, false, fs.ErrNotExist // replaced by something else
		}
		e := MediaEntry{Path: p, Size: fi.Size(), Mode: fi.Mode().Perm(), ModTime: fi.ModTime().UTC()}
		if c, ok := cache[p]; useCache && ok && c.Size == e.Size && c.ModTime.Equal(e.ModTime) && IsSum(c.SHA256) {
			e.SHA256 = c.SHA256
		} else if e.SHA256, err = fileSum(root, p, e.Size); err != nil {
			if errors.Is(err, errChanged) {
				lastErr = err
				continue
			}
			return e, false, err
		}
		// Not stored, or stored at a wrong size (cut short or damaged):
		// upload it (again) - once, however many files share it.
		uploaded, err := stored.ensure(BlobKey(e.SHA256), encryptedSize(e.Size), func() error {
			defer stored.hold(e.Size)()
			return b.uploadFile(ctx, root, p, e)
		})
		if errors.Is(err, errChanged) {
			useCache = false
			lastErr = err
			continue
		}
		if err != nil {
			return e, false, err
		}
		return e, uploaded, nil
	}
	return MediaEntry{}, false, lastErr
}

func readErr(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return fmt.Errorf("%w: %v", errReadFile, err)
}

// uploadFile uploads media file p as the blob of e.SHA256, failing with
// errChanged (and nothing stored) unless exactly e.Size bytes with that sum
// were read.
func (b *Backup) uploadFile(ctx context.Context, root *os.Root, p string, e MediaEntry) error {
	f, err := root.Open(p)
	if err != nil {
		return readErr(err)
	}
	defer f.Close()
	return b.upload(ctx, nil, BlobKey(e.SHA256), "", func(w io.Writer) error {
		cr := &sumReader{r: f, h: sha256.New()}
		if _, err := io.Copy(w, cr); err != nil {
			if cr.err != nil {
				return readErr(cr.err)
			}
			return err
		}
		if cr.n != e.Size || hex.EncodeToString(cr.h.Sum(nil)) != e.SHA256 {
			return errChanged // the store sees the error and keeps nothing
		}
		return nil
	})
}

// sumReader hashes and counts what is read, and remembers the file's error.
type sumReader struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n   int64
	err error
}

func (s *sumReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// fileSum hashes media file p, which must still be size bytes long.
func fileSum(root *os.Root, p string, size int64) (string, error) {
	f, err := root.Open(p)
	if err != nil {
		return "", readErr(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", readErr(err)
	}
	if n != size {
		return "", errChanged
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// encryptedSize is the stored size of an age-encrypted object of n
// plaintext bytes under the backup key: a fixed header, then 64 KiB
// chunks with a 16-byte tag each (an empty object still has one chunk).
func encryptedSize(n int64) int64 {
	chunks := (n + 65535) / 65536
	if chunks == 0 {
		chunks = 1
	}
	return ageHeaderSize() + n + 16*chunks
}

var headerSize atomic.Int64

// ageHeaderSize measures, once, the header age writes for one X25519
// recipient (with the stream nonce): its length never varies.
func ageHeaderSize() int64 {
	if n := headerSize.Load(); n > 0 {
		return n
	}
	k, err := NewKey()
	if err != nil {
		return 0
	}
	var buf bytes.Buffer
	w, _ := k.Encrypt(&buf)
	w.Close()
	n := int64(buf.Len()) - 16 // the empty last chunk's tag
	headerSize.Store(n)
	return n
}

// verifyRoundFile counts scheduled verifications, to rotate the share of
// media blobs each one reads.
const verifyRoundFile = "verify-round"

// Check is what the scheduled verification found.
type Check struct {
	Newest   string // the snapshot read back whole
	Blobs    int    // media blobs read back
	Repaired []string
	// Lost are damaged blobs whose file is no longer on this device.
	Lost []string
}

// VerifyStored is the scheduled verification (as restic's check
// --read-data-subset): it reads back the newest snapshot whole (the dump
// through pg_restore --list) and one share in shares of every media blob
// the target's snapshots need - another share each time, so all of them
// within shares runs - and uploads again a damaged blob whose file is still
// on the device. The caller holds the job lock.
func (b *Backup) VerifyStored(ctx context.Context, shares int) (*Check, error) {
	rd := &Reader{Store: b.Store, Key: b.Key}
	l, err := rd.List(ctx)
	if err != nil {
		return nil, err
	}
	if len(l.Snapshots) == 0 {
		return &Check{}, nil
	}
	newest := l.Snapshots[len(l.Snapshots)-1]
	c := &Check{Newest: newest.ID}
	if _, err := rd.Verify(ctx, newest.ID, MediaSelection{}); err != nil {
		return c, err
	}
	round := b.nextRound()
	need := map[string]bool{}
	for _, m := range l.Snapshots {
		for _, sum := range m.MediaBlobs {
			if v, _ := strconv.ParseUint(sum[:8], 16, 32); int(v%uint64(max(shares, 1))) == round%max(shares, 1) {
				need[sum] = true
			}
		}
	}
	sums := make([]string, 0, len(need))
	for s := range need {
		sums = append(sums, s)
	}
	sort.Strings(sums)
	var local map[string]string // sum -> a path that had it
	for _, sum := range sums {
		c.Blobs++
		err := rd.ReadBlob(ctx, sum, io.Discard)
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			return c, err
		}
		if local == nil {
			local = b.localSums()
		}
		if p, ok := local[sum]; ok && b.reupload(ctx, p, sum) == nil && rd.ReadBlob(ctx, sum, io.Discard) == nil {
			b.Log.Warn("a stored media blob was damaged; uploaded it again from the device", "blob", sum, "path", p)
			c.Repaired = append(c.Repaired, sum)
			continue
		}
		c.Lost = append(c.Lost, sum)
	}
	if len(c.Lost) > 0 {
		return c, fmt.Errorf("%w: %d media blob(s) on %s are damaged or missing and their files are no longer on this device, e.g. %s: the backups that need them restore without those files", ErrCorrupt, len(c.Lost), b.Store, c.Lost[0])
	}
	return c, MarkVerified(ctx, b.Store, b.Key, newest, false, b.now())
}

func (b *Backup) nextRound() int {
	p := filepath.Join(b.Dir.Path, verifyRoundFile)
	raw, _ := os.ReadFile(p)
	n, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	b.Dir.WriteAtomic(verifyRoundFile, []byte(strconv.Itoa(n+1)+"\n"), 0o600) // best effort: a lost count only repeats a share
	return n
}

// localSums maps the sums the hash cache knows to their paths.
func (b *Backup) localSums() map[string]string {
	cache := hashCache{}
	if raw, err := os.ReadFile(filepath.Join(b.Dir.Path, hashCacheFile)); err == nil {
		json.Unmarshal(raw, &cache)
	}
	out := map[string]string{}
	for p, e := range cache {
		out[e.SHA256] = p
	}
	return out
}

// reupload stores media file p again as blob sum, if it still has that content.
func (b *Backup) reupload(ctx context.Context, p, sum string) error {
	if CheckMediaPath(p) != nil {
		return errors.New("not a media path")
	}
	root, err := os.OpenRoot(b.MediaDir)
	if err != nil {
		return err
	}
	defer root.Close()
	fi, err := root.Stat(p)
	if err != nil {
		return err
	}
	return b.uploadFile(ctx, root, p, MediaEntry{Path: p, Size: fi.Size(), SHA256: sum})
}
