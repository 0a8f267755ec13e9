// Package restore applies a snapshot, checked by package snapshot, to
// this device: onto a fresh one, or replacing the instance on this one.
package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/pgarchive"
	"github.com/mastodon-on-balena/mastodon-balena/postgres"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Restore puts a snapshot onto this device. The snapshot package checks
// it; this package only applies it: everything is downloaded, checked and
// decrypted into staging areas first, and the whole snapshot is checked for
// consistency, so a wrong passphrase, a damaged or forged object or a
// refused configuration leaves the device as it was. Every file it writes
// goes through a root that cannot be left (os.Root): a name in a backup or
// a symlink planted in a volume never leads outside the media or state
// directory. The caller holds the job lock.
type Restore struct {
	Cfg      *config.Config
	Getenv   func(string) string
	Dir      instance.Dir
	Store    storage.Store
	Sealer   snapshot.Sealer
	BackupID string // "" for the newest verified
	// Force replaces an instance that already has data on this device.
	Force bool
	// TrustOldFormat restores format 1 (unauthenticated) backups; only
	// for a target no one else can write to.
	TrustOldFormat bool
	Device         string
	MediaDir       string
	// MediaConcurrency: media blobs downloaded at once (zero: the default).
	MediaConcurrency int
	// Jobs: pg_restore jobs (zero: DefaultJobs).
	Jobs int
	Log  *slog.Logger
	// Terminal, when set, gets a progress bar (a person at a terminal);
	// the log gets plain progress lines either way.
	Terminal io.Writer
	// BeforeApply, when set, runs once the snapshot is staged and checked,
	// before anything on the device changes (a safety backup); its error
	// stops the restore with nothing changed.
	BeforeApply func(ctx context.Context) error
}

// ErrCorrupt means the backup does not match its manifest or is inconsistent.
var ErrCorrupt = snapshot.ErrCorrupt

var errDumpUnreadable = errors.New("the dump's check stopped reading")

// The staging areas (the snapshot package's, so that no backup reads
// them), emptied at the start of a restore.
const (
	stateStaging = snapshot.StateStaging
	mediaStaging = snapshot.MediaStaging
)

// staged is a snapshot downloaded and checked, ready to apply.
type staged struct {
	m   *snapshot.Manifest
	key *snapshot.Key
	rec *instance.Record
	// dump is the staged dump in the state directory: pg_dump's archive
	// (indexed when index is set) or, when compressed, the keeper's zstd
	// frames around it.
	dump       string
	compressed bool
	index      *pgarchive.Index
	media      []snapshot.MediaEntry
}

