// Command mastokeeper provisions, launches and looks after the Mastodon
// stack on a balena device (or any Docker host). See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/launch"
	"github.com/mastodon-on-balena/mastodon-balena/mastodon"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitRefused = 3 // the configuration contradicts the instance or is invalid
)

const usage = `mastokeeper - keeps a Mastodon instance on balena provisioned and alive

Usage:
  mastokeeper run                       the keeper service: provision, then stay up
  mastokeeper provision                 provision once and exit
  mastokeeper launch mastodon -- CMD... wait for the database, then exec a Mastodon process
  mastokeeper launch postgres -- CMD... wait for the instance's passwords, then exec PostgreSQL
  mastokeeper healthcheck URL|sidekiq   container healthcheck for web, streaming, sidekiq
  mastokeeper status                    domain, versions, provisioning state (secrets redacted)
  mastokeeper config check              report every bad variable at once
  mastokeeper secrets generate          print a fresh set of secrets as KEY=value lines
  mastokeeper admin reset-password NAME give account NAME a new password
  mastokeeper tootctl ARGS...           run Mastodon's tootctl with the instance's environment
  mastokeeper backup                    take a backup now
  mastokeeper backup list               list the complete backups at BACKUP_TARGET
  mastokeeper backup verify ID          download, decrypt and check every part of backup ID
  mastokeeper backup check              the scheduled verification, now: the newest backup whole,
                                        a share of the media, damaged blobs uploaded again
  mastokeeper restore [--from URL] [--backup ID] [--force] [--trust-old-format]
                                        put a backup onto this device (the newest verified by default;
                                        --trust-old-format: also backups made before they were
                                        authenticated, only for a target no one else can write to)

Everything is configured with environment variables (balena dashboard
variables on a device); see README.md for the list.
`

func main() {
	// A soft limit keeps the garbage of streaming decryption from piling up
	// between collections on a small device; GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(48 << 20)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewTextHandler(stderr, nil))

	switch cmd, rest := args[0], args[1:]; {
	case cmd == "run" && len(rest) == 0:
		return keep(ctx, logger, stderr, true)
	case cmd == "provision" && len(rest) == 0:
		return keep(ctx, logger, stderr, false)
	case cmd == "launch" && len(rest) >= 3 && rest[1] == "--" && (rest[0] == "mastodon" || rest[0] == "postgres"):
		return launchCmd(ctx, logger.With("component", "launch", "process", rest[2]), rest[0], rest[2:])
	case cmd == "healthcheck" && len(rest) == 1:
		return healthcheck(ctx, rest[0], stderr)
	case cmd == "status" && len(rest) == 0:
		return status(stdout, stderr)
	case cmd == "config" && len(rest) == 1 && rest[0] == "check":
		return configCheck(stdout, stderr)
	case cmd == "secrets" && len(rest) == 1 && rest[0] == "generate":
		return secretsGenerate(stdout, stderr)
	case cmd == "restore":
		return restoreCmd(ctx, logger, rest, stdout, stderr)
	case cmd == "backup":
		return backupCmd(ctx, logger.With("component", "backup"), rest, stdout, stderr)
	case cmd == "admin" && len(rest) == 2 && rest[0] == "reset-password":
		return resetPassword(ctx, logger.With("component", "admin"), rest[1], stdout, stderr)
	case cmd == "tootctl":
		return tootctl(append([]string{"tootctl"}, rest...), stderr)
	case cmd == "help" || cmd == "-h" || cmd == "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "mastokeeper: unknown command or wrong arguments: %s\n\n%s", strings.Join(args, " "), usage)
	return exitUsage
}

// loadConfig reads the configuration and the device's sizing.
func loadConfig() (*config.Config, sizing.Plan, error) {
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		return nil, sizing.Plan{}, err
	}
	mem, err := sizing.MemTotal("/proc/meminfo")
	if err != nil {
		return nil, sizing.Plan{}, err
	}
	return cfg, sizing.For(mem, os.Getenv), nil
}

