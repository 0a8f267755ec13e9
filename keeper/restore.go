package keeper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/postgres"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/restore"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/supervisor"
)

// RestoreOptions are what a person chooses for a restore.
type RestoreOptions struct {
	From string // a target URL; RESTORE_FROM, else BACKUP_TARGET, when empty
	// ID is the backup to restore, or Latest; "" for the newest verified.
	ID string
	// Force replaces an instance that already has data on this device.
	Force bool
	// TrustOldFormat restores format 1 (unauthenticated) backups too.
	TrustOldFormat bool
	// NoSafetyBackup skips the backup a forced restore takes first of the
	// instance it replaces.
	NoSafetyBackup bool
}

// Restore puts a backup onto this device, holding the job lock, then
// migrates it to this release, so that the services restarted next find it
// ready. A refusal changes nothing.
func (k *Keeper) Restore(ctx context.Context, o RestoreOptions) (*snapshot.Manifest, error) {
	log := k.logger("restore")
	m, err := k.restore(ctx, log, o)
	if err != nil {
		return nil, err
	}
	if err := k.Provision(ctx, false); err != nil {
		return m, fmt.Errorf("backup %s is restored, but preparing it for this Mastodon release failed: %w. The keeper tries again at its next start (restart it)", m.ID, err)
	}
	k.say("Starting Mastodon.")
	return m, nil
}