// Run restores and returns the restored snapshot's manifest.
func (r *Restore) Run(ctx context.Context) (*snapshot.Manifest, error) {
	key, err := snapshot.OpenKey(ctx, r.Store, r.Sealer)
	if err != nil {
		return nil, &problem.Refused{Err: err}
	}
	rd := &snapshot.Reader{Store: r.Store, Key: key, TrustOldFormat: r.TrustOldFormat}
	m, err := r.pick(ctx, rd)
	if err != nil {
		return nil, err
	}
	log := r.Log.With("backup", m.ID, "from", r.Store.String())
	log.Info("restoring", "local_domain", m.LocalDomain, "taken", m.CreatedAt.Format(time.RFC3339),
		"mastodon", m.MastodonVersion, "postgres", m.PostgresVersion, "authenticated", m.Authenticated)

	if d := r.Getenv("LOCAL_DOMAIN"); d != "" && d != m.LocalDomain {
		return nil, &problem.Refused{Err: fmt.Errorf("LOCAL_DOMAIN is %s but backup %s is of %s: an instance keeps its domain. Remove LOCAL_DOMAIN or set it to %s; nothing was changed", d, m.ID, m.LocalDomain, m.LocalDomain)}
	}
	local, err := r.Dir.Read()
	if err != nil && !errors.Is(err, instance.ErrNotProvisioned) {
		return nil, err
	}
	if local != nil && local.LocalDomain != m.LocalDomain && !r.Force {
		return nil, &problem.Refused{Err: fmt.Errorf("this device already holds the instance %s; restoring %s would replace it. Run the restore with --force to replace it; nothing was changed", local.LocalDomain, m.LocalDomain)}
	}
	// A restore that stopped midway left data no one may lose: it is
	// finished by the next restore of the same instance, forced or not.
	resuming := local != nil && r.Dir.Has(instance.MarkerRestoring) && local.LocalDomain == m.LocalDomain
	if resuming {
		log.Info("an earlier restore onto this device did not finish; this one replaces what it left")
	}

	st, err := r.stage(ctx, log, rd, m, key)
	defer r.cleanStage()
	if err != nil {
		return nil, err
	}
	if local != nil && !r.Force && !resuming {
		// Only an empty database may be restored into without --force.
		if empty, err := r.databaseEmpty(ctx, local, st.rec); err != nil {
			return nil, err
		} else if !empty {
			return nil, &problem.Refused{Err: fmt.Errorf("the database %s on this device is not empty; run the restore with --force to replace it with backup %s; nothing was changed", r.Cfg.DBName, m.ID)}
		}
	}
	if r.BeforeApply != nil && !resuming {
		if err := r.BeforeApply(ctx); err != nil {
			return nil, err
		}
	}
	log.Info("backup downloaded and verified; restoring it onto this device now")
	if err := r.apply(ctx, log, st, local); err != nil {
		var refused *problem.Refused
		if errors.As(err, &refused) {
			return nil, err
		}
		if !r.Dir.Has(instance.MarkerRestoring) {
			return nil, fmt.Errorf("restore of %s failed before it changed anything: %w. Fix the cause and run the restore again", m.ID, err)
		}
		return nil, fmt.Errorf("restore of %s failed midway: %w. The device stays marked as half-restored, serving nothing, until a restore finishes: fix the cause and run the restore again", m.ID, err)
	}
	return m, nil
}

// pick reads the manifest of the backup asked for, or of the newest
// verified one, saying which and why.
func (r *Restore) pick(ctx context.Context, rd *snapshot.Reader) (*snapshot.Manifest, error) {
	if r.BackupID != "" {
		m, err := rd.ReadManifest(ctx, r.BackupID)
		if err != nil {
			return nil, &problem.Refused{Err: err}
		}
		return m, nil
	}
	l, err := rd.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, u := range l.Unreadable {
		r.Log.Warn("a backup cannot be used and is left out", "backup", u.ID, "why", u.Err.Error())
	}
	if len(l.Snapshots) == 0 {
		if len(l.Old) > 0 {
			newest := l.Old[len(l.Old)-1].ID
			return nil, &problem.Refused{Err: fmt.Errorf("%s holds only backups in the old format 1, which carries no authentication (the newest: %s): anyone who can write there could have forged them. If no one else can write to it, restore with 'mastokeeper restore --trust-old-format'", r.Store, newest)}
		}
		return nil, &problem.Refused{Err: fmt.Errorf("%w at %s: it holds no complete backup this key authenticates (see 'mastokeeper backup list')", snapshot.ErrNoBackup, r.Store)}
	}
	m, why, err := rd.Newest(ctx, l)
	if err != nil {
		return nil, &problem.Refused{Err: err}
	}
	r.Log.Info("restoring backup "+m.ID+": "+why, "backup", m.ID)
	return m, nil
}

func (r *Restore) server(rec *instance.Record) postgres.Server {
	return postgres.Server{Host: r.Cfg.DBHost, Port: r.Cfg.DBPort, User: r.Cfg.PostgresUser, Password: rec.Secrets[instance.PostgresPassword]}
}

