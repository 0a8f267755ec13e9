// Package storagetest is the conformance suite every storage backend passes
// (Run), and real test servers to run it against: versitygw for S3
// (StartVersityGW) and Debian's OpenStack Swift (StartSwift), both on
// 127.0.0.1 and stopped at the test's cleanup.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Sizes are the object sizes the round trip covers: empty, one byte, around
// a 64 KiB buffer, around 1 MiB (a small Swift segment), several MiB,
// exactly 5 MiB (the smallest S3 part) and more than two 5 MiB parts.
var Sizes = []int{0, 1, 64<<10 + 3, 1 << 20, 1<<20 + 1, 3<<20 + 17, 5 << 20, 11<<20 + 5}

// Run runs the conformance suite against the stores open returns. open
// must return an empty store each time it is called (a fresh directory, a
// fresh prefix). secrets are credentials that must appear neither in
// String() nor in any error text.
func Run(t *testing.T, open func(t *testing.T) storage.Store, secrets ...string) {
	t.Run("RoundTrip", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		for _, size := range Sizes {
			key := fmt.Sprintf("roundtrip/size-%d", size)
			data := randomBytes(size, uint64(size))
			if err := s.Put(ctx, key, onlyReader{bytes.NewReader(data)}); err != nil {
				t.Fatalf("Put %d bytes: %v", size, err)
			}
			got := mustGet(t, s, key)
			if len(got) != size || sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatalf("Get %s: got %d bytes (sha256 %x), want %d (sha256 %x)", key, len(got), sha256.Sum256(got), size, sha256.Sum256(data))
			}
		}
		objs := mustList(t, s, "roundtrip/")
		if len(objs) != len(Sizes) {
			t.Fatalf("List: %d objects, want %d: %v", len(objs), len(Sizes), objs)
		}
		sizeOf := map[string]int64{}
		for _, o := range objs {
			sizeOf[o.Key] = o.Size
			if o.ModTime.IsZero() || time.Since(o.ModTime) > time.Hour || time.Until(o.ModTime) > time.Hour {
				t.Errorf("List: %s has ModTime %v, want about now", o.Key, o.ModTime)
			}
		}
		for _, size := range Sizes {
			key := fmt.Sprintf("roundtrip/size-%d", size)
			if got, ok := sizeOf[key]; !ok || got != int64(size) {
				t.Errorf("List: %s has size %d (listed: %v), want %d", key, got, ok, size)
			}
		}
	})

	t.Run("SeekableReader", func(t *testing.T) {
		// A *bytes.Reader (an io.Seeker, an io.WriterTo) must work too.
		s := open(t)
		data := randomBytes(2<<20+9, 7)
		if err := s.Put(testContext(t), "seekable", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, "seekable"); !bytes.Equal(got, data) {
			t.Fatalf("Get: %d bytes, want the %d put", len(got), len(data))
		}
	})

	t.Run("ListByPrefix", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		keys := map[string]int{
			"a/b/c.txt": 3, "a/b/d.txt": 4, "a/e": 5, "ab": 6, "a-z": 7, "b/x/y/z": 8, "top": 0,
		}
		for k, n := range keys {
			if err := s.Put(ctx, k, strings.NewReader(strings.Repeat("x", n))); err != nil {
				t.Fatalf("Put %s: %v", k, err)
			}
		}
		for _, tc := range []struct {
			prefix string
			want   []string
		}{
			{"", []string{"a-z", "a/b/c.txt", "a/b/d.txt", "a/e", "ab", "b/x/y/z", "top"}},
			{"a", []string{"a-z", "a/b/c.txt", "a/b/d.txt", "a/e", "ab"}},
			{"a/", []string{"a/b/c.txt", "a/b/d.txt", "a/e"}},
			{"a/b", []string{"a/b/c.txt", "a/b/d.txt"}},
			{"a/b/", []string{"a/b/c.txt", "a/b/d.txt"}},
			{"a/b/c", []string{"a/b/c.txt"}},
			{"b/x/y/z", []string{"b/x/y/z"}},
			{"b/x/y/z/", nil},
			{"nothing/", nil},
			{"nothing", nil},
			{"to", []string{"top"}},
		} {
			objs := mustList(t, s, tc.prefix)
			var got []string
			for _, o := range objs {
				got = append(got, o.Key)
				if want := int64(keys[o.Key]); o.Size != want {
					t.Errorf("List(%q): %s has size %d, want %d", tc.prefix, o.Key, o.Size, want)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("List(%q) = %q, want %q (sorted)", tc.prefix, got, tc.want)
			}
		}
		if got := mustGet(t, s, "b/x/y/z"); string(got) != "xxxxxxxx" {
			t.Errorf("Get b/x/y/z = %q", got)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		for _, key := range []string{"missing", "dir/missing", "a/b/c/d"} {
			rc, err := s.Get(ctx, key)
			if err == nil {
				rc.Close()
				t.Fatalf("Get(%q) of a missing key: no error", key)
			}
			if !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Get(%q) of a missing key: %v, want an error wrapping storage.ErrNotFound", key, err)
			}
			checkNoSecret(t, "the not-found error", err.Error(), secrets)
		}
		// A "directory" is not an object.
		if err := s.Put(ctx, "dir/file", strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		if rc, err := s.Get(ctx, "dir"); !errors.Is(err, storage.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Fatalf("Get(\"dir\") where only dir/file exists: %v, want storage.ErrNotFound", err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		if err := s.Delete(ctx, "never-existed"); err != nil {
			t.Fatalf("Delete of a missing key: %v", err)
		}
		big := randomBytes(11<<20+5, 99)
		for _, k := range []string{"d/small", "d/big"} {
			data := []byte("small")
			if k == "d/big" {
				data = big
			}
			if err := s.Put(ctx, k, onlyReader{bytes.NewReader(data)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Put(ctx, "d/keep", strings.NewReader("keep")); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"d/small", "d/big"} {
			for i := range 2 { // idempotent
				if err := s.Delete(ctx, k); err != nil {
					t.Fatalf("Delete(%q) #%d: %v", k, i+1, err)
				}
			}
			if _, err := s.Get(ctx, k); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Get(%q) after Delete: %v, want storage.ErrNotFound", k, err)
			}
		}
		objs := mustList(t, s, "")
		if len(objs) != 1 || objs[0].Key != "d/keep" {
			t.Fatalf("List after deletes = %v, want only d/keep", objs)
		}
	})

	t.Run("Overwrite", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		versions := [][]byte{
			[]byte("first version"),
			randomBytes(11<<20+5, 1), // large replaces small
			randomBytes(7<<20+1, 2),  // large replaces large
			[]byte("small again"),    // small replaces large
			{},                       // empty replaces small
		}
		for i, v := range versions {
			if err := s.Put(ctx, "k", onlyReader{bytes.NewReader(v)}); err != nil {
				t.Fatalf("Put version %d: %v", i, err)
			}
			if got := mustGet(t, s, "k"); !bytes.Equal(got, v) {
				t.Fatalf("Get after version %d: %d bytes, want %d", i, len(got), len(v))
			}
			objs := mustList(t, s, "")
			if len(objs) != 1 || objs[0].Key != "k" || objs[0].Size != int64(len(v)) {
				t.Fatalf("List after version %d = %v, want k with %d bytes", i, objs, len(v))
			}
		}
	})

	t.Run("FailingReader", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		old := []byte("the previous, complete version")
		if err := s.Put(ctx, "existing", bytes.NewReader(old)); err != nil {
			t.Fatal(err)
		}
		for _, after := range []int{0, 100 << 10, 6<<20 + 3} {
			for _, key := range []string{fmt.Sprintf("fail-%d", after), "existing"} {
				r := &failingReader{r: newRandomReader(uint64(after)), left: after}
				err := s.Put(ctx, key, r)
				if err == nil {
					t.Fatalf("Put(%q) whose reader fails after %d bytes: no error", key, after)
				}
				if !errors.Is(err, errSource) {
					t.Errorf("Put(%q) whose reader fails after %d bytes: %v, want an error wrapping the reader's", key, after, err)
				}
				checkNoSecret(t, "a failed Put's error", err.Error(), secrets)
				if key == "existing" {
					if got := mustGet(t, s, key); !bytes.Equal(got, old) {
						t.Fatalf("after a failed overwrite (reader failing after %d bytes), %q holds %d bytes, want the previous %d", after, key, len(got), len(old))
					}
					continue
				}
				if rc, err := s.Get(ctx, key); !errors.Is(err, storage.ErrNotFound) {
					if rc != nil {
						rc.Close()
					}
					t.Fatalf("Get(%q) after a failed Put (reader failing after %d bytes): %v, want storage.ErrNotFound", key, after, err)
				}
			}
		}
		objs := mustList(t, s, "")
		if len(objs) != 1 || objs[0].Key != "existing" {
			t.Fatalf("List after failed Puts = %v, want only \"existing\"", objs)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := open(t)
		// Already cancelled.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Put(ctx, "pre-cancelled", strings.NewReader("data")); err == nil {
			t.Fatal("Put with a cancelled context: no error")
		}
		// Cancelled midway through an endless stream.
		for _, after := range []int{1 << 10, 7 << 20} {
			ctx, cancel := context.WithCancel(testContext(t))
			r := &cancellingReader{r: newRandomReader(3), after: after, cancel: cancel}
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- s.Put(ctx, "cancelled", r) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatalf("Put of an endless stream cancelled after %d bytes: no error", after)
				}
				if !errors.Is(err, context.Canceled) {
					t.Logf("Put cancelled after %d bytes: %v (not wrapping context.Canceled)", after, err)
				}
				t.Logf("Put cancelled after %d bytes returned in %v (read %d bytes)", after, time.Since(start).Round(time.Millisecond), r.n)
			case <-time.After(60 * time.Second):
				cancel()
				t.Fatalf("Put still running 60 s after its context was cancelled (after %d bytes)", after)
			}
			cancel()
		}
		ctx = testContext(t)
		for _, key := range []string{"pre-cancelled", "cancelled"} {
			if rc, err := s.Get(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				if rc != nil {
					rc.Close()
				}
				t.Fatalf("Get(%q) after a cancelled Put: %v, want storage.ErrNotFound", key, err)
			}
		}
		if objs := mustList(t, s, ""); len(objs) != 0 {
			t.Fatalf("List after cancelled Puts = %v, want nothing", objs)
		}
	})

	t.Run("InvalidKeys", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		for _, key := range []string{"", "/abs", "a//b", "../up", "a/../b", "a/./b", ".", "..", "trailing/", "nul\x00byte"} {
			if err := s.Put(ctx, key, strings.NewReader("x")); err == nil {
				t.Errorf("Put(%q): no error", key)
			}
			if rc, err := s.Get(ctx, key); err == nil {
				rc.Close()
				t.Errorf("Get(%q): no error", key)
			} else if !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("Get(%q): %v, want storage.ErrInvalidKey", key, err)
			}
			if err := s.Delete(ctx, key); err == nil {
				t.Errorf("Delete(%q): no error", key)
			}
		}
		for _, prefix := range []string{"/abs", "../up", "a//"} {
			if _, err := s.List(ctx, prefix); err == nil {
				t.Errorf("List(%q): no error", prefix)
			}
		}
		if objs := mustList(t, s, ""); len(objs) != 0 {
			t.Fatalf("List after invalid Puts = %v, want nothing", objs)
		}
	})

	t.Run("KeysWithSpecialCharacters", func(t *testing.T) {
		s := open(t)
		ctx := testContext(t)
		keys := []string{"with space/a b", "unicode/é€✓", "punct/a+b=c&d?e#f%20g", "dots/.hidden", "dots/a..b"}
		for _, k := range keys {
			if err := s.Put(ctx, k, strings.NewReader(k)); err != nil {
				t.Fatalf("Put(%q): %v", k, err)
			}
		}
		for _, k := range keys {
			if got := mustGet(t, s, k); string(got) != k {
				t.Errorf("Get(%q) = %q", k, got)
			}
		}
		if objs := mustList(t, s, ""); len(objs) != len(keys) {
			t.Errorf("List = %v, want %d objects", objs, len(keys))
		}
		for _, k := range keys {
			if err := s.Delete(ctx, k); err != nil {
				t.Errorf("Delete(%q): %v", k, err)
			}
		}
	})

	t.Run("String", func(t *testing.T) {
		s := open(t)
		str := s.String()
		if str == "" {
			t.Fatal("String() is empty")
		}
		checkNoSecret(t, "String()", str, secrets)
		checkNoSecret(t, "fmt %v", fmt.Sprintf("%v %+v", s, s), secrets)
	})
}

