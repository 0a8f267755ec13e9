package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// flaky is a fake Store (of our own interface) that fails its first
// `failures` calls of each operation with err, then works from memory.
type flaky struct {
	mu       sync.Mutex
	failures int
	err      error
	calls    map[string]int
	objects  map[string][]byte
	putReads []int // bytes read by each Put call
}

func newFlaky(failures int, err error) *flaky {
	return &flaky{failures: failures, err: err, calls: map[string]int{}, objects: map[string][]byte{}}
}

func (f *flaky) fail(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.calls[op] <= f.failures {
		return fmt.Errorf("flaky: %s call %d: %w", op, f.calls[op], f.err)
	}
	return nil
}

func (f *flaky) Put(ctx context.Context, key string, r io.Reader) error {
	b, rerr := io.ReadAll(r)
	f.mu.Lock()
	f.putReads = append(f.putReads, len(b))
	f.mu.Unlock()
	if err := f.fail("put"); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	f.mu.Lock()
	f.objects[key] = b
	f.mu.Unlock()
	return nil
}

func (f *flaky) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := f.fail("get"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[key]
	if !ok {
		return nil, fmt.Errorf("flaky: get %s: %w", key, storage.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *flaky) List(ctx context.Context, prefix string) ([]storage.Object, error) {
	if err := f.fail("list"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []storage.Object
	for k, b := range f.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, storage.Object{Key: k, Size: int64(len(b))})
		}
	}
	return out, nil
}

func (f *flaky) Delete(ctx context.Context, key string) error {
	if err := f.fail("delete"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objects, key)
	return nil
}

func (f *flaky) String() string { return "flaky://test" }

var errTransient = errors.New("503 Service Unavailable")

func fastRetries(t *testing.T) {
	t.Cleanup(storage.SetRetryDelays(time.Millisecond, 4*time.Millisecond))
}

func captureLog() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func TestWithRetryRecovers(t *testing.T) {
	fastRetries(t)
	f := newFlaky(2, errTransient)
	log, logs := captureLog()
	s := storage.WithRetry(f, 3, log)
	ctx := context.Background()
	if err := s.Put(ctx, "k", bytes.NewReader([]byte("hello"))); err != nil {
		t.Fatalf("Put with a seekable reader and 2 failures in 3 attempts: %v", err)
	}
	// Each attempt read the whole data: the reader was rewound.
	if fmt.Sprint(f.putReads) != "[5 5 5]" {
		t.Errorf("bytes read per attempt = %v, want [5 5 5]", f.putReads)
	}
	if f.objects["k"] == nil || string(f.objects["k"]) != "hello" {
		t.Errorf("stored %q", f.objects["k"])
	}
	rc, err := s.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := s.List(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"put", "get", "list", "delete"} {
		if f.calls[op] != 3 {
			t.Errorf("%s called %d times, want 3", op, f.calls[op])
		}
	}
	out := logs.String()
	if c := strings.Count(out, "storage: retrying"); c != 8 {
		t.Errorf("%d retries logged, want 8:\n%s", c, out)
	}
	for _, want := range []string{"op=put", "op=get", "op=list", "op=delete", "key=k", "attempt=2", "of=3", "503 Service Unavailable", "target=flaky://test"} {
		if !strings.Contains(out, want) {
			t.Errorf("log misses %q:\n%s", want, out)
		}
	}
	if s.String() != "flaky://test" {
		t.Errorf("String() = %q", s.String())
	}
}

func TestWithRetryGivesUp(t *testing.T) {
	fastRetries(t)
	f := newFlaky(100, errTransient)
	s := storage.WithRetry(f, 4, nil)
	_, err := s.List(context.Background(), "")
	if err == nil || !errors.Is(err, errTransient) || !strings.Contains(err.Error(), "gave up after 4 attempts") {
		t.Fatalf("List failing for ever: %v", err)
	}
	if f.calls["list"] != 4 {
		t.Errorf("List called %d times, want 4", f.calls["list"])
	}
}

func TestWithRetryDoesNotRetry(t *testing.T) {
	fastRetries(t)
	ctx := context.Background()

	// A missing object is an answer, not a failure.
	f := newFlaky(0, nil)
	s := storage.WithRetry(f, 5, nil)
	if _, err := s.Get(ctx, "missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
	if f.calls["get"] != 1 {
		t.Errorf("Get of a missing key called %d times, want 1", f.calls["get"])
	}

	// Permanent errors.
	for _, perr := range []error{storage.Permanent(errors.New("403 Forbidden")), fmt.Errorf("bad: %w", storage.ErrInvalidKey), context.Canceled} {
		f := newFlaky(100, perr)
		s := storage.WithRetry(f, 5, nil)
		if err := s.Delete(ctx, "k"); !errors.Is(err, perr) {
			t.Fatalf("Delete: %v", err)
		}
		if f.calls["delete"] != 1 {
			t.Errorf("Delete failing with %v called %d times, want 1", perr, f.calls["delete"])
		}
	}

	// A reader that cannot be rewound is consumed: Put is tried once.
	f = newFlaky(1, errTransient)
	s = storage.WithRetry(f, 5, nil)
	if err := s.Put(ctx, "k", strings.NewReader("abc")); err == nil {
		// strings.Reader is a Seeker: this one must be retried.
		if f.calls["put"] != 2 {
			t.Errorf("Put with a strings.Reader called %d times, want 2", f.calls["put"])
		}
	} else {
		t.Fatalf("Put with a strings.Reader: %v", err)
	}
	f = newFlaky(1, errTransient)
	s = storage.WithRetry(f, 5, nil)
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte("abc")); pw.Close() }()
	if err := s.Put(ctx, "k", pr); !errors.Is(err, errTransient) {
		t.Fatalf("Put with a pipe: %v, want the transient error", err)
	}
	if f.calls["put"] != 1 {
		t.Errorf("Put with a pipe called %d times, want 1", f.calls["put"])
	}
}

func TestWithRetryStopsWithContext(t *testing.T) {
	t.Cleanup(storage.SetRetryDelays(time.Hour, time.Hour))
	f := newFlaky(100, errTransient)
	s := storage.WithRetry(f, 5, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.List(ctx, "")
	if !errors.Is(err, errTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("List: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("waited %v despite the context", time.Since(start))
	}
}

func TestWithRetryRewindsToTheStartingOffset(t *testing.T) {
	fastRetries(t)
	f := newFlaky(1, errTransient)
	s := storage.WithRetry(f, 3, nil)
	r := bytes.NewReader([]byte("skip:payload"))
	r.Seek(5, io.SeekStart)
	if err := s.Put(context.Background(), "k", r); err != nil {
		t.Fatal(err)
	}
	if string(f.objects["k"]) != "payload" {
		t.Errorf("stored %q, want %q", f.objects["k"], "payload")
	}
}

func TestIsTransient(t *testing.T) {
	for err, want := range map[error]bool{
		nil:                                      false,
		errTransient:                             true,
		fmt.Errorf("x: %w", storage.ErrNotFound): false,
		storage.Permanent(errTransient):          false,
		context.Canceled:                         false,
		context.DeadlineExceeded:                 true, // a request's own timeout
		storage.RedactError(storage.Permanent(errors.New("secret-x")), "secret-x"): false,
	} {
		if got := storage.IsTransient(err); got != want {
			t.Errorf("IsTransient(%v) = %v, want %v", err, got, want)
		}
	}
}