// connect connects as the superuser with the first of recs whose password
// the server takes: a restore killed after it gave the server the backup's
// password, but before it wrote the backup's record, is still finished.
func (r *Restore) connect(ctx context.Context, log *slog.Logger, database string, recs ...*instance.Record) (*pgx.Conn, *instance.Record, error) {
	var firstErr error
	for _, rec := range recs {
		if rec == nil {
			continue
		}
		c, err := r.server(rec).Wait(ctx, log, database)
		if err == nil {
			return c, rec, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if !errors.Is(err, postgres.ErrAuth) {
			break
		}
	}
	return nil, nil, firstErr
}

func (r *Restore) databaseEmpty(ctx context.Context, recs ...*instance.Record) (bool, error) {
	c, rec, err := r.connect(ctx, r.Log, "postgres", recs...)
	if err != nil {
		return false, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, r.Cfg.DBName).Scan(&exists); err != nil || !exists {
		return true, err
	}
	mc, err := r.server(rec).Connect(ctx, r.Cfg.DBName)
	if err != nil {
		return false, err
	}
	defer mc.Close(context.WithoutCancel(ctx))
	var tables int
	err = mc.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables)
	return tables == 0, err
}

// roots opens the state and media directories as roots.
func (r *Restore) roots() (state, media *os.Root, err error) {
	for _, d := range []string{r.Dir.Path, r.MediaDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, fmt.Errorf("staging: %w", err)
		}
	}
	if state, err = os.OpenRoot(r.Dir.Path); err != nil {
		return nil, nil, fmt.Errorf("staging: %w", err)
	}
	if media, err = os.OpenRoot(r.MediaDir); err != nil {
		state.Close()
		return nil, nil, fmt.Errorf("staging: %w", err)
	}
	return state, media, nil
}

// stage downloads, checks and decrypts everything; it changes nothing
// outside its staging directories, which it empties first.
func (r *Restore) stage(ctx context.Context, log *slog.Logger, rd *snapshot.Reader, m *snapshot.Manifest, key *snapshot.Key) (*staged, error) {
	st := &staged{m: m, key: key}
	state, media, err := r.roots()
	if err != nil {
		return st, err
	}
	defer state.Close()
	defer media.Close()
	for _, s := range []struct {
		root *os.Root
		dir  string
	}{{state, stateStaging}, {media, mediaStaging}} {
		if err := s.root.RemoveAll(s.dir); err != nil {
			return st, fmt.Errorf("staging: empty %s: %w", s.dir, err)
		}
		if err := s.root.Mkdir(s.dir, 0o700); err != nil {
			return st, fmt.Errorf("staging: %w", err)
		}
	}
	if err := r.stageDump(ctx, log, rd, st, state); err != nil {
		return st, err
	}
	// The instance record.
	var buf bytes.Buffer
	if err := r.fetchTo(ctx, rd, m, snapshot.Secrets, &buf, nil); err != nil {
		return st, err
	}
	st.rec = &instance.Record{}
	if err := json.Unmarshal(buf.Bytes(), st.rec); err != nil || st.rec.LocalDomain != m.LocalDomain || len(st.rec.Secrets) == 0 {
		return st, fmt.Errorf("%w: backup %s: its instance record is unreadable or of another domain", ErrCorrupt, m.ID)
	}
	if m.InstanceID != "" && st.rec.InstanceID != m.InstanceID {
		return st, fmt.Errorf("%w: backup %s: its instance record is of another instance", ErrCorrupt, m.ID)
	}
	// Media: the index checked whole, then every blob, each against its sum.
	buf.Reset()
	if err := r.fetchTo(ctx, rd, m, snapshot.MediaIndex, &buf, nil); err != nil {
		return st, err
	}
	if err := json.Unmarshal(buf.Bytes(), &st.media); err != nil {
		return st, fmt.Errorf("%w: backup %s: media index: %v", ErrCorrupt, m.ID, err)
	}
	if st.media, err = checkIndex(log, m, st.media); err != nil {
		return st, err
	}
	// The bar counts what is downloaded: each blob once, however many
	// files share it.
	var blobBytes int64
	counted := map[string]bool{}
	for _, e := range st.media {
		if !counted[e.SHA256] {
			counted[e.SHA256] = true
			blobBytes += e.Size
		}
	}
	if err := r.fetchBlobs(ctx, rd, m.MediaBlobs, media, &lockedWriter{w: r.progress(log, "media", blobBytes)}); err != nil {
		return st, staging(err, r.MediaDir)
	}
	return st, nil
}

