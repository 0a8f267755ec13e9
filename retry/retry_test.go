package retry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestUntilRetriesAndSaysWhatItWaitsFor(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	calls := 0
	err := Until(context.Background(), log, "waiting for the thing", "the thing is up", func() error {
		calls++
		if calls < 2 {
			return errors.New("connection refused")
		}
		return nil
	})
	if err != nil || calls != 2 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	for _, want := range []string{`msg="waiting for the thing"`, "attempt=1", "retry_in=500ms", `error="connection refused"`, `msg="the thing is up"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log lacks %s:\n%s", want, logs.String())
		}
	}
}

func TestUntilStopsAtAPermanentError(t *testing.T) {
	wrong := errors.New("wrong password")
	calls := 0
	err := Until(context.Background(), slog.New(slog.DiscardHandler), "w", "u", func() error {
		calls++
		return Permanent(wrong)
	})
	if !errors.Is(err, wrong) || calls != 1 {
		t.Errorf("err %v after %d calls; want the permanent error at once", err, calls)
	}
}

func TestUntilEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := Until(ctx, slog.New(slog.DiscardHandler), "w", "u", func() error { return errors.New("down") })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("err %v after %s", err, time.Since(start))
	}
}

func TestBackoffGivesUpAfterItsAttemptsSayingSo(t *testing.T) {
	down := errors.New("503 slow down")
	var waits []time.Duration
	calls := 0
	err := Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond, Attempts: 4}.Do(context.Background(),
		func(int) error { calls++; return down },
		func(error) bool { return true },
		func(_ int, wait time.Duration, _ error) { waits = append(waits, wait) })
	if calls != 4 || !errors.Is(err, down) || !errors.Is(err, ErrGaveUp) || err.Error() != "gave up after 4 attempts: 503 slow down" {
		t.Errorf("%d calls, %v", calls, err)
	}
	if len(waits) != 3 || waits[0] != time.Millisecond || waits[2] != 2*time.Millisecond {
		t.Errorf("waits %v: want 1ms doubling to at most 2ms", waits)
	}
	calls = 0
	err = Backoff{Base: time.Millisecond, Attempts: 4}.Do(context.Background(),
		func(int) error { calls++; return down }, func(error) bool { return false }, nil)
	if calls != 1 || err != down {
		t.Errorf("an error not worth retrying: %d calls, %v", calls, err)
	}
}
