// Package retry is the keeper's one backoff loop: waiting for the stack's
// other services (Until) and retrying an object store's operations
// (storage.WithRetry) both pause the same way.
package retry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Permanent marks an error that waiting cannot fix: Until returns it at once.
func Permanent(err error) error { return permanent{err} }

type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Backoff says how to pause between attempts: Base, doubling up to Max,
// each pause plus up to Jitter (a fraction) of itself; at most Attempts
// attempts in all (0: until the context ends).
type Backoff struct {
	Base, Max time.Duration
	Jitter    float64
	Attempts  int
}

// ErrGaveUp wraps the last error when the attempts ran out.
var ErrGaveUp = errors.New("gave up")

// Do calls try until it succeeds, returns an error retryable refuses, the
// attempts run out (the error then wraps ErrGaveUp) or ctx ends (it then
// wraps ctx's error too: "... (not retried: context canceled)"). Before each new attempt it calls pause with the
// attempt coming, the wait and the last error - to log them - and waits.
func (b Backoff) Do(ctx context.Context, try func(attempt int) error, retryable func(error) bool, pause func(attempt int, wait time.Duration, err error)) error {
	delay := b.Base
	for attempt := 1; ; attempt++ {
		err := try(attempt)
		switch {
		case err == nil:
			return nil
		case !retryable(err):
			return err
		case ctx.Err() != nil:
			return fmt.Errorf("%w (not retried: %w)", err, ctx.Err())
		case b.Attempts > 0 && attempt >= b.Attempts:
			if b.Attempts == 1 {
				return err
			}
			return gaveUp{attempt, err}
		}
		wait := delay
		if b.Jitter > 0 {
			wait += time.Duration(rand.Int64N(int64(float64(delay)*b.Jitter) + 1))
		}
		if pause != nil {
			pause(attempt+1, wait, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (not retried: %w)", err, ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, b.Max)
	}
}

type gaveUp struct {
	attempts int
	err      error
}

func (g gaveUp) Error() string {
	return "gave up after " + itoa(g.attempts) + " attempts: " + g.err.Error()
}
func (g gaveUp) Unwrap() []error { return []error{ErrGaveUp, g.err} }

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// Until calls try until it succeeds, returns a Permanent error, or ctx
// ends, doubling the pause from half a second to five: what it waits for
// is a service of the same stack, cheap to ask and worth noticing at once.
// Each failure is logged as waiting (what and why, with attempt and
// pause), and a success after failures as "up".
func Until(ctx context.Context, log *slog.Logger, waiting, up string, try func() error) error {
	start := time.Now()
	err := Backoff{Base: 500 * time.Millisecond, Max: 5 * time.Second}.Do(ctx,
		func(attempt int) error {
			err := try()
			if err == nil && attempt > 1 {
				log.Info(up, "waited", time.Since(start).Round(time.Second).String())
			}
			return err
		},
		func(err error) bool { var p permanent; return !errors.As(err, &p) },
		func(attempt int, wait time.Duration, err error) {
			log.Info(waiting, "attempt", attempt-1, "retry_in", wait.String(), "error", err.Error())
		})
	var p permanent
	switch {
	case errors.As(err, &p):
		return p.error
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return err
}
