package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/restore"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
	_ "github.com/mastodon-on-balena/mastodon-balena/storage/all" // every backend
	"github.com/mastodon-on-balena/mastodon-balena/supervisor"
)

const defaultBackupTarget = "file:///backups"

// backupEnv is what every backup command needs: the instance, its target
// and its backup key.
type backupEnv struct {
	cfg    *config.Config
	rec    *instance.Record
	dir    instance.Dir
	store  storage.Store
	key    *snapshot.Key
	sealer snapshot.Sealer
	device string
	level  zstd.EncoderLevel
}

func sealerFromEnv() snapshot.Sealer {
	return snapshot.Sealer{
		Passphrase: os.Getenv("BACKUP_PASSPHRASE"),
		Recipient:  os.Getenv("BACKUP_AGE_RECIPIENT"),
		Identity:   os.Getenv("BACKUP_AGE_IDENTITY"),
	}
}

func backupTarget() string {
	if t := os.Getenv("BACKUP_TARGET"); t != "" {
		return t
	}
	return defaultBackupTarget
}

func openBackupEnv(ctx context.Context, log *slog.Logger) (*backupEnv, error) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return nil, err
	}
	dir := instance.Dir{Path: cfg.StateDir}
	rec, err := dir.Read()
	if err != nil {
		return nil, fmt.Errorf("%w (the keeper provisions the instance at its first start)", err)
	}
	if err := instance.Guard(rec, os.Getenv); err != nil {
		return nil, err
	}
	level, err := jobs.CompressionFromEnv(os.Getenv)
	if err != nil {
		return nil, &jobs.RefusedError{Err: err}
	}
	store, err := storage.Open(ctx, backupTarget(), os.Getenv)
	if err != nil {
		return nil, err
	}
	store = storage.WithRetry(store, 5, log)
	keyText, err := dir.BackupKey(func() (string, error) {
		k, err := snapshot.NewKey()
		if err != nil {
			return "", err
		}
		return k.String(), nil
	})
	if err != nil {
		return nil, err
	}
	key, err := snapshot.ParseKey(keyText)
	if err != nil {
		return nil, err
	}
	device, err := dir.DeviceID(os.Getenv)
	if err != nil {
		return nil, err
	}
	return &backupEnv{cfg: cfg, rec: rec, dir: dir, store: store, key: key, sealer: sealerFromEnv(), device: device, level: level}, nil
}

func (e *backupEnv) job(log *slog.Logger) *jobs.Backup {
	return &jobs.Backup{
		Cfg: e.cfg, Rec: e.rec, Dir: e.dir, Store: e.store, Key: e.key, Sealer: e.sealer, Device: e.device,
		MediaDir: mediaDir(), MastodonVersion: e.cfg.MastodonVersion, Compression: e.level, Log: log,
	}
}

func verifiedMarker(id string) string { return "verified-" + id }

// backupNow is what `backup` and the schedule run: a backup, a check that
// its own objects read back whole, then the retention policy.
func (e *backupEnv) backupNow(ctx context.Context, log *slog.Logger) (*snapshot.Manifest, error) {
	ret, err := retentionFromEnv()
	if err != nil {
		return nil, &jobs.RefusedError{Err: err}
	}
	m, err := e.job(log).Run(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := restore.Verify(ctx, e.store, e.key, m.ID, false); err != nil {
		return m, fmt.Errorf("the new backup %s does not read back whole: %w", m.ID, err)
	}
	if err := e.dir.Mark(verifiedMarker(m.ID)); err != nil {
		return m, err
	}
	verified := func(id string) bool { return e.dir.Has(verifiedMarker(id)) }
	if err := jobs.Prune(ctx, e.store, ret, e.rec.LocalDomain, verified, log, time.Now()); err != nil {
		return m, err
	}
	return m, e.forgetVerified(ctx)
}

// forgetVerified removes the verified markers of backups no longer on the
// target, which would otherwise pile up, one per backup ever taken.
func (e *backupEnv) forgetVerified(ctx context.Context) error {
	objs, err := e.store.List(ctx, snapshot.SnapshotsPrefix)
	if err != nil {
		return err
	}
	present := map[string]bool{}
	for _, o := range objs {
		if id, ok := snapshot.ParseManifestKey(o.Key); ok {
			present[verifiedMarker(id)] = true
		}
	}
	names, err := e.dir.Markers()
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, verifiedMarker("")) && !present[n] {
			if err := e.dir.Unmark(n); err != nil {
				return err
			}
		}
	}
	return nil
}

