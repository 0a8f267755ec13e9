package storagetest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// VersityGW is a versitygw S3 gateway (posix backend) run for a test on
// 127.0.0.1, plain HTTP, region us-east-1, path-style.
type VersityGW struct {
	Endpoint  string // http://127.0.0.1:PORT
	Region    string // us-east-1
	AccessKey string
	SecretKey string
	Bucket    string // a bucket created at start
	Dir       string // the gateway's root: each directory in it is a bucket

	p      *proc
	mu     sync.Mutex
	closed bool
}

// StartVersityGW starts versitygw (from .cache/bin or PATH) on a free port
// with a fresh root directory and one bucket, and stops it at the test's
// cleanup. Without the binary it skips t, or fails it when
// MASTOKEEPER_TEST_REQUIRE_SERVICES=1.
func StartVersityGW(t testing.TB) *VersityGW {
	t.Helper()
	g, err := startVersityGW(t, t.TempDir())
	if g != nil {
		t.Cleanup(g.stopForGood)
	}
	if err != nil {
		t.Fatalf("versitygw did not start: %v", err)
	}
	return g
}

func startVersityGW(t testing.TB, base string) (*VersityGW, error) {
	bin := findTool("versitygw")
	if bin == "" {
		missing(t, "versitygw not found (neither in .cache/bin nor on PATH)")
	}
	g := &VersityGW{
		Region:    "us-east-1",
		AccessKey: "AK" + randomHex(9),
		SecretKey: "SK" + randomHex(18),
		Bucket:    "test-bucket",
		Dir:       filepath.Join(base, "root"),
	}
	if err := os.MkdirAll(filepath.Join(g.Dir, g.Bucket), 0o700); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return g, fmt.Errorf("no free port: %w", err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		g.Endpoint = "http://" + addr
		g.p = &proc{
			name: "versitygw",
			argv: []string{bin, "--port", addr, "--quiet", "posix", g.Dir},
			env: []string{
				"PATH=" + os.Getenv("PATH"),
				"HOME=" + base,
				"ROOT_ACCESS_KEY=" + g.AccessKey,
				"ROOT_SECRET_KEY=" + g.SecretKey,
			},
			logPath: filepath.Join(base, fmt.Sprintf("versitygw-%d.log", attempt)),
		}
		start := time.Now()
		if lastErr = g.Start(); lastErr == nil {
			t.Logf("versitygw: started in %v at %s", time.Since(start).Round(10*time.Millisecond), g.Endpoint)
			return g, nil
		}
		g.p.stop()
	}
	return g, lastErr
}

var (
	sharedGW    *VersityGW
	sharedGWDir string
)

// SharedVersityGW returns the process's shared gateway, started at its
// first use; StopShared stops it. Give each test a bucket of its own
// (CreateBucket); a test that stops a server uses StartVersityGW.
func SharedVersityGW(t testing.TB) *VersityGW {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedGW == nil {
		dir, err := os.MkdirTemp("", "mastokeeper-shared-versitygw-")
		if err != nil {
			t.Fatal(err)
		}
		g, err := startVersityGW(t, dir)
		if err != nil {
			if g != nil {
				g.stopForGood()
			}
			os.RemoveAll(dir)
			t.Fatalf("versitygw did not start: %v", err)
		}
		sharedGW, sharedGWDir = g, dir
	}
	return sharedGW
}

// Start (re)starts the gateway after Stop, on the same address and root,
// and waits (at most 10 s) until it answers.
func (g *VersityGW) Start() error {
	g.mu.Lock()
	closed := g.closed
	g.mu.Unlock()
	if closed {
		return fmt.Errorf("versitygw: the test is over")
	}
	if err := g.p.start(); err != nil {
		return err
	}
	err := waitFor(time.Now().Add(10*time.Second), []*proc{g.p}, "versitygw at "+g.Endpoint, func() error {
		resp, err := quickClient.Get(g.Endpoint + "/")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil // any answer (403 without credentials) means it serves
	})
	if err != nil {
		g.p.stop()
	}
	return err
}

// Stop kills the gateway (as a crash would); Start brings it back.
func (g *VersityGW) Stop() { g.p.stop() }

func (g *VersityGW) stopForGood() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	if g.p != nil {
		g.p.stop()
	}
}

// CreateBucket creates another bucket (a directory of the root).
func (g *VersityGW) CreateBucket(name string) error {
	return os.Mkdir(filepath.Join(g.Dir, name), 0o700)
}

// Env is the BACKUP_S3_* variables that reach this gateway.
func (g *VersityGW) Env() map[string]string {
	return map[string]string{
		"BACKUP_S3_ENDPOINT":          g.Endpoint,
		"BACKUP_S3_REGION":            g.Region,
		"BACKUP_S3_ACCESS_KEY_ID":     g.AccessKey,
		"BACKUP_S3_SECRET_ACCESS_KEY": g.SecretKey,
		"BACKUP_S3_PATH_STYLE":        "true",
	}
}

// Target is BACKUP_TARGET for prefix (may be empty) in the bucket.
func (g *VersityGW) Target(prefix string) string {
	if prefix == "" {
		return "s3://" + g.Bucket
	}
	return "s3://" + g.Bucket + "/" + prefix
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Getenv returns a getenv that reads env, then nothing else.
func Getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}
