package s3_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/s3"
	"github.com/mastodon-on-balena/mastodon-balena/storage/storagetest"
)

var prefixes atomic.Int64

func openStore(t *testing.T, gw *storagetest.VersityGW, modify func(env map[string]string)) storage.Store {
	t.Helper()
	env := gw.Env()
	env["BACKUP_S3_PART_SIZE"] = "5MiB"
	if modify != nil {
		modify(env)
	}
	target := gw.Target(fmt.Sprintf("tests/%d", prefixes.Add(1)))
	s, err := storage.Open(context.Background(), target, storagetest.Getenv(env))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestS3(t *testing.T) {
	gw := storagetest.StartVersityGW(t)

	t.Run("Conformance", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Store { return openStore(t, gw, nil) }, gw.AccessKey, gw.SecretKey)
	})

	t.Run("NoIncompleteUploads", func(t *testing.T) {
		// The failed and cancelled Puts of the suite left no multipart
		// upload behind.
		client, err := minio.New(strings.TrimPrefix(gw.Endpoint, "http://"), &minio.Options{
			Creds: credentials.NewStaticV4(gw.AccessKey, gw.SecretKey, ""), Region: gw.Region,
		})
		if err != nil {
			t.Fatal(err)
		}
		for up := range client.ListIncompleteUploads(context.Background(), gw.Bucket, "", true) {
			if up.Err != nil {
				t.Fatal(up.Err)
			}
			t.Errorf("incomplete upload left: %s (%s)", up.Key, up.UploadID)
		}
	})

	t.Run("NoPrefix", func(t *testing.T) {
		if err := gw.CreateBucket("bare"); err != nil {
			t.Fatal(err)
		}
		env := gw.Env()
		s, err := storage.Open(context.Background(), "s3://bare", storagetest.Getenv(env))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := s.Put(ctx, "a/b", strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		objs, err := s.List(ctx, "")
		if err != nil || len(objs) != 1 || objs[0].Key != "a/b" {
			t.Fatalf("List = %v, %v", objs, err)
		}
	})

	t.Run("PrefixesDoNotMix", func(t *testing.T) {
		// One instance's store never sees another's objects, even when one
		// prefix starts with the other.
		ctx := context.Background()
		env := gw.Env()
		a, err := storage.Open(ctx, gw.Target("inst/a"), storagetest.Getenv(env))
		if err != nil {
			t.Fatal(err)
		}
		ab, err := storage.Open(ctx, gw.Target("inst/ab"), storagetest.Getenv(env))
		if err != nil {
			t.Fatal(err)
		}
		if err := ab.Put(ctx, "k", strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		objs, err := a.List(ctx, "")
		if err != nil || len(objs) != 0 {
			t.Fatalf("List of inst/a = %v, %v; want nothing", objs, err)
		}
		if _, err := a.Get(ctx, "k"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Get from inst/a of inst/ab's key: %v", err)
		}
	})

	t.Run("String", func(t *testing.T) {
		s := openStore(t, gw, nil)
		want := fmt.Sprintf("s3://%s/tests/", gw.Bucket)
		if got := s.String(); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, " at "+gw.Endpoint) {
			t.Errorf("String() = %q, want %s<n> at %s", got, want, gw.Endpoint)
		}
	})

	t.Run("WrongSecret", func(t *testing.T) {
		s := openStore(t, gw, func(env map[string]string) { env["BACKUP_S3_SECRET_ACCESS_KEY"] = "wrong-secret-value" })
		ctx := context.Background()
		err := s.Put(ctx, "k", strings.NewReader("x"))
		if err == nil {
			t.Fatal("Put with a wrong secret: no error")
		}
		if !storage.IsPermanent(err) {
			t.Errorf("a wrong secret should be a permanent error: %v", err)
		}
		for _, sec := range []string{"wrong-secret-value", gw.AccessKey} {
			if strings.Contains(err.Error(), sec) {
				t.Errorf("error contains a credential: %v", err)
			}
		}
		if _, err := s.List(ctx, ""); err == nil || !storage.IsPermanent(err) {
			t.Errorf("List with a wrong secret: %v, want a permanent error", err)
		}
	})

	t.Run("MissingBucket", func(t *testing.T) {
		ctx := context.Background()
		s, err := storage.Open(ctx, "s3://no-such-bucket/x", storagetest.Getenv(gw.Env()))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Put(ctx, "k", strings.NewReader("x"))
		if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "s3: put k:") {
			t.Fatalf("Put into a missing bucket: %v, want a permanent, wrapped error", err)
		}
	})

	t.Run("ServerDown", func(t *testing.T) {
		// A stopped server is a transient error; back up, all is there.
		s := openStore(t, gw, nil)
		ctx := context.Background()
		if err := s.Put(ctx, "before", strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		gw.Stop()
		err := s.Put(ctx, "during", bytes.NewReader(make([]byte, 6<<20)))
		if err == nil || storage.IsPermanent(err) {
			t.Errorf("Put while the server is down: %v, want a transient error", err)
		}
		t.Logf("Put while the server is down: %v", err)
		if _, err := s.List(ctx, ""); err == nil || !storage.IsTransient(err) {
			t.Errorf("List while the server is down: %v, want a transient error", err)
		}
		if err := gw.Start(); err != nil {
			t.Fatal(err)
		}
		objs, err := s.List(ctx, "")
		if err != nil || len(objs) != 1 || objs[0].Key != "before" {
			t.Fatalf("List after the restart = %v, %v; want only \"before\"", objs, err)
		}
	})
}

