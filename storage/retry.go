package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/retry"
)

// Backoff between attempts: retryBaseDelay, doubling up to retryMaxDelay,
// each with up to 25% of jitter. Variables so tests can shorten them.
var (
	retryBaseDelay = time.Second
	retryMaxDelay  = 30 * time.Second
)

// Permanent marks err as one retrying cannot fix (bad credentials, a
// missing bucket, an invalid key, a failing source reader): WithRetry gives
// up on it at once. nil stays nil.
func Permanent(err error) error {
	if err == nil || IsPermanent(err) {
		return err
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsTransient reports whether an operation that failed with err may succeed
// if tried again: not a missing object, not an invalid key, nothing marked
// Permanent, not a cancellation.
func IsTransient(err error) bool {
	switch {
	case err == nil,
		errors.Is(err, ErrNotFound),
		errors.Is(err, ErrInvalidKey),
		errors.Is(err, context.Canceled),
		IsPermanent(err):
		return false
	}
	return true
}

// WithRetry returns s with Get, List and Delete tried up to attempts times
// in all, with backoff (1 s doubling to 30 s), while the error is transient
// (see IsTransient) and ctx is live. Put is retried only when its reader is
// an io.Seeker, which is rewound to where it was before each new attempt;
// any other reader has been consumed. Each retry is logged at Warn level
// with the operation, key, attempt and error.
func WithRetry(s Store, attempts int, log *slog.Logger) Store {
	if attempts < 1 {
		attempts = 1
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &retryStore{s: s, attempts: attempts, log: log}
}

type retryStore struct {
	s        Store
	attempts int
	log      *slog.Logger
}

var _ Store = (*retryStore)(nil)

func (r *retryStore) String() string { return r.s.String() }

// Unwrap returns the store under the retries.
func (r *retryStore) Unwrap() Store { return r.s }

func (r *retryStore) do(ctx context.Context, op, key string, attempts int, f func() error, before func() error) error {
	var last, beforeErr error
	err := retry.Backoff{Base: retryBaseDelay, Max: retryMaxDelay, Jitter: 0.25, Attempts: attempts}.Do(ctx,
		func(attempt int) error {
			if attempt > 1 && before != nil {
				if beforeErr = before(); beforeErr != nil {
					return beforeErr
				}
			}
			last = f()
			return last
		},
		func(err error) bool { return err != beforeErr && IsTransient(err) },
		func(attempt int, wait time.Duration, err error) {
			r.log.Warn("storage: retrying after an error",
				"op", op, "key", key, "target", r.s.String(),
				"attempt", attempt, "of", attempts, "in", wait.Round(time.Millisecond).String(),
				"error", err.Error())
		})
	if beforeErr != nil {
		return fmt.Errorf("%w (not retried: %w)", last, beforeErr)
	}
	return err
}

func (r *retryStore) Put(ctx context.Context, key string, rd io.Reader) error {
	seeker, ok := rd.(io.Seeker)
	if !ok {
		return r.s.Put(ctx, key, rd)
	}
	start, err := seeker.Seek(0, io.SeekCurrent)
	if err != nil {
		// Not really seekable (a pipe behind an *os.File, say).
		return r.s.Put(ctx, key, rd)
	}
	rewind := func() error {
		if _, err := seeker.Seek(start, io.SeekStart); err != nil {
			return fmt.Errorf("rewinding the data: %w", err)
		}
		return nil
	}
	return r.do(ctx, "put", key, r.attempts, func() error { return r.s.Put(ctx, key, rd) }, rewind)
}

func (r *retryStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := r.do(ctx, "get", key, r.attempts, func() error {
		var err error
		rc, err = r.s.Get(ctx, key)
		return err
	}, nil)
	return rc, err
}

func (r *retryStore) List(ctx context.Context, prefix string) ([]Object, error) {
	var objs []Object
	err := r.do(ctx, "list", prefix, r.attempts, func() error {
		var err error
		objs, err = r.s.List(ctx, prefix)
		return err
	}, nil)
	return objs, err
}

func (r *retryStore) Delete(ctx context.Context, key string) error {
	return r.do(ctx, "delete", key, r.attempts, func() error { return r.s.Delete(ctx, key) }, nil)
}