// retentionFromEnv reads BACKUP_KEEP_DAILY and BACKUP_KEEP_WEEKLY.
func retentionFromEnv() (jobs.Retention, error) {
	r := jobs.Retention{Daily: 7, Weekly: 4}
	for _, v := range []struct {
		name string
		dst  *int
	}{{"BACKUP_KEEP_DAILY", &r.Daily}, {"BACKUP_KEEP_WEEKLY", &r.Weekly}} {
		if s := os.Getenv(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > 1000 {
				return r, fmt.Errorf("%s is %q; it must be a whole number from 0 to 1000 (example: %s=7)", v.name, s, v.name)
			}
			*v.dst = n
		}
	}
	return r, nil
}

// scheduledBackup is the backup job of the schedule; without a passphrase
// or age key there is nothing it may do, and it says so.
func scheduledBackup(ctx context.Context, log *slog.Logger) error {
	if s := sealerFromEnv(); s.Passphrase == "" && s.Recipient == "" {
		log.Warn("no backup taken: set BACKUP_PASSPHRASE (and BACKUP_TARGET) to have one taken on schedule")
		return nil
	}
	e, err := openBackupEnv(ctx, log)
	if err != nil {
		return err
	}
	_, err = e.backupNow(ctx, log)
	return err
}

// backupBeforeMigrate takes a backup before an upgrade's migrations, when
// backups can be opened elsewhere (a passphrase or an age key is set).
func backupBeforeMigrate(ctx context.Context, log *slog.Logger) error {
	if s := sealerFromEnv(); s.Passphrase == "" && s.Recipient == "" {
		log.Warn("no backup before migrating: set BACKUP_PASSPHRASE to have one taken before every upgrade")
		return nil
	}
	log.Info("taking a backup before migrating")
	e, err := openBackupEnv(ctx, log)
	if err != nil {
		return err
	}
	_, err = e.backupNow(ctx, log)
	return err
}

func mediaDir() string {
	if d := os.Getenv("MEDIA_DIR"); d != "" {
		return d
	}
	return "/opt/mastodon/public/system"
}

// backupCmd: backup | backup list | backup verify ID.
func backupCmd(ctx context.Context, log *slog.Logger, args []string, stdout, stderr io.Writer) int {
	e, err := openBackupEnv(ctx, log)
	if err != nil {
		fmt.Fprintln(stderr, "mastokeeper backup:", err)
		return exitRefused
	}
	switch {
	case len(args) == 0:
		// Never beside a scheduled job of the keeper service.
		unlock, err := jobs.LockJobs(ctx, e.dir)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup:", err)
			return exitFailed
		}
		defer unlock()
		m, err := e.backupNow(ctx, log)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup:", err)
			var refused *jobs.RefusedError
			if errors.As(err, &refused) {
				return exitRefused
			}
			return exitFailed
		}
		fmt.Fprintf(stdout, "backup %s complete: %s stored, %d media files\n", m.ID, jobs.FormatBytes(uint64(m.Size())), m.MediaFiles)
		return exitOK
	case len(args) == 1 && args[0] == "list":
		ms, err := restore.List(ctx, e.store)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup list:", err)
			return exitFailed
		}
		if len(ms) == 0 {
			fmt.Fprintf(stdout, "no complete backup at %s\n", e.store)
			return exitOK
		}
		fmt.Fprintf(stdout, "%-17s  %-20s  %-10s  %-9s  %s\n", "ID", "TAKEN (UTC)", "STORED", "MASTODON", "MEDIA FILES")
		for _, m := range ms {
			fmt.Fprintf(stdout, "%-17s  %-20s  %-10s  %-9s  %d\n", m.ID, m.CreatedAt.UTC().Format(time.DateTime), jobs.FormatBytes(uint64(m.Size())), m.MastodonVersion, m.MediaFiles)
		}
		return exitOK
	case len(args) == 2 && args[0] == "verify":
		m, err := restore.Verify(ctx, e.store, e.key, args[1], true)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup verify:", err)
			return exitFailed
		}
		if err := e.dir.Mark(verifiedMarker(m.ID)); err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup verify:", err)
			return exitFailed
		}
		fmt.Fprintf(stdout, "backup %s verified: every checksum matches, everything decrypts, pg_restore reads the dump (%d objects, %d media blobs)\n",
			m.ID, len(m.Objects), len(m.MediaBlobs))
		return exitOK
	}
	fmt.Fprint(stderr, usage)
	return exitUsage
}

