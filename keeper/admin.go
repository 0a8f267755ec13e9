package keeper

import (
	"context"
	"log/slog"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/launch"
	"github.com/mastodon-on-balena/mastodon-balena/mastodon"
)

// StartedFile is where a launched process notes its start, for the
// healthcheck's grace period.
const StartedFile = "/tmp/mastokeeper-launched"

func (k *Keeper) launcher(log *slog.Logger) *launch.Launcher {
	return &launch.Launcher{Cfg: k.S.Config, Getenv: k.S.Getenv, Environ: k.S.Environ, Plan: k.S.Plan, Log: log,
		StartedFile: StartedFile, Poll: 500 * time.Millisecond}
}

// Launch waits until what process (mastodon or postgres) needs is there,
// then execs argv. It returns only on failure.
func (k *Keeper) Launch(ctx context.Context, what string, argv []string) error {
	if err := k.S.Err(); err != nil {
		return err
	}
	l := k.launcher(k.Log.With("component", "launch", "process", argv[0]))
	if what == "postgres" {
		return l.Postgres(ctx, argv)
	}
	return l.Mastodon(ctx, argv)
}

// Tootctl replaces the process with tootctl and the instance's
// environment. It returns only on failure.
func (k *Keeper) Tootctl(args []string) error {
	if err := k.S.Err(); err != nil {
		return err
	}
	// The launcher's progress lines would only clutter tootctl's output.
	return k.launcher(slog.New(slog.DiscardHandler)).Command(append([]string{"tootctl"}, args...))
}

// Healthcheck checks a service of the stack: a URL (web, streaming) or
// "sidekiq".
func (k *Keeper) Healthcheck(ctx context.Context, what string) error {
	h := launch.Health{StateDir: k.S.Config.StateDir, Version: k.S.Config.MastodonVersion, StartedFile: StartedFile,
		Grace: 5 * time.Minute, SidekiqReadyFile: launch.SidekiqReadyFile(k.S.Getenv)}
	return h.Check(ctx, what)
}

// ResetPassword gives account name a new password and returns it.
func (k *Keeper) ResetPassword(ctx context.Context, name string) (string, error) {
	if err := k.S.Err(); err != nil {
		return "", err
	}
	rec, err := k.S.Dir.Read()
	if err != nil {
		return "", err
	}
	if err := instance.Guard(rec, k.S.Getenv); err != nil {
		return "", err
	}
	run := mastodon.Runner{Env: mastodon.Env(k.S.Environ, k.S.Config, rec, k.S.Plan), Log: k.logger("admin")}
	return run.ResetPassword(ctx, name)
}
