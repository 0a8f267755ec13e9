package keeper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
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
	return m, nil
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
	if ps := storage.Check(from, k.S.Getenv); len(ps) > 0 {
		for i := range ps {
			if ps[i].Var == TargetVar {
				ps[i].Var, ps[i].Example = name, strings.Replace(ps[i].Example, TargetVar, name, 1)
			}
		}
		return nil, problem.List(ps)
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
	r := &restore.Restore{Cfg: k.S.Config, Getenv: k.S.Getenv, Dir: k.S.Dir, Store: store, Sealer: k.S.Sealer,
		BackupID: id, Force: o.Force, TrustOldFormat: o.TrustOldFormat, Device: device, MediaDir: k.S.MediaDir, Log: log, Terminal: k.Terminal}
	return r.Run(ctx)
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
