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
	"github.com/mastodon-on-balena/mastodon-balena/problem"
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
	rec, err := dir.EnsureInstanceID(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w (the keeper provisions the instance at its first start)", err)
	}
	if err := instance.Guard(rec, os.Getenv); err != nil {
		return nil, err
	}
	level, err := snapshot.CompressionFromEnv(os.Getenv)
	if err != nil {
		return nil, &problem.Refused{Err: err}
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

func (e *backupEnv) job(log *slog.Logger) *snapshot.Backup {
	return &snapshot.Backup{
		Cfg: e.cfg, Rec: e.rec, Dir: e.dir, Store: e.store, Key: e.key, Sealer: e.sealer, Device: e.device,
		MediaDir: mediaDir(), MastodonVersion: e.cfg.MastodonVersion, Compression: e.level, Log: log,
	}
}

func (e *backupEnv) reader() *snapshot.Reader { return &snapshot.Reader{Store: e.store, Key: e.key} }

// backupNow is what `backup`, the schedule and an upgrade run, holding the
// job lock: a backup, a read-back of everything it wrote (its own objects
// and the media blobs it uploaded), recorded on the target as verified,
// then the retention policy.
func (e *backupEnv) backupNow(ctx context.Context, log *slog.Logger) (*snapshot.Manifest, error) {
	ret, err := retentionFromEnv()
	if err != nil {
		return nil, &problem.Refused{Err: err}
	}
	res, err := e.job(log).Run(ctx)
	if err != nil {
		return nil, err
	}
	m := res.Manifest
	if _, err := e.reader().Verify(ctx, m.ID, snapshot.MediaSelection{Blobs: res.Uploaded}); err != nil {
		return m, fmt.Errorf("the new backup %s does not read back whole: %w", m.ID, err)
	}
	if err := snapshot.MarkVerified(ctx, e.store, e.key, m, false, time.Now()); err != nil {
		return m, err
	}
	if err := snapshot.Prune(ctx, e.store, e.key, ret, e.rec.InstanceID, log, time.Now()); err != nil {
		return m, err
	}
	e.forgetOldMarkers()
	return m, nil
}

// forgetOldMarkers removes the verified-<id> markers that releases before
// authenticated backups kept on the device: verification is recorded on
// the target now, where a new device finds it.
func (e *backupEnv) forgetOldMarkers() {
	names, _ := e.dir.Markers()
	for _, n := range names {
		if strings.HasPrefix(n, "verified-") {
			e.dir.Unmark(n)
		}
	}
}

// retentionFromEnv reads BACKUP_KEEP_DAILY and BACKUP_KEEP_WEEKLY.
func retentionFromEnv() (snapshot.Retention, error) {
	r := snapshot.Retention{Daily: 7, Weekly: 4}
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

// scheduledBackup is the backup job of the schedule (which holds the job
// lock); without a passphrase or age key there is nothing it may do, and it
// says so.
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

// verifyShares: the scheduled verification reads one share in this many of
// the stored media blobs each time, so all of them within eight runs.
const verifyShares = 8

// scheduledVerify is the verification job of the schedule (which holds the
// job lock).
func scheduledVerify(ctx context.Context, log *slog.Logger) error {
	if s := sealerFromEnv(); s.Passphrase == "" && s.Recipient == "" {
		return nil // no backups are taken: nothing to verify
	}
	e, err := openBackupEnv(ctx, log)
	if err != nil {
		return err
	}
	_, err = e.check(ctx, log)
	return err
}

// check verifies what the target holds: the newest backup read back whole,
// a rotating share of the media, damaged blobs replaced from the device,
// and the sealed key opened with the passphrase - what a new device would
// need. The caller holds the job lock.
func (e *backupEnv) check(ctx context.Context, log *slog.Logger) (*snapshot.Check, error) {
	c, err := e.job(log).VerifyStored(ctx, verifyShares)
	if err != nil {
		return c, fmt.Errorf("verification of the backups at %s: %w", e.store, err)
	}
	if c.Newest == "" {
		log.Info("no backup to verify yet", "target", e.store.String())
		return c, nil
	}
	if e.sealer.Passphrase != "" {
		k, err := snapshot.OpenKey(ctx, e.store, e.sealer)
		if err == nil && k.String() != e.key.String() {
			err = errors.New("it opens to another key than this instance's")
		}
		if err != nil {
			return c, fmt.Errorf("the sealed backup key at %s does not open with BACKUP_PASSPHRASE: a new device could not restore these backups. The next backup seals it again (%w)", e.store, err)
		}
	}
	log.Info("backups verified", "newest", c.Newest, "media_blobs_read", c.Blobs, "repaired", len(c.Repaired))
	return c, nil
}

// backupBeforeMigrate takes a backup before an upgrade's migrations, when
// backups can be opened elsewhere (a passphrase or an age key is set).
// Provisioning holds the job lock.
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

// lockJobs takes the job lock that every job touching the instance or the
// target holds, saying so when it has to wait.
func lockJobs(ctx context.Context, dir instance.Dir, log *slog.Logger) (func(), error) {
	return jobs.LockJobsWaiting(ctx, dir, func() {
		log.Info("waiting for the job that is running (a backup, restore or cleanup) to finish")
	})
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
		// Never beside another job of the keeper service or a terminal.
		unlock, err := lockJobs(ctx, e.dir, log)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup:", err)
			return exitFailed
		}
		defer unlock()
		m, err := e.backupNow(ctx, log)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup:", err)
			if problem.IsRefused(err) {
				return exitRefused
			}
			return exitFailed
		}
		fmt.Fprintf(stdout, "backup %s complete: %s stored, %d media files\n", m.ID, jobs.FormatBytes(uint64(m.Size())), m.MediaFiles)
		return exitOK
	case len(args) == 1 && args[0] == "list":
		return backupList(ctx, e, stdout, stderr)
	case len(args) == 1 && args[0] == "check":
		unlock, err := lockJobs(ctx, e.dir, log)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup check:", err)
			return exitFailed
		}
		defer unlock()
		c, err := e.check(ctx, log)
		if err != nil {
			fmt.Fprintln(stderr, "mastokeeper backup check:", err)
			return exitFailed
		}
		if c.Newest == "" {
			fmt.Fprintf(stdout, "no backup at %s to check\n", e.store)
			return exitOK
		}
		fmt.Fprintf(stdout, "backups checked: %s read back whole, %d media blobs read (one share of %d), %d damaged blob(s) uploaded again from this device\n", c.Newest, c.Blobs, verifyShares, len(c.Repaired))
		return exitOK
	case len(args) == 2 && args[0] == "verify":
		return backupVerify(ctx, e, log, args[1], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return exitUsage
}