// fetchBlobs downloads the blobs into the media staging area, several at
// once: each answer from an object store comes after a round trip. The
// first failure stops the others.
func (r *Restore) fetchBlobs(ctx context.Context, rd *snapshot.Reader, sums []string, media *os.Root, progress io.Writer) error {
	workers := r.MediaConcurrency
	if workers <= 0 {
		workers = snapshot.DefaultMediaConcurrency
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sum := range jobs {
				if err := r.fetchBlob(ctx, rd, sum, media, path.Join(mediaStaging, sum), progress); err != nil {
					cancel(err)
				}
			}
		}()
	}
	for _, sum := range sums {
		select {
		case jobs <- sum:
			continue
		case <-ctx.Done():
		}
		break
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// lockedWriter lets the downloads running at once share one progress bar.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// checkIndex checks a snapshot's media index against its manifest before
// anything is touched: every path valid and once, no file where another
// needs a directory, every blob listed (and so staged and checked).
func checkIndex(log *slog.Logger, m *snapshot.Manifest, index []snapshot.MediaEntry) ([]snapshot.MediaEntry, error) {
	blobs := map[string]bool{}
	for _, b := range m.MediaBlobs {
		blobs[b] = true
	}
	files := map[string]bool{}
	var out []snapshot.MediaEntry
	for _, e := range index {
		if !m.Authenticated && strings.HasPrefix(e.Path, mediaStaging+"/") {
			// Format 1 backups could hold a killed restore's staging area.
			log.Warn("left out of the restore: a staging file an old backup took for media", "path", e.Path)
			continue
		}
		if err := snapshot.CheckMediaPath(e.Path); err != nil {
			return nil, fmt.Errorf("%w: backup %s: %v", ErrCorrupt, m.ID, err)
		}
		if files[e.Path] {
			return nil, fmt.Errorf("%w: backup %s: media path %q is listed twice", ErrCorrupt, m.ID, e.Path)
		}
		if !blobs[e.SHA256] {
			return nil, fmt.Errorf("%w: backup %s: media file %s needs blob %q, which the manifest does not list", ErrCorrupt, m.ID, e.Path, e.SHA256)
		}
		if e.Size < 0 || e.Mode&^fs.ModePerm != 0 {
			return nil, fmt.Errorf("%w: backup %s: media file %s has size %d and mode %v", ErrCorrupt, m.ID, e.Path, e.Size, e.Mode)
		}
		files[e.Path] = true
		out = append(out, e)
	}
	for p := range files {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if files[d] {
				return nil, fmt.Errorf("%w: backup %s: %s is both a file and the directory of %s", ErrCorrupt, m.ID, d, p)
			}
		}
	}
	if m.Authenticated && len(out) != m.MediaFiles {
		return nil, fmt.Errorf("%w: backup %s: its media index has %d files, its manifest %d", ErrCorrupt, m.ID, len(out), m.MediaFiles)
	}
	return out, nil
}

// staging says a full disk in the person's words.
func staging(err error, dir string) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("the device ran out of space while downloading the backup into %s: free space there and run the restore again; nothing was changed (%w)", dir, err)
	}
	return err
}

func (r *Restore) cleanStage() {
	state, media, err := r.roots()
	if err != nil {
		return
	}
	defer state.Close()
	defer media.Close()
	state.RemoveAll(stateStaging)
	media.RemoveAll(mediaStaging)
}