// keep provisions; as the service (stay) it then remains up, and on a
// refusal it stays up too, saying what to fix, rather than restart-looping.
func keep(ctx context.Context, base *slog.Logger, logOut io.Writer, stay bool) int {
	log := base.With("component", "keeper")
	cfg, plan, err := loadConfig()
	restored := false
	if err == nil {
		restored, err = restoreAtFirstBoot(ctx, base.With("component", "restore"), cfg)
	}
	if err == nil {
		// Right after a restore, the backup before migrating would be the
		// backup just restored.
		err = provision(ctx, base, logOut, cfg, plan, !restored)
	}
	switch {
	case err == nil:
		if !stay {
			return exitOK
		}
		log.Info("instance provisioned; the keeper now runs the scheduled jobs")
		if maintain(ctx, base, cfg, plan) {
			log.Info("the instance record changed (a restore): the keeper restarts to work with the restored instance")
			return exitFailed
		}
		log.Info("stopping")
		return exitOK
	case ctx.Err() != nil:
		log.Info("stopped before provisioning finished; it resumes at the next start", "error", err.Error())
		return exitFailed
	case problem.IsRefused(err):
		logLines(log, slog.LevelError, err.Error())
		if !stay {
			return exitRefused
		}
		log.Error("the keeper will not touch this instance until the problem above is fixed; changing a variable in the dashboard restarts it")
		if cfg != nil && awaitRestore(ctx, instance.Dir{Path: cfg.StateDir}) {
			log.Info("a restore onto this device finished: the keeper restarts to work with the restored instance")
			return exitFailed
		}
		<-ctx.Done()
		return exitRefused
	default:
		logLines(log, slog.LevelError, "provisioning failed: "+err.Error())
		log.Error("the keeper exits and is restarted by the engine; provisioning resumes where it stopped")
		return exitFailed
	}
}

// logLines logs a multi-line message one line at a time, so each reads
// well in the dashboard.
func logLines(log *slog.Logger, level slog.Level, msg string) {
	for _, l := range strings.Split(msg, "\n") {
		if strings.TrimSpace(l) != "" {
			log.Log(context.Background(), level, strings.TrimSpace(l))
		}
	}
}

const startedFile = "/tmp/mastokeeper-launched"

func launchCmd(ctx context.Context, log *slog.Logger, what string, argv []string) int {
	cfg, plan, err := loadConfig()
	if err == nil {
		l := &launch.Launcher{Cfg: cfg, Getenv: os.Getenv, Environ: os.Environ(), Plan: plan, Log: log,
			StartedFile: startedFile, Poll: 2 * time.Second}
		if what == "mastodon" {
			err = l.Mastodon(ctx, argv)
		} else {
			err = l.Postgres(ctx, argv)
		}
	}
	// Exec only returns on failure.
	if ctx.Err() != nil {
		return exitOK
	}
	if problem.IsRefused(err) {
		logLines(log, slog.LevelError, err.Error())
		log.Error("not starting until the problem above is fixed")
		<-ctx.Done()
		return exitRefused
	}
	log.Error(err.Error())
	return exitFailed
}

func healthcheck(ctx context.Context, target string, stderr io.Writer) int {
	cfg, err := config.Load(os.Getenv)
	if cfg == nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	h := launch.Health{StateDir: cfg.StateDir, Version: cfg.MastodonVersion, StartedFile: startedFile,
		Grace: 5 * time.Minute, SidekiqReadyFile: launch.SidekiqReadyFile(os.Getenv)}
	if err := h.Check(ctx, target); err != nil {
		fmt.Fprintln(stderr, "unhealthy:", err)
		return exitFailed
	}
	return exitOK
}

