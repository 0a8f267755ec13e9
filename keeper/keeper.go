package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/mastodon"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Keeper runs the keeper's jobs with one set of Settings.
type Keeper struct {
	S *Settings
	// Log is the base logger; each part logs with its own component.
	Log *slog.Logger
	// Banner receives framed one-time messages (the Owner's password): the
	// keeper's log stream.
	Banner io.Writer
	// Terminal, when set, gets progress bars: a person at a terminal.
	Terminal io.Writer
}

func (k *Keeper) logger(component string) *slog.Logger { return k.Log.With("component", component) }

// ErrRestart means the keeper service must exit so that the engine starts
// it again: the instance was replaced under it (a restore).
var ErrRestart = errors.New("the instance record changed (a restore): the keeper restarts to work with the restored instance")

// lock takes the job lock that every job touching the instance or the
// target holds, saying so when it has to wait.
func (k *Keeper) lock(ctx context.Context, log *slog.Logger) (func(), error) {
	return jobs.LockJobsWaiting(ctx, k.S.Dir, func() {
		log.Info("waiting for the job that is running (a backup, restore or cleanup) to finish")
	})
}

// Serve is the keeper service: restore at first boot when RESTORE_FROM
// says so, provision, then run the scheduled jobs until ctx is done. With
// stay false it returns once provisioned. A refusal is returned at once
// when !stay; as the service it is logged and Serve waits - rather than
// restart-looping - until ctx is done or a restore in a terminal fixes it
// (then ErrRestart).
func (k *Keeper) Serve(ctx context.Context, stay bool) error {
	log := k.logger("keeper")
	for _, w := range k.S.Warnings {
		log.Warn(w)
	}
	k.logDoorProblems(log)
	if k.S.BackupsOn() && k.S.TargetDefault {
		log.Warn("backups go to this device's own disk (" + DefaultTarget + "): they guard against mistakes, not against a dead SD card or disk. " +
			"Set BACKUP_TARGET to a place off this device (example: BACKUP_TARGET=s3://my-bucket/mastodon)")
	}
	k.say("Starting.")
	err := k.S.Err()
	restored := false
	if err == nil {
		restored, err = k.restoreAtFirstBoot(ctx)
	}
	if err == nil {
		// Right after a restore, the backup before migrating would be the
		// backup just restored.
		err = k.Provision(ctx, !restored)
	}
	switch {
	case err == nil:
		k.say("Starting Mastodon.")
		if !stay {
			return nil
		}
		log.Info("instance provisioned; the keeper now runs the scheduled jobs")
		if err := k.maintain(ctx); err != nil {
			log.Info(err.Error())
			return err
		}
		log.Info("stopping")
		return nil
	case ctx.Err() != nil:
		log.Info("stopped before provisioning finished; it resumes at the next start", "error", err.Error())
		return err
	case problem.IsRefused(err):
		if !stay {
			return err
		}
		LogLines(log, slog.LevelError, err.Error())
		log.Error("the keeper will not touch this instance until the problem above is fixed; changing a variable in the dashboard restarts it")
		k.say("Waiting for its administrator: a setting needs fixing.")
		if awaitRestore(ctx, k.S.Dir) {
			log.Info("a restore onto this device finished: the keeper restarts to work with the restored instance")
			return ErrRestart
		}
		return err
	default:
		LogLines(log, slog.LevelError, "provisioning failed: "+err.Error())
		log.Error("the keeper exits and is restarted by the engine; provisioning resumes where it stopped")
		return err
	}
}

// LogLines logs a multi-line message one line at a time, so each reads
// well in the dashboard.
func LogLines(log *slog.Logger, level slog.Level, msg string) {
	for _, l := range strings.Split(msg, "\n") {
		if strings.TrimSpace(l) != "" {
			log.Log(context.Background(), level, strings.TrimSpace(l))
		}
	}
}