func (r *Restore) fetch(ctx context.Context, rd *snapshot.Reader, m *snapshot.Manifest, name string, root *os.Root, p string, progress io.Writer) error {
	f, err := root.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = r.fetchTo(ctx, rd, m, name, f, progress)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (r *Restore) fetchTo(ctx context.Context, rd *snapshot.Reader, m *snapshot.Manifest, name string, w io.Writer, p io.Writer) error {
	rc, err := rd.Object(ctx, m, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if p != nil {
		w = io.MultiWriter(w, p)
	}
	_, err = io.Copy(w, rc)
	return err
}

func (r *Restore) fetchBlob(ctx context.Context, rd *snapshot.Reader, sum string, root *os.Root, p string, progress io.Writer) error {
	f, err := root.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := rd.ReadBlob(ctx, sum, io.MultiWriter(f, progress)); err != nil {
		return err
	}
	return f.Close()
}

// apply writes the staged snapshot onto the device.
func (r *Restore) apply(ctx context.Context, log *slog.Logger, st *staged, local *instance.Record) error {
	rec := st.rec
	if rec.InstanceID == "" {
		// A format 1 backup: the instance gets its ID now.
		rec.InstanceID = instance.NewInstanceID()
	}
	if local == nil {
		// A fresh device: the db service initialises PostgreSQL with the
		// restored superuser password as soon as this record exists. From
		// the record on, the device is a restore in progress.
		if err := r.Dir.Mark(instance.MarkerRestoring); err != nil {
			return err
		}
		if err := r.Dir.Create(rec); err != nil {
			return err
		}
		local = rec
	}
	conn, current, err := r.connect(ctx, log, "postgres", local, rec)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := checkMajor(ctx, conn, st.m); err != nil {
		return &problem.Refused{Err: err}
	}
	// Web, sidekiq and streaming must not start on a database that is
	// being replaced: they wait for a ready marker again.
	if err := r.Dir.Mark(instance.MarkerRestoring); err != nil {
		return err
	}
	if err := r.Dir.ClearReady(); err != nil {
		return err
	}
	unlock, err := postgres.LockSchema(ctx, log, conn)
	if err != nil {
		return err
	}
	defer unlock(context.WithoutCancel(ctx))
	if current.Secrets[instance.PostgresPassword] != rec.Secrets[instance.PostgresPassword] {
		// The running server knows the old superuser password: give it the
		// restored one before the record that holds it replaces the old.
		if err := postgres.SetPassword(ctx, conn, r.Cfg.PostgresUser, rec.Secrets[instance.PostgresPassword]); err != nil {
			return err
		}
	}
	if _, err := postgres.EnsureRole(ctx, conn, r.Cfg.DBUser, rec.Secrets[instance.DBPassword]); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{r.Cfg.DBName}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("postgres: drop database %s: %w", r.Cfg.DBName, err)
	}
	if _, err := postgres.EnsureDatabase(ctx, conn, r.Cfg.DBName, r.Cfg.DBUser); err != nil {
		return err
	}
	start := time.Now()
	if r.Terminal != nil {
		fmt.Fprintln(r.Terminal, "restoring the database (pg_restore); this is the longest step...")
	}
	if err := r.pgRestore(ctx, log, rec, st); err != nil {
		return err
	}
	log.Info("database restored", "took", time.Since(start).Round(time.Second).String())
	if err := r.placeMedia(st); err != nil {
		return err
	}
	log.Info("media restored", "files", len(st.media))

	if local != rec {
		if err := r.Dir.Replace(rec); err != nil {
			return err
		}
	}
	// The restored instance's backup key opens its existing backups.
	if err := r.Dir.WriteAtomic(snapshot.KeyFile, []byte(st.key.String()+"\n"), 0o600); err != nil {
		return err
	}
	snapshot.ForgetLocalState(r.Dir)
	// The schema is the backup's: migrations for this release run next, and
	// the Owner exists already.
	for _, mk := range []string{instance.MarkerSeeded, instance.MarkerOwnerAnnounced} {
		if err := r.Dir.Mark(mk); err != nil {
			return err
		}
	}
	// From now on this device writes the backups; the old one stops.
	owner := snapshot.Owner{InstanceID: rec.InstanceID, Device: r.Device, LocalDomain: rec.LocalDomain, Since: time.Now().UTC()}
	if err := snapshot.WriteOwner(ctx, r.Store, st.key, owner); err != nil {
		return err
	}
	return r.Dir.Unmark(instance.MarkerRestoring)
}

// checkMajor refuses a backup from a newer PostgreSQL major than the
// server's: its dump may use what the older server lacks, and pg_restore
// would fail halfway through.
func checkMajor(ctx context.Context, conn *pgx.Conn, m *snapshot.Manifest) error {
	var num int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		return fmt.Errorf("postgres: server version: %w", err)
	}
	from, err := strconv.Atoi(strings.SplitN(m.PostgresVersion, ".", 2)[0])
	if err != nil {
		return nil // a backup that does not say: pg_restore decides
	}
	if server := num / 10000; from > server {
		return fmt.Errorf("backup %s was taken from PostgreSQL %s, and this device runs PostgreSQL %d, which is older: restore it onto a device with PostgreSQL %d or newer (this project's current images). The database was not touched", m.ID, m.PostgresVersion, server, from)
	}
	return nil
}

