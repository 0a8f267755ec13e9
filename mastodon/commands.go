package mastodon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Runner runs Mastodon's commands (found on PATH, as in Mastodon's image)
// with the instance's environment. Secrets travel in the environment only,
// never as arguments.
type Runner struct {
	Env []string
	Log *slog.Logger
}

// Rails runs `rails TASK...`, relaying its output to the log line by line.
// On stop, Rails gets an interrupt and 45 s to roll back the migration it
// is in rather than die mid-statement; the keeper's stop_grace_period
// leaves room for this.
func (r Runner) Rails(ctx context.Context, tasks ...string) error {
	return r.logged(ctx, 45*time.Second, "rails", tasks...)
}

// logged runs a Mastodon command whose arguments are not secret, relaying
// its output to the log line by line. Stopped, it gets SIGINT and grace
// before SIGKILL.
func (r Runner) logged(ctx context.Context, grace time.Duration, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = r.Env
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = grace
	what := name + " " + strings.Join(args, " ")
	out := &lineLogger{log: r.Log.With("command", what)}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	out.flush()
	if err != nil {
		return fmt.Errorf("%s: %w (its output is in the log above)", what, err)
	}
	return nil
}

var passwordLine = regexp.MustCompile(`(?m)^New password: (\S+)\s*$`)

// CreateOwner creates a confirmed, approved account with the Owner role and
// returns the password tootctl generated for it.
func (r Runner) CreateOwner(ctx context.Context, username, email string) (string, error) {
	return r.tootctlPassword(ctx, "accounts", "create", username, "--email", email, "--confirmed", "--approve", "--role", "Owner")
}

// ResetPassword gives username a new password (and ends its sessions).
func (r Runner) ResetPassword(ctx context.Context, username string) (string, error) {
	return r.tootctlPassword(ctx, "accounts", "modify", username, "--reset-password")
}

// tootctlPassword runs tootctl, keeps its standard output (which carries a
// password) out of the log, and returns the password it printed.
func (r Runner) tootctlPassword(ctx context.Context, args ...string) (string, error) {
	if len(args) > 2 && strings.HasPrefix(args[2], "-") {
		return "", fmt.Errorf("tootctl: username %q must not start with '-'", args[2])
	}
	cmd := exec.CommandContext(ctx, "tootctl", args...)
	cmd.Env = r.Env
	var stdout bytes.Buffer
	errOut := &lineLogger{log: r.Log.With("command", "tootctl "+strings.Join(args[:2], " "))}
	cmd.Stdout, cmd.Stderr = &stdout, errOut
	err := cmd.Run()
	errOut.flush()
	m := passwordLine.FindSubmatch(stdout.Bytes())
	if err != nil || m == nil {
		// Without a password line the output is tootctl's explanation.
		msg := strings.TrimSpace(passwordLine.ReplaceAllString(stdout.String(), "New password: [redacted]"))
		if err == nil {
			err = errors.New("it printed no new password")
		}
		return "", fmt.Errorf("tootctl %s: %w: %s", strings.Join(args[:3], " "), err, msg)
	}
	return string(m[1]), nil
}

// lineLogger turns a process's output into log lines.
type lineLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineLogger) emit(line []byte) {
	if s := strings.TrimRight(string(line), "\r"); strings.TrimSpace(s) != "" {
		l.log.Info(s)
	}
}

var _ io.Writer = (*lineLogger)(nil)

// MediaRemove removes the cached copies of other servers' media older than
// days (`tootctl media remove --days N`); Mastodon fetches them again if
// someone looks. Its output goes to the log.
func (r Runner) MediaRemove(ctx context.Context, days int) error {
	return r.tootctlLogged(ctx, "media", "remove", "--days", strconv.Itoa(days))
}

// PreviewCardsRemove removes the thumbnails of link previews not updated
// for days (`tootctl preview_cards remove --days N`). Mastodon advises
// never going below 14 days: a link reposted within two weeks reuses its
// card, which is not fetched again.
func (r Runner) PreviewCardsRemove(ctx context.Context, days int) error {
	return r.tootctlLogged(ctx, "preview_cards", "remove", "--days", strconv.Itoa(days))
}

// MediaRemoveOrphans removes files of the media volume that belong to no
// database record (`tootctl media remove-orphans`); slow, it visits every
// file.
func (r Runner) MediaRemoveOrphans(ctx context.Context) error {
	return r.tootctlLogged(ctx, "media", "remove-orphans")
}

// tootctlLogged runs tootctl ARGS, relaying its output to the log. An
// interrupted removal leaves nothing that the next run does not finish, so
// 20 s of grace after SIGINT is plenty.
func (r Runner) tootctlLogged(ctx context.Context, args ...string) error {
	return r.logged(ctx, 20*time.Second, "tootctl", args...)
}