func backupList(ctx context.Context, e *backupEnv, stdout, stderr io.Writer) int {
	rd := e.reader()
	l, err := rd.List(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "mastokeeper backup list:", err)
		return exitFailed
	}
	if len(l.Snapshots)+len(l.Old)+len(l.Unreadable) == 0 {
		fmt.Fprintf(stdout, "no complete backup at %s\n", e.store)
		return exitOK
	}
	fmt.Fprintf(stdout, "%-24s  %-20s  %-10s  %-9s  %-11s  %s\n", "ID", "TAKEN (UTC)", "STORED", "MASTODON", "MEDIA FILES", "STATE")
	for _, m := range l.Snapshots {
		state := "not verified"
		if rd.Verified(ctx, l, m.ID) {
			state = "verified"
		}
		fmt.Fprintf(stdout, "%-24s  %-20s  %-10s  %-9s  %-11d  %s\n", m.ID, m.CreatedAt.UTC().Format(time.DateTime), jobs.FormatBytes(uint64(m.Size())), m.MastodonVersion, m.MediaFiles, state)
	}
	for _, m := range l.Old {
		fmt.Fprintf(stdout, "%-24s  %-20s  %-10s  %-9s  %-11d  %s\n", m.ID, m.CreatedAt.UTC().Format(time.DateTime), jobs.FormatBytes(uint64(m.Size())), m.MastodonVersion, m.MediaFiles, "old format: unauthenticated (restore needs --trust-old-format)")
	}
	for _, u := range l.Unreadable {
		fmt.Fprintf(stdout, "%-24s  unusable: %v\n", u.ID, u.Err)
	}
	return exitOK
}

