package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/klauspost/compress/zstd"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/postgres"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Restore puts a snapshot onto this device: everything is downloaded,
// checked and decrypted into a staging area first, so a wrong passphrase,
// a damaged object or a refused configuration leaves the device as it was.
type Restore struct {
	Cfg      *config.Config
	Getenv   func(string) string
	Dir      instance.Dir
	Store    storage.Store
	Sealer   snapshot.Sealer
	BackupID string // "" for the newest
	// Force replaces an instance that already has data on this device.
	Force    bool
	Device   string
	MediaDir string
	Log      *slog.Logger
	// Terminal, when set, gets a progress bar (a person at a terminal);
	// the log gets plain progress lines either way.
	Terminal io.Writer
}

// RefusedError means the restore refused to act; nothing was changed.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

var errDumpUnreadable = errors.New("the dump's check stopped reading")

// staged is a snapshot downloaded and checked, ready to apply.
type staged struct {
	m       *snapshot.Manifest
	key     *snapshot.Key
	rec     *instance.Record
	dump    string // zstd-compressed pg_dump archive
	media   []snapshot.MediaEntry
	mediaAt string // staging directory inside the media volume
}

// Run restores and returns the restored snapshot's manifest.
func (r *Restore) Run(ctx context.Context) (*snapshot.Manifest, error) {
	key, err := OpenKey(ctx, r.Store, r.Sealer)
	if err != nil {
		return nil, &RefusedError{err}
	}
	id := r.BackupID
	if id == "" {
		all, err := List(ctx, r.Store)
		if err != nil {
			return nil, err
		}
		if len(all) == 0 {
			return nil, &RefusedError{fmt.Errorf("no complete backup at %s", r.Store)}
		}
		id = all[len(all)-1].ID
	}
	m, err := ReadManifest(ctx, r.Store, id)
	if err != nil {
		return nil, &RefusedError{err}
	}
	log := r.Log.With("backup", m.ID, "from", r.Store.String())
	log.Info("restoring", "local_domain", m.LocalDomain, "taken", m.CreatedAt.Format(time.RFC3339),
		"mastodon", m.MastodonVersion, "postgres", m.PostgresVersion)

	if d := r.Getenv("LOCAL_DOMAIN"); d != "" && d != m.LocalDomain {
		return nil, &RefusedError{fmt.Errorf("LOCAL_DOMAIN is %s but backup %s is of %s: an instance keeps its domain. Remove LOCAL_DOMAIN or set it to %s; nothing was changed", d, m.ID, m.LocalDomain, m.LocalDomain)}
	}
	local, err := r.Dir.Read()
	if err != nil && !errors.Is(err, instance.ErrNotProvisioned) {
		return nil, err
	}
	if local != nil && local.LocalDomain != m.LocalDomain && !r.Force {
		return nil, &RefusedError{fmt.Errorf("this device already holds the instance %s; restoring %s would replace it. Run the restore with --force to replace it; nothing was changed", local.LocalDomain, m.LocalDomain)}
	}
	// A restore that stopped midway left data no one may lose: it is
	// finished by the next restore of the same instance, forced or not.
	resuming := local != nil && r.Dir.Has(instance.MarkerRestoring) && local.LocalDomain == m.LocalDomain
	if resuming {
		log.Info("an earlier restore onto this device did not finish; this one replaces what it left")
	}
	if local != nil && !r.Force && !resuming {
		// Only an empty database may be restored into without --force.
		if empty, err := r.databaseEmpty(ctx, local); err != nil {
			return nil, err
		} else if !empty {
			return nil, &RefusedError{fmt.Errorf("the database %s on this device is not empty; run the restore with --force to replace it with backup %s; nothing was changed", r.Cfg.DBName, m.ID)}
		}
	}

	st, err := r.stage(ctx, log, m, key)
	defer r.cleanStage(st)
	if err != nil {
		return nil, err
	}
	log.Info("backup downloaded and verified; restoring it onto this device now")
	if err := r.apply(ctx, log, st, local); err != nil {
		var refused *RefusedError
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

func (r *Restore) server(rec *instance.Record) postgres.Server {
	return postgres.Server{Host: r.Cfg.DBHost, Port: r.Cfg.DBPort, User: r.Cfg.PostgresUser, Password: rec.Secrets[instance.PostgresPassword]}
}

func (r *Restore) databaseEmpty(ctx context.Context, rec *instance.Record) (bool, error) {
	c, err := r.server(rec).Wait(ctx, r.Log, "postgres")
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

// stage downloads, checks and decrypts everything; it changes nothing
// outside its staging directories.
func (r *Restore) stage(ctx context.Context, log *slog.Logger, m *snapshot.Manifest, key *snapshot.Key) (*staged, error) {
	st := &staged{m: m, key: key, mediaAt: filepath.Join(r.MediaDir, ".mastokeeper-restore")}
	stageDir := filepath.Join(r.Dir.Path, "restore-staging")
	for _, d := range []string{stageDir, st.mediaAt} {
		os.RemoveAll(d)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return st, fmt.Errorf("staging: %w", err)
		}
	}
	// The dump, still zstd-compressed, checked and then read by pg_restore.
	st.dump = filepath.Join(stageDir, "db.dump.zst")
	// pg_restore --list reads the dump as it arrives: the check costs no
	// second pass over it.
	dbObj, _ := m.Object(snapshot.DBDump)
	pr, pw := io.Pipe()
	listed := make(chan error, 1)
	go func() {
		// Two decoders: a quarter faster, for a few MiB more than a
		// backup's verification may spend.
		err := listDump(ctx, pr, 2)
		pr.CloseWithError(errDumpUnreadable) // the download must not wait on a reader that is gone
		listed <- err
	}()
	err := r.fetch(ctx, m, key, snapshot.DBDump, st.dump, io.MultiWriter(r.progress(log, "database", dbObj.Size), pw))
	pw.CloseWithError(err)
	listErr := <-listed
	if err != nil && !errors.Is(err, errDumpUnreadable) {
		return st, err
	}
	if listErr != nil {
		return st, fmt.Errorf("%w: backup %s: the database dump: %v", ErrCorrupt, m.ID, listErr)
	}
	// The instance record.
	var buf bytes.Buffer
	if err := r.fetchTo(ctx, m, key, snapshot.Secrets, &buf, nil); err != nil {
		return st, err
	}
	st.rec = &instance.Record{}
	if err := json.Unmarshal(buf.Bytes(), st.rec); err != nil || st.rec.LocalDomain != m.LocalDomain {
		return st, fmt.Errorf("%w: backup %s: its secrets are unreadable or of another domain", ErrCorrupt, m.ID)
	}
	// Media: every blob, checked against its sum.
	buf.Reset()
	if err := r.fetchTo(ctx, m, key, snapshot.MediaIndex, &buf, nil); err != nil {
		return st, err
	}
	if err := json.Unmarshal(buf.Bytes(), &st.media); err != nil {
		return st, fmt.Errorf("%w: backup %s: media index: %v", ErrCorrupt, m.ID, err)
	}
	p := r.progress(log, "media", m.MediaBytes)
	for _, sum := range m.MediaBlobs {
		if err := r.fetchBlob(ctx, key, sum, filepath.Join(st.mediaAt, sum), p); err != nil {
			return st, err
		}
	}
	return st, nil
}

func (r *Restore) cleanStage(st *staged) {
	os.RemoveAll(filepath.Join(r.Dir.Path, "restore-staging"))
	if st != nil {
		os.RemoveAll(st.mediaAt)
	}
}

func (r *Restore) fetch(ctx context.Context, m *snapshot.Manifest, key *snapshot.Key, name, path string, p io.Writer) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = r.fetchTo(ctx, m, key, name, f, p)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func (r *Restore) fetchTo(ctx context.Context, m *snapshot.Manifest, key *snapshot.Key, name string, w io.Writer, p io.Writer) error {
	rc, err := Object(ctx, r.Store, key, m, name)
	if err != nil {
		return err
	}
	defer rc.Close()
	if p != nil {
		w = io.MultiWriter(w, p)
	}
	if _, err := io.Copy(w, rc); err != nil {
		return err
	}
	return nil
}

func (r *Restore) fetchBlob(ctx context.Context, key *snapshot.Key, sum, path string, p io.Writer) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := readBlob(ctx, r.Store, key, sum, io.MultiWriter(f, p)); err != nil {
		return err
	}
	return f.Close()
}

// apply writes the staged snapshot onto the device.
func (r *Restore) apply(ctx context.Context, log *slog.Logger, st *staged, local *instance.Record) error {
	rec := st.rec
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
	conn, err := r.server(local).Wait(ctx, log, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := checkMajor(ctx, conn, st.m); err != nil {
		return &RefusedError{err}
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
	if local != rec {
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
	if err := r.pgRestore(ctx, rec, st.dump); err != nil {
		return err
	}
	log.Info("database restored", "took", time.Since(start).Round(time.Second).String())
	if err := r.placeMedia(st); err != nil {
		return err
	}
	log.Info("media restored", "files", len(st.media))

	if local != rec {
		b, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		if err := instance.WriteFileAtomic(r.Dir.RecordPath(), append(b, '\n'), 0o600); err != nil {
			return err
		}
	}
	// The restored instance's backup key opens its existing backups.
	if err := instance.WriteFileAtomic(filepath.Join(r.Dir.Path, "backup-key"), []byte(st.key.String()+"\n"), 0o600); err != nil {
		return err
	}
	os.Remove(filepath.Join(r.Dir.Path, "media-hashes.json"))
	// The schema is the backup's: migrations for this release run next, and
	// the Owner exists already.
	for _, mk := range []string{instance.MarkerSeeded, instance.MarkerOwnerAnnounced} {
		if err := r.Dir.Mark(mk); err != nil {
			return err
		}
	}
	// From now on this device writes the backups; the old one stops.
	b, _ := json.MarshalIndent(snapshot.Owner{Device: r.Device, LocalDomain: rec.LocalDomain, Since: time.Now().UTC()}, "", "  ")
	if err := r.Store.Put(ctx, snapshot.OwnerKey, bytes.NewReader(b)); err != nil {
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

// pgRestore feeds the decompressed dump to pg_restore, creating every
// object as Mastodon's role.
func (r *Restore) pgRestore(ctx context.Context, rec *instance.Record, dump string) error {
	f, err := os.Open(dump)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(2))
	if err != nil {
		return err
	}
	defer zr.Close()
	srv := r.server(rec)
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
		"--role", r.Cfg.DBUser, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--username", srv.User, "--dbname", r.Cfg.DBName)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+srv.Password)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = zr, io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pg_restore: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// placeMedia moves the staged blobs to their paths (a rename within the
// media volume), copying when one blob serves several paths.
func (r *Restore) placeMedia(st *staged) error {
	uses := map[string]int{}
	for _, e := range st.media {
		uses[e.SHA256]++
	}
	for _, e := range st.media {
		if strings.Contains(e.Path, "..") || filepath.IsAbs(e.Path) {
			return fmt.Errorf("%w: media index has path %q", ErrCorrupt, e.Path)
		}
		dst := filepath.Join(r.MediaDir, filepath.FromSlash(e.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		src := filepath.Join(st.mediaAt, e.SHA256)
		var err error
		if uses[e.SHA256]--; uses[e.SHA256] == 0 {
			err = os.Rename(src, dst)
		} else {
			err = copyFile(src, dst)
		}
		if err != nil {
			return fmt.Errorf("restore media %s: %w", e.Path, err)
		}
		os.Chmod(dst, e.Mode)
		os.Chtimes(dst, e.ModTime, e.ModTime)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
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
func (r *Restore) progress(log *slog.Logger, what string, total int64) io.Writer {
	return &progressLog{log: log, term: r.Terminal, what: what, total: total, last: time.Now()}
}

type progressLog struct {
	log      *slog.Logger
	term     io.Writer
	what     string
	total    int64
	done     int64
	last     time.Time
	lastDraw time.Time
}

func (p *progressLog) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	pct := 100.0
	if p.total > 0 {
		pct = min(100, 100*float64(p.done)/float64(p.total))
	}
	if time.Since(p.last) >= 15*time.Second {
		p.last = time.Now()
		p.log.Info("downloading "+p.what, "bytes", p.done, "percent", fmt.Sprintf("%.0f", pct))
	}
	if p.term != nil && (time.Since(p.lastDraw) >= 200*time.Millisecond || p.done >= p.total) {
		p.lastDraw = time.Now()
		const width = 30
		filled := int(pct / 100 * width)
		fmt.Fprintf(p.term, "\r%-9s [%s%s] %3.0f%% %d MiB", p.what, strings.Repeat("#", filled), strings.Repeat(".", width-filled), pct, p.done>>20)
		if p.done >= p.total {
			fmt.Fprintln(p.term)
		}
	}
	return len(b), nil
}