// restoreCmd: restore [--from URL] [--backup ID] [--force].
func restoreCmd(ctx context.Context, base *slog.Logger, args []string, stdout, stderr io.Writer) int {
	log := base.With("component", "restore")
	from, id, force := os.Getenv("RESTORE_FROM"), "", false
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--force":
			force = true
		case (args[i] == "--from" || args[i] == "--backup") && i+1 < len(args):
			if args[i] == "--from" {
				from = args[i+1]
			} else {
				id = args[i+1]
			}
			i++
		default:
			fmt.Fprintf(stderr, "mastokeeper restore: unknown argument %q (usage: mastokeeper restore [--from s3://bucket/prefix] [--backup 20261128T031500Z] [--force])\n", args[i])
			return exitUsage
		}
	}
	if id != "" {
		if err := snapshot.CheckID(id); err != nil {
			fmt.Fprintln(stderr, "mastokeeper restore: --backup:", err)
			return exitUsage
		}
	}
	m, err := runRestore(ctx, log, from, id, force)
	if err != nil {
		fmt.Fprintln(stderr, "mastokeeper restore:", err)
		var refused *restore.RefusedError
		var cfgErr *config.Error
		if errors.As(err, &refused) || errors.As(err, &cfgErr) {
			return exitRefused
		}
		return exitFailed
	}
	// Migrate the restored schema to this release now, so that the services
	// restarted next find it ready.
	cfg, plan, err := loadConfig()
	if err == nil {
		err = provision(ctx, base, stderr, cfg, plan, false)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mastokeeper restore: backup %s is restored, but preparing it for this Mastodon release failed: %v. The keeper tries again at its next start (restart it).\n", m.ID, err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "restored backup %s of %s.\n", m.ID, m.LocalDomain)
	restartServices(ctx, log, stdout)
	return exitOK
}

// appServices run with the instance's secrets and database connections:
// after a restore they must start again. (The keeper notices by itself.)
var appServices = []string{"web", "sidekiq", "streaming"}

// restartServices restarts the application's services through the balena
// supervisor, or says how to where there is none (docker compose).
func restartServices(ctx context.Context, log *slog.Logger, stdout io.Writer) {
	sv := supervisor.FromEnv(os.Getenv)
	if sv == nil {
		fmt.Fprintf(stdout, "Restart %s so that they use the restored instance, e.g. docker compose restart %s\n", strings.Join(appServices, ", "), strings.Join(appServices, " "))
		return
	}
	for _, name := range appServices {
		if err := sv.RestartService(ctx, name); err != nil {
			log.Warn("could not restart a service; restart it from the dashboard", "service", name, "error", err.Error())
			continue
		}
		fmt.Fprintf(stdout, "restarted %s\n", name)
	}
}

// runRestore restores from (a target URL; BACKUP_TARGET when empty).
func runRestore(ctx context.Context, log *slog.Logger, from, id string, force bool) (*snapshot.Manifest, error) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return nil, err
	}
	if from == "" {
		from = backupTarget()
	}
	store, err := storage.Open(ctx, from, os.Getenv)
	if err != nil {
		return nil, &restore.RefusedError{Err: err}
	}
	dir := instance.Dir{Path: cfg.StateDir}
	device, err := dir.DeviceID(os.Getenv)
	if err != nil {
		return nil, err
	}
	r := &restore.Restore{Cfg: cfg, Getenv: os.Getenv, Dir: dir, Store: storage.WithRetry(store, 5, log), Sealer: sealerFromEnv(),
		BackupID: id, Force: force, Device: device, MediaDir: mediaDir(), Log: log}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		r.Terminal = os.Stderr
	}
	return r.Run(ctx)
}

// restoreAtFirstBoot restores from RESTORE_FROM when this device holds no
// instance yet: a new device taking over an instance.
func restoreAtFirstBoot(ctx context.Context, log *slog.Logger, cfg *config.Config) (restored bool, err error) {
	from := os.Getenv("RESTORE_FROM")
	if from == "" {
		return false, nil
	}
	dir := instance.Dir{Path: cfg.StateDir}
	switch _, err := dir.Read(); {
	case dir.Has(instance.MarkerRestoring):
		log.Info("the restore from RESTORE_FROM did not finish last time: restoring again before anything else")
	case !errors.Is(err, instance.ErrNotProvisioned):
		return false, nil // provisioned already: RESTORE_FROM only acts on a fresh device
	default:
		log.Info("fresh device with RESTORE_FROM set: restoring the instance before anything else")
	}
	_, err = runRestore(ctx, log, from, "", false)
	return err == nil, err
}