// placeMedia moves the staged blobs to their paths (a rename within the
// media volume), copying when one blob serves several paths. Whatever
// stands in the way - a symlink, a file where a directory must be, a
// directory where a file must be - is removed, never followed.
func (r *Restore) placeMedia(st *staged) error {
	_, root, err := r.roots()
	if err != nil {
		return err
	}
	defer root.Close()
	uses := map[string]int{}
	for _, e := range st.media {
		uses[e.SHA256]++
	}
	for _, e := range st.media {
		if err := clearWay(root, e.Path); err != nil {
			return fmt.Errorf("restore media %s: %w", e.Path, err)
		}
		src := path.Join(mediaStaging, e.SHA256)
		if uses[e.SHA256]--; uses[e.SHA256] == 0 {
			err = root.Rename(src, e.Path)
		} else {
			err = copyFile(root, src, e.Path)
		}
		if err != nil {
			return fmt.Errorf("restore media %s: %w", e.Path, err)
		}
		if err := root.Chmod(e.Path, e.Mode.Perm()); err != nil {
			return fmt.Errorf("restore media %s: %w", e.Path, err)
		}
		if err := root.Chtimes(e.Path, e.ModTime, e.ModTime); err != nil {
			return fmt.Errorf("restore media %s: %w", e.Path, err)
		}
	}
	return nil
}

// clearWay makes p's parents directories and p itself free: what is not a
// directory on the way, and whatever is at p, is removed.
func clearWay(root *os.Root, p string) error {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		d := strings.Join(parts[:i], "/")
		fi, err := root.Lstat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := root.Mkdir(d, 0o755); err != nil {
				return err
			}
		case err != nil:
			return err
		case !fi.IsDir():
			if err := root.Remove(d); err != nil {
				return err
			}
			if err := root.Mkdir(d, 0o755); err != nil {
				return err
			}
		}
	}
	if err := root.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func copyFile(root *os.Root, src, dst string) error {
	in, err := root.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := root.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// progress reports a download: a plain log line at most every 15 seconds,
// and on a terminal a bar redrawn a few times a second.
func (r *Restore) progress(log *slog.Logger, what string, total int64) *progressLog {
	return &progressLog{log: log, term: r.Terminal, verb: "downloading", what: what, total: total, bytes: true, last: time.Now()}
}

type progressLog struct {
	log      *slog.Logger
	term     io.Writer
	verb     string
	what     string
	bytes    bool // the units are bytes: the bar shows MiB
	total    int64
	done     int64
	last     time.Time
	lastDraw time.Time
	ended    bool // the bar's line is finished
}

func (p *progressLog) Write(b []byte) (int, error) {
	p.add(int64(len(b)))
	return len(b), nil
}

// add counts n more units done.
func (p *progressLog) add(n int64) {
	p.done += n
	pct := 100.0
	if p.total > 0 {
		pct = min(100, 100*float64(p.done)/float64(p.total))
	}
	if time.Since(p.last) >= 15*time.Second {
		p.last = time.Now()
		attrs := []any{"percent", fmt.Sprintf("%.0f", pct)}
		if p.bytes {
			attrs = append(attrs, "bytes", p.done)
		}
		p.log.Info(p.verb+" "+p.what, attrs...)
	}
	if p.term != nil && (time.Since(p.lastDraw) >= 200*time.Millisecond || p.done >= p.total) {
		p.lastDraw = time.Now()
		const width = 30
		filled := int(pct / 100 * width)
		fmt.Fprintf(p.term, "\r%-9s [%s%s] %3.0f%%", p.what, strings.Repeat("#", filled), strings.Repeat(".", width-filled), pct)
		if p.bytes {
			fmt.Fprintf(p.term, " %d MiB", p.done>>20)
		}
		if p.done >= p.total && !p.ended {
			p.ended = true
			fmt.Fprintln(p.term)
		}
	}
}
