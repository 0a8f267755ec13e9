package keeper

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/frontdoor"
)

// fakeTor stands in for tor's process: it reports each SIGHUP with the
// configuration it would reread, and its starts, in a log file.
const fakeTor = `echo "start $2" >> "$LOG"; trap 'echo "reload $(grep HiddenServicePort "$2")" >> "$LOG"' HUP; while :; do sleep 0.05; done`

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func runFakeTor(t *testing.T, lookup func(context.Context, string) ([]string, error)) (events func() string, dir string, logs *lockedBuffer, stop func()) {
	return runFakeTorLooking(t, lookup, nil)
}

func runFakeTorWith(t *testing.T, before func(dir string)) (events func() string, dir string, logs *lockedBuffer, stop func()) {
	return runFakeTorLooking(t, func(context.Context, string) ([]string, error) { return []string{"172.18.0.5"}, nil }, before)
}

func runFakeTorLooking(t *testing.T, lookup func(context.Context, string) ([]string, error), before func(dir string)) (events func() string, dir string, logs *lockedBuffer, stop func()) {
	t.Helper()
	dir = t.TempDir()
	if before != nil {
		before(dir)
	}
	logFile := filepath.Join(dir, "events")
	t.Setenv("LOG", logFile)
	t.Setenv("TMPDIR", dir)
	logs = &lockedBuffer{}
	r := &torRunner{argv: []string{"sh", "-c", fakeTor, "sh"}, dir: filepath.Join(dir, "tor"), upstream: "proxy:80",
		log: slog.New(slog.NewTextHandler(logs, nil)), poll: 20 * time.Millisecond, lookup: lookup}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run returned %v after its context ended", err)
		}
	}
	return func() string { b, _ := os.ReadFile(logFile); return string(b) }, dir, logs, stop
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tor resolves the proxy's name once, when it reads its configuration: a
// proxy back at another address gets tor's configuration rewritten and
// reloaded, never an onion pointing nowhere.
func TestTorFollowsTheProxyToANewAddress(t *testing.T) {
	var mu sync.Mutex
	addr := "172.18.0.5"
	lookup := func(context.Context, string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		return []string{addr}, nil
	}
	events, _, logs, stop := runFakeTor(t, lookup)
	defer stop()
	eventually(t, "tor starts", func() bool { return strings.Contains(events(), "start ") })
	mu.Lock()
	addr = "172.18.0.9"
	mu.Unlock()
	eventually(t, "tor reloads with the new address", func() bool {
		return strings.Contains(events(), "reload HiddenServicePort 80 172.18.0.9:80")
	})
	if !strings.Contains(logs.String(), "the proxy moved to 172.18.0.9:80") {
		t.Errorf("the log does not say why tor reloads:\n%s", logs.String())
	}
}

// A key the keeper puts under a running tor (a restore brought the
// instance's own) restarts it, since tor reads its key only at its start;
// one put before tor started does not.
func TestTorRestartsWithAKeyPutUnderIt(t *testing.T) {
	events, dir, logs, stop := runFakeTorWith(t, func(dir string) {
		os.MkdirAll(filepath.Join(dir, "tor"), 0o700)
		os.WriteFile(filepath.Join(dir, "tor", frontdoor.KeyPutFile), []byte("before tor started"), 0o600)
	})
	defer stop()
	eventually(t, "tor starts", func() bool { return strings.Count(events(), "start ") == 1 })
	time.Sleep(100 * time.Millisecond)
	if strings.Count(events(), "start ") != 1 {
		t.Fatal("tor restarted for a key it had read")
	}
	os.WriteFile(filepath.Join(dir, "tor", frontdoor.KeyPutFile), []byte("a restore"), 0o600)
	eventually(t, "tor starts again", func() bool { return strings.Count(events(), "start ") == 2 })
	if !strings.Contains(logs.String(), "restarting tor with it") {
		t.Errorf("the log does not say why tor restarts:\n%s", logs.String())
	}
}