// Restored says what a restore brought back, counted in the database
// itself: "N local accounts, M statuses, K media files".
func (k *Keeper) Restored(ctx context.Context, m *snapshot.Manifest) string {
	counts := count(int64(m.MediaFiles), "media file")
	rec, err := k.S.Dir.Read()
	if err != nil {
		return counts
	}
	srv := postgres.Server{Host: k.S.Config.DBHost, Port: k.S.Config.DBPort, User: k.S.Config.DBUser, Password: rec.Secrets[instance.DBPassword]}
	c, err := srv.Connect(ctx, k.S.Config.DBName)
	if err != nil {
		return counts
	}
	defer c.Close(ctx)
	var accounts, statuses int64
	if c.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts WHERE domain IS NULL), (SELECT count(*) FROM statuses)`).Scan(&accounts, &statuses) != nil {
		return counts
	}
	return count(accounts, "local account") + ", " + count(statuses, "status") + ", " + counts
}

// count is "1 status", "2 statuses".
func count(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "s") {
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func (k *Keeper) restore(ctx context.Context, log *slog.Logger, o RestoreOptions) (*snapshot.Manifest, error) {
	if err := k.S.Err(); err != nil {
		return nil, err
	}
	from, name := o.From, "--from"
	if from == "" {
		from, name = k.S.RestoreFrom, RestoreFromVar
	}
	if from == "" {
		from, name = k.S.Target, TargetVar
	}
	if ps := checkTarget(from, name, k.S.Getenv); len(ps) > 0 {
		return nil, ps
	}
	store, err := storage.Open(ctx, from, k.S.Getenv)
	if err != nil {
		return nil, problem.Refuse(err)
	}
	device, err := k.S.Dir.DeviceID(k.S.Getenv)
	if err != nil {
		return nil, err
	}
	// Never beside a backup, a cleanup or another restore.
	unlock, err := k.lock(ctx, log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	store = storage.WithRetry(store, 5, log)
	id := o.ID
	if id == Latest {
		key, err := snapshot.OpenKey(ctx, store, k.S.Sealer)
		if err != nil {
			return nil, problem.Refuse(err)
		}
		if id, err = resolve(ctx, &snapshot.Reader{Store: store, Key: key}, id); err != nil {
			return nil, err
		}
	} else if id != "" {
		if err := snapshot.CheckID(id); err != nil {
			return nil, problem.Refuse(fmt.Errorf("--backup: %w", err))
		}
	}
	k.say("Restoring this server from a backup.")
	r := &restore.Restore{Cfg: k.S.Config, Getenv: k.S.Getenv, Dir: k.S.Dir, Store: store, Sealer: k.S.Sealer,
		BackupID: id, Force: o.Force, TrustOldFormat: o.TrustOldFormat, Device: device, MediaDir: k.S.MediaDir, MediaConcurrency: k.S.MediaConcurrency, Jobs: k.S.RestoreJobs, Log: log, Terminal: k.Terminal}
	if o.Force && !o.NoSafetyBackup && k.S.BackupsOn() && k.holdsInstance() {
		r.BeforeApply = func(ctx context.Context) error { return k.safetyBackup(ctx, log) }
	}
	return r.Run(ctx)
}

// holdsInstance says whether this device holds a provisioned instance that
// a restore would replace (not one a restore left half done).
func (k *Keeper) holdsInstance() bool {
	_, err := k.S.Dir.Read()
	return err == nil && !k.S.Dir.Has(instance.MarkerRestoring)
}

// safetyBackup backs up the instance a forced restore is about to replace,
// to BACKUP_TARGET, once the backup to restore is chosen, staged and
// checked: a restore refused never gets one, and the safety backup can
// neither become the one restored nor push it out (nothing is pruned). A
// target this device may not write to (another device took the instance
// over) gets no safety backup.
func (k *Keeper) safetyBackup(ctx context.Context, log *slog.Logger) error {
	log.Info("taking a safety backup of the instance on this device before replacing it (--no-safety-backup skips it)")
	m, err := k.backupLocked(ctx, log, false, true)
	switch {
	case errors.Is(err, snapshot.ErrNotOwner) || errors.Is(err, snapshot.ErrOtherInstance):
		log.Warn("no safety backup: " + err.Error())
	case err != nil:
		return problem.Refusef("the safety backup of the instance on this device failed, so it was not replaced: %w. Fix the cause, or restore with --no-safety-backup to go on without one", err)
	default:
		log.Info("safety backup taken: restore it to undo this restore", "safety_backup", m.ID)
	}
	return nil
}

// restoreAtFirstBoot restores from RESTORE_FROM when this device holds no
// instance yet (a new device taking over an instance), or finishes a
// restore that stopped midway.
func (k *Keeper) restoreAtFirstBoot(ctx context.Context) (restored bool, err error) {
	if k.S.RestoreFrom == "" {
		return false, nil
	}
	log := k.logger("restore")
	switch _, err := k.S.Dir.Read(); {
	case k.S.Dir.Has(instance.MarkerRestoring):
		log.Info("the restore from RESTORE_FROM did not finish last time: restoring again before anything else")
	case !errors.Is(err, instance.ErrNotProvisioned):
		return false, nil // provisioned already: said once among the settings' warnings
	default:
		log.Info("fresh device with RESTORE_FROM set: restoring the instance before anything else")
	}
	// Never with --trust-old-format: a first boot must not take a backup
	// anyone who can write to the target could have forged.
	_, err = k.restore(ctx, log, RestoreOptions{From: k.S.RestoreFrom})
	return err == nil, err
}

// appServices run with the instance's secrets and database connections:
// after a restore they must start again. (The keeper notices by itself.)
var appServices = []string{"web", "sidekiq", "streaming"}

// RestartServices restarts the application's services through the balena
// supervisor, or says how to where there is none (docker compose).
func (k *Keeper) RestartServices(ctx context.Context, out io.Writer) {
	sv := supervisor.FromEnv(k.S.Getenv)
	if sv == nil {
		fmt.Fprintf(out, "Restart %s so that they use the restored instance, e.g. docker compose restart %s\n", strings.Join(appServices, ", "), strings.Join(appServices, " "))
		return
	}
	for _, name := range appServices {
		if err := sv.RestartService(ctx, name); err != nil {
			k.logger("restore").Warn("could not restart a service; restart it from the dashboard", "service", name, "error", err.Error())
			continue
		}
		fmt.Fprintf(out, "restarted %s\n", name)
	}
}