func checkNoSecret(t *testing.T, what, text string, secrets []string) {
	t.Helper()
	for _, sec := range secrets {
		if sec != "" && strings.Contains(text, sec) {
			t.Errorf("%s contains a secret: %q", what, text)
		}
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustGet(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(testContext(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): reading: %v", key, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("Get(%q): Close: %v", key, err)
	}
	return b
}

func mustList(t *testing.T, s storage.Store, prefix string) []storage.Object {
	t.Helper()
	objs, err := s.List(testContext(t), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return objs
}

// randomBytes is n deterministic pseudo-random bytes.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = io.ReadFull(newRandomReader(seed), b)
	return b
}

// randomReader is an endless deterministic pseudo-random stream.
type randomReader struct{ r *rand.ChaCha8 }

func newRandomReader(seed uint64) *randomReader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &randomReader{r: rand.NewChaCha8(s)}
}

func (r *randomReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// onlyReader hides every method but Read (no io.Seeker, no io.WriterTo).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

var errSource = errors.New("storagetest: the source failed on purpose")

// failingReader yields left bytes of r, then fails.
type failingReader struct {
	r    io.Reader
	left int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.left <= 0 {
		return 0, errSource
	}
	if len(p) > f.left {
		p = p[:f.left]
	}
	n, err := f.r.Read(p)
	f.left -= n
	return n, err
}

// cancellingReader yields r endlessly and cancels after `after` bytes.
type cancellingReader struct {
	r      io.Reader
	after  int
	n      int
	cancel context.CancelFunc
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	if len(p) > 32<<10 {
		p = p[:32<<10]
	}
	n, err := c.r.Read(p)
	c.n += n
	if c.n >= c.after {
		c.cancel()
	}
	return n, err
}
