package swift_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/storagetest"
	"github.com/mastodon-on-balena/mastodon-balena/storage/swift"
)

var prefixes atomic.Int64

const container = "backups"

func newStore(t *testing.T, srv *storagetest.SwiftServer, prefix string, modify func(*swift.Config)) *swift.Store {
	t.Helper()
	cfg, problems := swift.ConfigFromEnv(storage.Target{Scheme: "swift", Name: container, Prefix: prefix}, storagetest.Getenv(srv.Env()))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	cfg.SegmentSize = 1 << 20
	cfg.BufferSize = 256 << 10
	if modify != nil {
		modify(&cfg)
	}
	s, err := swift.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func nextPrefix() string { return fmt.Sprintf("tests/%d", prefixes.Add(1)) }

// segments lists the segments container under the store's prefix.
func segments(t *testing.T, srv *storagetest.SwiftServer, prefix string) []storage.Object {
	t.Helper()
	cfg, _ := swift.ConfigFromEnv(storage.Target{Scheme: "swift", Name: container + "_segments", Prefix: prefix}, storagetest.Getenv(srv.Env()))
	s, err := swift.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := s.List(context.Background(), "")
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil
		}
		t.Fatal(err)
	}
	return objs
}

func TestSwift(t *testing.T) {
	srv := storagetest.StartSwift(t)
	if err := srv.CreateContainer(container); err != nil {
		t.Fatal(err)
	}

	var conformancePrefixes []string
	t.Run("Conformance", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Store {
			p := nextPrefix()
			conformancePrefixes = append(conformancePrefixes, p)
			return newStore(t, srv, p, nil)
		}, srv.Key)
	})

	t.Run("NoStraySegments", func(t *testing.T) {
		// Deletes, overwrites, failed and cancelled Puts of the suite left no
		// segment behind, but for the large objects still there.
		for _, p := range conformancePrefixes {
			s := newStore(t, srv, p, nil)
			objs, err := s.List(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			var wantSegs int64
			for _, o := range objs {
				if o.Size > 256<<10 {
					wantSegs += (o.Size + 1<<20 - 1) / (1 << 20)
				}
			}
			if got := int64(len(segments(t, srv, p))); got != wantSegs {
				t.Errorf("prefix %s: %d segments, want %d for the objects %v", p, got, wantSegs, objs)
			}
		}
	})

	t.Run("LargeObject", func(t *testing.T) {
		p := nextPrefix()
		s := newStore(t, srv, p, nil)
		ctx := context.Background()
		data := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+1)
		if err := s.Put(ctx, "big", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		if n := len(segments(t, srv, p)); n != 4 {
			t.Errorf("%d bytes in 1 MiB segments: %d segments, want 4", len(data), n)
		}
		if err := s.Delete(ctx, "big"); err != nil {
			t.Fatal(err)
		}
		if segs := segments(t, srv, p); len(segs) != 0 {
			t.Errorf("segments left after Delete: %v", segs)
		}
	})

	t.Run("DefaultBuffer", func(t *testing.T) {
		// With the default buffer (4 MiB, capped at the segment size) an
		// object of one segment or less is a plain object.
		p := nextPrefix()
		s := newStore(t, srv, p, func(c *swift.Config) { c.BufferSize = 0 })
		ctx := context.Background()
		if err := s.Put(ctx, "one-segment", bytes.NewReader(make([]byte, 1<<20))); err != nil {
			t.Fatal(err)
		}
		if segs := segments(t, srv, p); len(segs) != 0 {
			t.Errorf("a 1 MiB object with 1 MiB segments has segments: %v", segs)
		}
	})

	t.Run("String", func(t *testing.T) {
		s := newStore(t, srv, "inst", nil)
		want := "swift://" + container + "/inst at " + srv.AuthURL
		if got := s.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	})

	t.Run("WrongKey", func(t *testing.T) {
		cfg, _ := swift.ConfigFromEnv(storage.Target{Scheme: "swift", Name: container, Prefix: "x"}, storagetest.Getenv(map[string]string{
			"BACKUP_SWIFT_AUTH_URL": srv.AuthURL, "BACKUP_SWIFT_USER": srv.User, "BACKUP_SWIFT_KEY": "wrong-key-value",
		}))
		s, err := swift.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = s.Put(context.Background(), "k", strings.NewReader("x"))
		if err == nil || !storage.IsPermanent(err) {
			t.Fatalf("Put with a wrong key: %v, want a permanent error", err)
		}
		if strings.Contains(err.Error(), "wrong-key-value") {
			t.Errorf("error contains the key: %v", err)
		}
	})

	t.Run("MissingContainer", func(t *testing.T) {
		cfg, _ := swift.ConfigFromEnv(storage.Target{Scheme: "swift", Name: "no-such-container"}, storagetest.Getenv(srv.Env()))
		s, err := swift.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		err = s.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("Put into a missing container: %v", err)
		}
		if _, err := s.List(ctx, ""); err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("List of a missing container: %v", err)
		}
		if _, err := s.Get(ctx, "k"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Get from a missing container: %v", err)
		}
	})

	t.Run("ObjectServerDown", func(t *testing.T) {
		p := nextPrefix()
		s := newStore(t, srv, p, nil)
		ctx := context.Background()
		if err := s.Put(ctx, "before", strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		srv.StopObjectServer()
		err := s.Put(ctx, "during", bytes.NewReader(make([]byte, 3<<20)))
		if err == nil || storage.IsPermanent(err) {
			t.Errorf("Put while the object server is down: %v, want a transient error", err)
		}
		t.Logf("Put while the object server is down: %v", err)
		if err := srv.StartObjectServer(); err != nil {
			t.Fatal(err)
		}
		objs, err := s.List(ctx, "")
		if err != nil || len(objs) != 1 || objs[0].Key != "before" {
			t.Fatalf("List after the restart = %v, %v; want only \"before\"", objs, err)
		}
		rc, err := s.Get(ctx, "before")
		if err != nil {
			t.Fatal(err)
		}
		rc.Close()
	})
}

func TestConfigFromEnv(t *testing.T) {
	target := storage.Target{Scheme: "swift", Name: "c"}
	cfg, problems := swift.ConfigFromEnv(target, storagetest.Getenv(map[string]string{
		"BACKUP_SWIFT_AUTH_URL": "https://auth.example.com/v3",
		"BACKUP_SWIFT_USER":     "u",
		"BACKUP_SWIFT_KEY":      "k",
	}))
	if len(problems) != 0 {
		t.Fatal(problems)
	}
	if cfg.SegmentSize != swift.DefaultSegmentSize {
		t.Errorf("SegmentSize = %d", cfg.SegmentSize)
	}
	_, problems = swift.ConfigFromEnv(target, storagetest.Getenv(map[string]string{
		"BACKUP_SWIFT_AUTH_URL":                      "https://auth.example.com/v3",
		"BACKUP_SWIFT_APPLICATION_CREDENTIAL_ID":     "id",
		"BACKUP_SWIFT_APPLICATION_CREDENTIAL_SECRET": "secret",
		"BACKUP_SWIFT_SEGMENT_SIZE":                  "64MiB",
	}))
	if len(problems) != 0 {
		t.Fatal(problems)
	}
}