// Provision brings the instance to this release: record, database,
// migrations (after a backup when backupFirst), Owner.
//
// It holds the job lock throughout: the backup before migrating needs it,
// and taking it only then, under the database's schema lock, would
// deadlock against a restore that holds the job lock and waits for the
// schema lock.
func (k *Keeper) Provision(ctx context.Context, backupFirst bool) error {
	if err := k.S.Err(); err != nil {
		return err
	}
	log := k.logger("keeper")
	unlock, err := k.lock(ctx, log)
	if err != nil {
		return err
	}
	defer unlock()
	p := &jobs.Provisioner{Cfg: k.S.Config, Getenv: k.S.Getenv, Environ: k.S.Environ, Plan: k.S.Plan, Log: log, Banner: k.Banner, Step: k.say}
	if backupFirst {
		p.BeforeMigrate = k.backupBeforeMigrate
	}
	return p.Run(ctx)
}

// awaitRestore returns true once a restore (in a terminal, next to the
// keeper) has finished since the call: the instance record changed, or a
// restore that was unfinished is done. The keeper's jobs hold the old
// record; a keeper refused for an unfinished restore has nothing to run.
func awaitRestore(ctx context.Context, dir instance.Dir) bool {
	state := func() (string, bool) {
		rec, err := dir.Read()
		if err != nil {
			return err.Error(), dir.Has(instance.MarkerRestoring)
		}
		rec.Onion = nil // adopted by this keeper itself, not brought by a restore
		b, _ := json.Marshal(rec)
		return string(b), dir.Has(instance.MarkerRestoring)
	}
	record, restoring := state()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Second):
		}
		if r, now := state(); !now && (restoring || r != record) {
			return true
		}
	}
}

// watchAlerts says every lasting alert at the start, then checks them every
// few minutes: an overdue backup or a daily repeat has no event of its own.
func (k *Keeper) watchAlerts(ctx context.Context) {
	k.AnnounceAlerts(time.Now())
	for {
		k.CheckAlerts(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-time.After(alertCheckEvery):
		}
	}
}

// alertCheckEvery is how often the keeper service looks at the alerts.
var alertCheckEvery = 10 * time.Minute

// maintain runs the scheduled jobs (backup, its verification, media
// cleanup) and the disk-pressure guard until ctx is done. A bad schedule or
// cleanup variable is logged and disables only what it concerns. It
// returns ErrRestart when a restore replaced the instance meanwhile.
func (k *Keeper) maintain(ctx context.Context) error {
	jlog := k.logger("jobs")
	rec, err := k.S.Dir.Read()
	if err != nil {
		jlog.Error("scheduled jobs are off: " + err.Error())
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if awaitRestore(ctx, k.S.Dir) {
			cancel(ErrRestart)
		}
	}()
	run := mastodon.Runner{Env: mastodon.Env(k.S.Environ, k.S.Config, rec, k.S.Plan), Log: jlog}
	cleanup, problems := jobs.NewCleanup(k.S.Getenv, run, jlog)
	for _, p := range problems {
		jlog.Error(p.String(), "variable", p.Var)
	}
	backup := jobs.Job{Name: "backup", Var: jobs.BackupScheduleVar, Default: jobs.DefaultBackupSchedule, Run: k.scheduledBackup}
	verify := jobs.Job{Name: "verification", Var: jobs.VerifyScheduleVar, Default: jobs.DefaultVerifySchedule, Run: k.scheduledVerify}
	cleanup.OnDisk = func(sp jobs.DiskSpace, low bool) { k.recordDisk(sp, low, cleanup.FreeMin.String()) }
	sched, _ := jobs.NewScheduler(k.S.Getenv, k.S.Dir, jlog, append(cleanup.Jobs(), backup, verify)...) // Run logs its problems
	sched.Observer = k
	sched.Background("disk-pressure guard", cleanup.Guard)
	sched.Background("alerts", k.watchAlerts)
	sched.Background("onion service", k.watchOnion)
	if err := sched.Run(ctx); err != nil {
		jlog.Warn(err.Error())
	}
	if errors.Is(context.Cause(ctx), ErrRestart) {
		return ErrRestart
	}
	return nil
}
