// Package launch starts the stack's long-running processes - Mastodon's
// web, sidekiq and streaming, and PostgreSQL - once the keeper has made
// ready what they need, with the instance's environment - and an admin's
// one-off tootctl. It replaces itself with the process (exec), so signals
// reach it directly.
package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/mastodon"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
)

// Launcher holds what a launch needs from its container.
type Launcher struct {
	Cfg     *config.Config
	Getenv  func(string) string
	Environ []string
	Plan    sizing.Plan
	Log     *slog.Logger
	// StartedFile records when the process was started, for the
	// healthcheck's grace period.
	StartedFile string
	// Poll is how often to look for the keeper's markers.
	Poll time.Duration
}

// Mastodon waits until the keeper has readied the database for this
// Mastodon version, then execs argv with the instance's environment.
func (l *Launcher) Mastodon(ctx context.Context, argv []string) error {
	marker, err := l.mastodonMarker()
	if err != nil {
		return err
	}
	rec, err := l.waitFor(ctx, marker,
		"waiting for the keeper to prepare the database for Mastodon "+l.Cfg.MastodonVersion+" (see the keeper service's log)")
	if err != nil {
		return err
	}
	return l.exec(argv, mastodon.Env(l.Environ, l.Cfg, rec, l.Plan))
}

// Command execs a one-off Mastodon command (tootctl) with the instance's
// environment now. A person at a terminal runs it, so when the database is
// not ready for this Mastodon version it says so at once instead of waiting.
func (l *Launcher) Command(argv []string) error {
	marker, err := l.mastodonMarker()
	if err != nil {
		return err
	}
	rec, err := l.ready(marker)
	if errors.Is(err, errNotYet) {
		return fmt.Errorf("the keeper has not finished preparing the database for Mastodon %s yet; "+
			"see the keeper service's log and try again when it says the instance is provisioned", l.Cfg.MastodonVersion)
	}
	if err != nil {
		return err
	}
	return l.exec(argv, mastodon.Env(l.Environ, l.Cfg, rec, l.Plan))
}

// mastodonMarker is the keeper's marker that the database is ready for the
// Mastodon version of this image.
func (l *Launcher) mastodonMarker() (string, error) {
	if l.Cfg.MastodonVersion == "" {
		return "", errors.New("MASTOKEEPER_MASTODON_VERSION is not set; it is built into this project's images")
	}
	return instance.ReadyMarker(l.Cfg.MastodonVersion), nil
}

// Postgres waits for the instance record (which holds the superuser
// password the data directory is initialised with), then execs argv with
// the memory settings of the device's sizing appended.
func (l *Launcher) Postgres(ctx context.Context, argv []string) error {
	rec, err := l.waitFor(ctx, "", "waiting for the keeper to generate this instance's database password (see the keeper service's log)")
	if err != nil {
		return err
	}
	args := append(append([]string{}, argv...), l.Plan.PostgresArgs()...)
	return l.exec(args, mastodon.PostgresEnv(l.Environ, l.Cfg, rec))
}

// errNotYet: the keeper has not got as far as the launch needs.
var errNotYet = errors.New("the keeper has not prepared the instance yet")

// ready returns the instance record, checked against the environment, once
// it exists (and marker, if given); errNotYet before.
func (l *Launcher) ready(marker string) (*instance.Record, error) {
	dir := instance.Dir{Path: l.Cfg.StateDir}
	rec, err := dir.Read()
	switch {
	case errors.Is(err, instance.ErrNotProvisioned) || err == nil && marker != "" && !dir.Has(marker):
		return nil, errNotYet
	case err != nil:
		return nil, err
	}
	if err := instance.Guard(rec, l.Getenv); err != nil {
		return nil, err
	}
	return rec, nil
}

// waitFor polls until ready has the record.
func (l *Launcher) waitFor(ctx context.Context, marker, waiting string) (*instance.Record, error) {
	lastLog := time.Time{}
	for {
		rec, err := l.ready(marker)
		if !errors.Is(err, errNotYet) {
			return rec, err
		}
		if time.Since(lastLog) >= 30*time.Second {
			l.Log.Info(waiting)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(l.Poll):
		}
	}
}

func (l *Launcher) exec(argv, env []string) error {
	if l.StartedFile != "" {
		// Best effort: without it the healthcheck only loses its grace period.
		_ = os.WriteFile(l.StartedFile, []byte(strconv.FormatInt(time.Now().Unix(), 10)), 0o644)
	}
	return Exec(l.Log, argv, env)
}

// Exec replaces the process with argv and env. It returns only on failure.
func Exec(log *slog.Logger, argv, env []string) error {
	if len(argv) == 0 {
		return errors.New("launch: no command given after --")
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	log.Info("starting", "command", argv[0])
	if err := syscall.Exec(path, argv, env); err != nil {
		return fmt.Errorf("launch %s: %w", argv[0], err)
	}
	return nil
}