func status(stdout, stderr io.Writer) int {
	cfg, plan, err := loadConfig()
	if cfg == nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	dir := instance.Dir{Path: cfg.StateDir}
	w := func(k, v string) { fmt.Fprintf(stdout, "%-22s %s\n", k+":", v) }
	w("Mastodon (this image)", orDash(cfg.MastodonVersion))
	rec, rerr := dir.Read()
	switch {
	case errors.Is(rerr, instance.ErrNotProvisioned):
		w("Instance", "not provisioned yet (the keeper does it at its first start)")
	case rerr != nil:
		w("Instance", "unreadable: "+rerr.Error())
	default:
		domain := rec.LocalDomain
		if instance.IsPublicURLHost(domain) {
			domain += "  (balena public URL: bound to this device)"
		}
		w("Domain", domain)
		w("Provisioned", rec.CreatedAt.Format(time.RFC3339))
		for _, name := range instance.SecretNames {
			how := "generated"
			for _, a := range rec.Adopted {
				if a == name {
					how = "adopted from a variable"
				}
			}
			state := "missing"
			if rec.Secrets[name] != "" {
				state = "set [redacted], " + how
			}
			w(name, state)
		}
	}
	w("Schema seeded", yesNo(dir.Has(instance.MarkerSeeded)))
	w("Schema ready for", orDash(strings.Join(dir.ReadyVersions(), ", ")))
	w("Owner password shown", yesNo(dir.Has(instance.MarkerOwnerAnnounced)))
	w("Sizing", plan.String())
	if err != nil {
		fmt.Fprintln(stdout)
		fmt.Fprintln(stdout, err)
	}
	return exitOK
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// configCheck reports every problem at once: bad variables, an unusable
// domain, and variables contradicting the recorded instance.
func configCheck(stdout, stderr io.Writer) int {
	var problems []string
	cfg, err := config.Load(os.Getenv)
	var cfgErr problem.List
	if errors.As(err, &cfgErr) {
		for _, p := range cfgErr {
			problems = append(problems, p.String())
		}
	}
	if os.Getenv("LOCAL_DOMAIN") == "" {
		if _, _, err := instance.ResolveDomain(os.Getenv); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if rec, err := (instance.Dir{Path: cfg.StateDir}).Read(); err == nil {
		var g *instance.GuardError
		if err := instance.Guard(rec, os.Getenv); errors.As(err, &g) {
			problems = append(problems, g.Problems...)
		}
	}
	for _, p := range append(jobs.CheckSchedules(os.Getenv), jobs.CheckCleanup(os.Getenv)...) {
		problems = append(problems, p.String())
	}
	for _, p := range storage.Check(backupTarget(), os.Getenv) {
		problems = append(problems, p.String())
	}
	if _, err := retentionFromEnv(); err != nil {
		problems = append(problems, err.Error())
	}
	if err := sealerFromEnv().CheckSeal(); err != nil {
		problems = append(problems, err.Error())
	}
	if _, err := snapshot.CompressionFromEnv(os.Getenv); err != nil {
		problems = append(problems, err.Error())
	}
	if s := sealerFromEnv(); s.Passphrase == "" && s.Recipient == "" {
		fmt.Fprintln(stdout, "note: BACKUP_PASSPHRASE is not set, so no backup is taken (example: BACKUP_PASSPHRASE=\"four random words you keep elsewhere\")")
	}
	if len(problems) == 0 {
		fmt.Fprintln(stdout, "configuration OK")
		return exitOK
	}
	fmt.Fprintf(stderr, "%d problem(s):\n", len(problems))
	for _, p := range problems {
		fmt.Fprintln(stderr, "  - "+p)
	}
	return exitRefused
}

func secretsGenerate(stdout, stderr io.Writer) int {
	s, err := instance.GenerateSecrets(instance.RandomReader)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	for _, name := range instance.SecretNames {
		fmt.Fprintf(stdout, "%s=%s\n", name, s[name])
	}
	return exitOK
}

func resetPassword(ctx context.Context, log *slog.Logger, name string, stdout, stderr io.Writer) int {
	cfg, plan, err := loadConfig()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitRefused
	}
	rec, err := instance.Dir{Path: cfg.StateDir}.Read()
	if err == nil {
		err = instance.Guard(rec, os.Getenv)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitRefused
	}
	run := mastodon.Runner{Env: mastodon.Env(os.Environ(), cfg, rec, plan), Log: log}
	password, err := run.ResetPassword(ctx, name)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	jobs.WriteBanner(stdout, "New password for "+name,
		"Password: "+password,
		"Its sessions were ended; log in again with this password and change it.")
	return exitOK
}

// tootctl replaces the keeper with tootctl, which then owns the terminal:
// its output, exit code and Ctrl-C. It returns only on failure.
func tootctl(argv []string, stderr io.Writer) int {
	cfg, plan, err := loadConfig()
	if err == nil {
		// The launcher's progress lines would only clutter tootctl's output.
		l := &launch.Launcher{Cfg: cfg, Getenv: os.Getenv, Environ: os.Environ(), Plan: plan, Log: slog.New(slog.DiscardHandler)}
		err = l.Command(argv)
	}
	fmt.Fprintln(stderr, "mastokeeper tootctl:", err)
	if problem.IsRefused(err) {
		return exitRefused
	}
	return exitFailed
}

// provision brings the instance to this release: record, database,
// migrations (after a backup when backupFirst), Owner.
//
// It holds the job lock throughout: the backup before migrating needs it,
// and taking it only then, under the database's schema lock, would
// deadlock against a restore that holds the job lock and waits for the
// schema lock.
func provision(ctx context.Context, base *slog.Logger, logOut io.Writer, cfg *config.Config, plan sizing.Plan, backupFirst bool) error {
	unlock, err := lockJobs(ctx, instance.Dir{Path: cfg.StateDir}, base.With("component", "keeper"))
	if err != nil {
		return err
	}
	defer unlock()
	p := &jobs.Provisioner{Cfg: cfg, Getenv: os.Getenv, Environ: os.Environ(), Plan: plan, Log: base.With("component", "keeper"), Banner: logOut}
	if backupFirst {
		p.BeforeMigrate = func(ctx context.Context) error { return backupBeforeMigrate(ctx, base.With("component", "backup")) }
	}
	return p.Run(ctx)
}

// errRecordChanged: the instance record was replaced under the keeper.
var errRecordChanged = errors.New("the instance record changed")

// awaitRestore returns true once a restore (in a terminal, next to the
// keeper) has finished since the call: the instance record changed, or a
// restore that was unfinished is done. The keeper's jobs hold the old
// record; a keeper refused for an unfinished restore has nothing to run.
func awaitRestore(ctx context.Context, dir instance.Dir) bool {
	state := func() (string, bool) {
		b, _ := os.ReadFile(dir.RecordPath())
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

// maintain runs the scheduled jobs (backup, media cleanup) and the
// disk-pressure guard until ctx is done. A bad schedule or cleanup variable
// is logged and disables only what it concerns.
func maintain(ctx context.Context, base *slog.Logger, cfg *config.Config, plan sizing.Plan) (recordChanged bool) {
	dir := instance.Dir{Path: cfg.StateDir}
	jlog := base.With("component", "jobs")
	rec, err := dir.Read()
	if err != nil {
		jlog.Error("scheduled jobs are off: " + err.Error())
		<-ctx.Done()
		return false
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		if awaitRestore(ctx, dir) {
			cancel(errRecordChanged)
		}
	}()
	run := mastodon.Runner{Env: mastodon.Env(os.Environ(), cfg, rec, plan), Log: jlog}
	cleanup, problems := jobs.NewCleanup(os.Getenv, run, jlog)
	for _, p := range problems {
		jlog.Error(p.String(), "variable", p.Var)
	}
	backup := jobs.Job{Name: "backup", Var: jobs.BackupScheduleVar, Default: jobs.DefaultBackupSchedule,
		Run: func(ctx context.Context) error { return scheduledBackup(ctx, base.With("component", "backup")) }}
	verify := jobs.Job{Name: "verification", Var: jobs.VerifyScheduleVar, Default: jobs.DefaultVerifySchedule,
		Run: func(ctx context.Context) error { return scheduledVerify(ctx, base.With("component", "verify")) }}
	sched, _ := jobs.NewScheduler(os.Getenv, dir, jlog, append(cleanup.Jobs(), backup, verify)...) // Run logs its problems
	sched.Background("disk-pressure guard", cleanup.Guard)
	if err := sched.Run(ctx); err != nil {
		jlog.Warn(err.Error())
	}
	return errors.Is(context.Cause(ctx), errRecordChanged)
}
