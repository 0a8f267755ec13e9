// Package retry waits for the stack's other services with backoff, saying
// in the log what it waits for and why.
package retry

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Permanent marks an error that waiting cannot fix: Until returns it at once.
func Permanent(err error) error { return permanent{err} }

type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// Until calls try until it succeeds, returns a Permanent error, or ctx
// ends, doubling the pause from one second to thirty. Each failure is
// logged as waiting (what and why, with attempt and pause), and a success
// after failures as "up".
func Until(ctx context.Context, log *slog.Logger, waiting, up string, try func() error) error {
	delay := time.Second
	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := try()
		if err == nil {
			if attempt > 1 {
				log.Info(up, "waited", time.Since(start).Round(time.Second).String())
			}
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Info(waiting, "attempt", attempt, "retry_in", delay.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}