// backupVerify reads a whole backup back, media included, and opens the
// target's sealed key with the passphrase: "verified" means a new device
// holding only the passphrase could restore it.
func backupVerify(ctx context.Context, e *backupEnv, log *slog.Logger, id string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(stderr, "mastokeeper backup verify:", err)
		return exitFailed
	}
	if err := snapshot.CheckID(id); err != nil {
		fmt.Fprintln(stderr, "mastokeeper backup verify:", err)
		return exitUsage
	}
	unlock, err := lockJobs(ctx, e.dir, log)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	m, err := e.reader().Verify(ctx, id, snapshot.MediaSelection{All: true})
	if err != nil {
		return fail(err)
	}
	if e.sealer.Passphrase != "" || e.sealer.Identity != "" {
		k, err := snapshot.OpenKey(ctx, e.store, e.sealer)
		if err != nil {
			return fail(fmt.Errorf("the backup reads back, but the sealed key on the target does not open: a new device could not restore it: %w", err))
		}
		if k.String() != e.key.String() {
			return fail(errors.New("the backup reads back, but the sealed key on the target opens to another key than this instance's: a new device could not restore it. The next backup seals the right one"))
		}
	}
	if err := snapshot.MarkVerified(ctx, e.store, e.key, m, true, time.Now()); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "backup %s verified: every checksum matches, everything decrypts, pg_restore reads the dump, the passphrase opens the key (%d objects, %d media blobs)\n",
		m.ID, len(m.Objects), len(m.MediaBlobs))
	return exitOK
}

// restoreCmd: restore [--from URL] [--backup ID] [--force].
func restoreCmd(ctx context.Context, base *slog.Logger, args []string, stdout, stderr io.Writer) int {
	log := base.With("component", "restore")
	from, id, force, trustOld := os.Getenv("RESTORE_FROM"), "", false, false
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--force":
			force = true
		case args[i] == "--trust-old-format":
			trustOld = true
		case (args[i] == "--from" || args[i] == "--backup") && i+1 < len(args):
			if args[i] == "--from" {
				from = args[i+1]
			} else {
				id = args[i+1]
			}
			i++
		default:
			fmt.Fprintf(stderr, "mastokeeper restore: unknown argument %q (usage: mastokeeper restore [--from s3://bucket/prefix] [--backup 20261128T031500.000Z] [--force] [--trust-old-format])\n", args[i])
			return exitUsage
		}
	}
	if id != "" {
		if err := snapshot.CheckID(id); err != nil {
			fmt.Fprintln(stderr, "mastokeeper restore: --backup:", err)
			return exitUsage
		}
	}
	m, err := runRestore(ctx, log, from, id, force, trustOld)
	if err != nil {
		fmt.Fprintln(stderr, "mastokeeper restore:", err)
		if problem.IsRefused(err) {
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
func runRestore(ctx context.Context, log *slog.Logger, from, id string, force, trustOld bool) (*snapshot.Manifest, error) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return nil, err
	}
	if from == "" {
		from = backupTarget()
	}
	store, err := storage.Open(ctx, from, os.Getenv)
	if err != nil {
		return nil, &problem.Refused{Err: err}
	}
	dir := instance.Dir{Path: cfg.StateDir}
	device, err := dir.DeviceID(os.Getenv)
	if err != nil {
		return nil, err
	}
	// Never beside a backup, a cleanup or another restore.
	unlock, err := lockJobs(ctx, dir, log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r := &restore.Restore{Cfg: cfg, Getenv: os.Getenv, Dir: dir, Store: storage.WithRetry(store, 5, log), Sealer: sealerFromEnv(),
		BackupID: id, Force: force, TrustOldFormat: trustOld, Device: device, MediaDir: mediaDir(), Log: log}
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
	// Never with --trust-old-format: a first boot must not take a backup
	// anyone who can write to the target could have forged.
	_, err = runRestore(ctx, log, from, "", false, false)
	return err == nil, err
}