func TestConfigFromEnv(t *testing.T) {
	target := storage.Target{Scheme: "s3", Name: "my-bucket", Prefix: "p"}
	cfg, problems := s3.ConfigFromEnv(target, storagetest.Getenv(map[string]string{
		"BACKUP_S3_ACCESS_KEY_ID":     "AK",
		"BACKUP_S3_SECRET_ACCESS_KEY": "SK",
	}))
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	if cfg.Endpoint != s3.DefaultEndpoint || cfg.PartSize != s3.DefaultPartSize || cfg.PathStyle != s3.PathStyleAuto {
		t.Errorf("defaults: %+v", cfg)
	}
	for in, want := range map[string]int64{"16MiB": 16 << 20, "64MiB": 64 << 20, "5MiB": 5 << 20, "1GiB": 1 << 30, "8388608": 8 << 20, "32m": 32 << 20} {
		cfg, problems := s3.ConfigFromEnv(target, storagetest.Getenv(map[string]string{
			"BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK", "BACKUP_S3_PART_SIZE": in,
		}))
		if len(problems) != 0 || cfg.PartSize != want {
			t.Errorf("PART_SIZE=%s: %d, %v; want %d", in, cfg.PartSize, problems, want)
		}
	}
	for _, ep := range []string{"s3.example.com", "s3.example.com:9000", "https://s3.example.com", "http://127.0.0.1:7070", "http://127.0.0.1:7070/"} {
		_, problems := s3.ConfigFromEnv(target, storagetest.Getenv(map[string]string{
			"BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK", "BACKUP_S3_ENDPOINT": ep,
		}))
		if len(problems) != 0 {
			t.Errorf("ENDPOINT=%s: %v", ep, problems)
		}
	}
}

func TestStringOfEndpoints(t *testing.T) {
	for ep, want := range map[string]string{
		"":                      "s3://bkt/p at https://s3.amazonaws.com",
		"s3.example.com":        "s3://bkt/p at https://s3.example.com",
		"http://127.0.0.1:7070": "s3://bkt/p at http://127.0.0.1:7070",
	} {
		s, err := storage.Open(context.Background(), "s3://bkt/p", storagetest.Getenv(map[string]string{
			"BACKUP_S3_ENDPOINT": ep, "BACKUP_S3_ACCESS_KEY_ID": "AKIAEXAMPLE", "BACKUP_S3_SECRET_ACCESS_KEY": "secret-example",
		}))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.String(); got != want {
			t.Errorf("endpoint %q: String() = %q, want %q", ep, got, want)
		}
	}
}
