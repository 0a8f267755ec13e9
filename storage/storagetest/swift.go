package storagetest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SwiftServer is a single-node OpenStack Swift (Debian's packages) run for
// a test on 127.0.0.1: memcached, the account, container and object
// servers and the proxy with tempauth (auth v1), SLO and DLO.
type SwiftServer struct {
	AuthURL string // http://127.0.0.1:PORT/auth/v1.0
	User    string // test:tester
	Key     string
	Dir     string // configs, rings, devices and logs

	procs   map[string]*proc // memcached, account, container, object, proxy
	order   []string
	mu      sync.Mutex
	stopped bool
}

// The Swift programs, from Debian's swift-* packages.
const (
	swiftBinDir = "/usr/bin"
	swiftPython = "/usr/bin/python3" // Debian's, which has eventlet
)

var swiftServers = []string{"account", "container", "object"}

// StartSwift starts a fresh single-node Swift of the test's own (one it may
// stop) with its rings, configs and devices in a temporary directory, on
// free ports of 127.0.0.1, waits (about 5 s) until it authenticates and
// serves, and stops every process at the test's cleanup. Without Debian's swift packages or memcached it skips
// t, or fails it when MASTOKEEPER_TEST_REQUIRE_SERVICES=1.
func StartSwift(t testing.TB) *SwiftServer {
	t.Helper()
	tools := swiftTools(t)
	s, err := startSwiftRetrying(t.TempDir(), tools, t.Logf)
	if err != nil {
		t.Fatalf("swift did not start: %v", err)
	}
	t.Cleanup(s.stopForGood)
	return s
}

// swiftTools finds the Swift programs, skipping (or failing) t without them.
func swiftTools(t testing.TB) map[string]string {
	var missingTools []string
	tools := map[string]string{}
	for _, name := range []string{"swift-account-server", "swift-container-server", "swift-object-server", "swift-proxy-server", "swift-ring-builder", "memcached"} {
		p := findTool(name, swiftBinDir, "/usr/sbin")
		if p == "" {
			missingTools = append(missingTools, name)
		}
		tools[name] = p
	}
	if !isExecutable(swiftPython) {
		missingTools = append(missingTools, swiftPython)
	}
	if len(missingTools) > 0 {
		missing(t, "OpenStack Swift is not installed (missing %s; Debian packages swift swift-proxy swift-account swift-container swift-object memcached)", strings.Join(missingTools, ", "))
	}
	return tools
}

func startSwiftRetrying(base string, tools map[string]string, logf func(string, ...any)) (*SwiftServer, error) {
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		start := time.Now()
		s, err := startSwift(filepath.Join(base, fmt.Sprintf("swift-%d", attempt)), tools)
		if err == nil {
			logf("swift: started in %v at %s", time.Since(start).Round(10*time.Millisecond), s.AuthURL)
			return s, nil
		}
		lastErr = err
		logf("swift: attempt %d failed: %v", attempt, err)
	}
	return nil, lastErr
}

// The shared Swift: one for every test of the process that never stops it
// (Swift takes seconds of CPU to start; a container per test keeps the
// tests apart).
var (
	sharedMu       sync.Mutex
	sharedSwift    *SwiftServer
	sharedSwiftDir string
)

// SharedSwift returns the process's shared Swift, started at its first
// use; StopShared stops it. A test that stops a server uses StartSwift.
func SharedSwift(t testing.TB) *SwiftServer {
	t.Helper()
	tools := swiftTools(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedSwift == nil {
		dir, err := os.MkdirTemp("", "mastokeeper-shared-swift-")
		if err != nil {
			t.Fatal(err)
		}
		if sharedSwift, err = startSwiftRetrying(dir, tools, t.Logf); err != nil {
			os.RemoveAll(dir)
			t.Fatalf("swift did not start: %v", err)
		}
		sharedSwiftDir = dir
	}
	return sharedSwift
}

// StopShared stops the shared servers (from TestMain, after the tests).
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedSwift != nil {
		sharedSwift.stopForGood()
		os.RemoveAll(sharedSwiftDir)
		sharedSwift = nil
	}
	if sharedGW != nil {
		sharedGW.stopForGood()
		os.RemoveAll(sharedGWDir)
		sharedGW = nil
	}
}

func startSwift(dir string, tools map[string]string) (s *SwiftServer, err error) {
	deadline := time.Now().Add(20 * time.Second)
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	port := map[string]int{"memcached": ports[0], "account": ports[1], "container": ports[2], "object": ports[3], "proxy": ports[4]}
	s = &SwiftServer{
		AuthURL: fmt.Sprintf("http://127.0.0.1:%d/auth/v1.0", port["proxy"]),
		User:    "test:tester",
		Key:     "testing-" + randomHex(6),
		Dir:     dir,
		procs:   map[string]*proc{},
	}
	defer func() {
		if err != nil {
			s.stopForGood()
		}
	}()
	for _, d := range []string{"devices/sdb1", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	runAs := "root"
	if u, err := user.Current(); err == nil {
		runAs = u.Username
	}
	env := []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + dir, "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1"}
	for _, name := range swiftServers {
		conf := fmt.Sprintf(`[DEFAULT]
bind_ip = 127.0.0.1
bind_port = %d
workers = 0
mount_check = false
swift_dir = %s
devices = %s
user = %s
log_name = %s-server
log_level = WARNING

[pipeline:main]
pipeline = %s-server

[app:%s-server]
use = egg:swift#%s
`, port[name], dir, filepath.Join(dir, "devices"), runAs, name, name, name, name)
		if err := os.WriteFile(filepath.Join(dir, name+"-server.conf"), []byte(conf), 0o644); err != nil {
			return nil, err
		}
	}
	proxyConf := fmt.Sprintf(`[DEFAULT]
bind_ip = 127.0.0.1
bind_port = %d
workers = 0
swift_dir = %s
user = %s
log_name = proxy-server
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = %s .admin
storage_url_scheme = default

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:%d

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo

[filter:versioned_writes]
use = egg:swift#versioned_writes
`, port["proxy"], dir, runAs, s.Key, port["memcached"])
	if err := os.WriteFile(filepath.Join(dir, "proxy-server.conf"), []byte(proxyConf), 0o644); err != nil {
		return nil, err
	}

	add := func(name string, argv ...string) {
		s.procs[name] = &proc{name: name, argv: argv, env: env, logPath: filepath.Join(dir, "log", name+".log")}
		s.order = append(s.order, name)
	}
	add("memcached", tools["memcached"], "-u", runAs, "-l", "127.0.0.1", "-p", strconv.Itoa(port["memcached"]), "-U", "0", "-m", "16")
	for _, name := range swiftServers {
		// The scripts start with #!/usr/bin/python3: Debian's, with eventlet.
		add(name, tools["swift-"+name+"-server"], filepath.Join(dir, name+"-server.conf"), "-v")
	}
	add("proxy", tools["swift-proxy-server"], filepath.Join(dir, "proxy-server.conf"), "-v")

	// The storage servers load no ring at start: build the rings while they
	// start; the proxy needs them.
	for _, name := range []string{"memcached", "account", "container", "object"} {
		if err := s.procs[name].start(); err != nil {
			return s, err
		}
	}
	if err := buildRings(dir, port, tools["swift-ring-builder"], env); err != nil {
		return s, err
	}
	if err := s.procs["proxy"].start(); err != nil {
		return s, err
	}
	all := s.all()
	for _, name := range s.order {
		if err := waitFor(deadline, all, name+" on port "+strconv.Itoa(port[name]), tcpReady(port[name])); err != nil {
			return s, err
		}
	}
	proxy := fmt.Sprintf("http://127.0.0.1:%d", port["proxy"])
	if err := waitFor(deadline, all, "the proxy's healthcheck", func() error {
		return httpOK(http.MethodGet, proxy+"/healthcheck", nil)
	}); err != nil {
		return s, err
	}
	// Authenticate (memcached) and reach the account server.
	if err := waitFor(deadline, all, "authentication and the account", func() error {
		storageURL, token, err := s.Auth()
		if err != nil {
			return err
		}
		return httpOK(http.MethodHead, storageURL, map[string]string{"X-Auth-Token": token})
	}); err != nil {
		return s, err
	}
	return s, nil
}

// buildRings writes the account, container and object rings (one device,
// one replica, 2^10 partitions): with Swift's Python API in one process,
// falling back to nine swift-ring-builder runs.
func buildRings(dir string, port map[string]int, ringBuilder string, env []string) error {
	script := `
import sys
from swift.common.ring import RingBuilder
d = sys.argv[1]
for arg in sys.argv[2:]:
    name, port = arg.split("=")
    b = RingBuilder(10, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": int(port),
               "device": "sdb1", "weight": 100, "meta": ""})
    b.rebalance()
    b.get_ring().save(d + "/" + name + ".ring.gz")
    b.save(d + "/" + name + ".builder")
`
	args := []string{"-c", script, dir}
	for _, name := range swiftServers {
		args = append(args, fmt.Sprintf("%s=%d", name, port[name]))
	}
	cmd := exec.Command(swiftPython, args...)
	cmd.Env = env
	out, err := runBounded(cmd, 30*time.Second)
	if err == nil {
		return nil
	}
	for _, name := range swiftServers {
		builder := filepath.Join(dir, name+".builder")
		for _, argv := range [][]string{
			{builder, "create", "10", "1", "1"},
			{builder, "add", fmt.Sprintf("r1z1-127.0.0.1:%d/sdb1", port[name]), "100"},
			{builder, "rebalance"},
		} {
			c := exec.Command(ringBuilder, argv...)
			c.Env = env
			if o, err2 := runBounded(c, 30*time.Second); err2 != nil {
				// rebalance exits 1 with warnings but still writes the ring
				if _, statErr := os.Stat(filepath.Join(dir, name+".ring.gz")); argv[1] == "rebalance" && statErr == nil {
					continue
				}
				return fmt.Errorf("building the %s ring: %v\n%s\n(the Python API first failed: %v\n%s)", name, err2, o, err, out)
			}
		}
	}
	return nil
}

// runBounded runs cmd, killing it after timeout; it returns its output.
func runBounded(cmd *exec.Cmd, timeout time.Duration) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.Bytes(), err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return out.Bytes(), fmt.Errorf("%s: timed out after %s", filepath.Base(cmd.Path), timeout)
	}
}

func httpOK(method, url string, headers map[string]string) error {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := quickClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d", method, url, resp.StatusCode)
	}
	return nil
}

func (s *SwiftServer) all() []*proc {
	out := make([]*proc, 0, len(s.order))
	for _, name := range s.order {
		out = append(out, s.procs[name])
	}
	return out
}

// Auth authenticates (auth v1) and returns the account's storage URL and a
// token.
func (s *SwiftServer) Auth() (storageURL, token string, err error) {
	req, err := http.NewRequest(http.MethodGet, s.AuthURL, nil)
	if err != nil {
		return "", "", err
	}
	req.Header.Set("X-Auth-User", s.User)
	req.Header.Set("X-Auth-Key", s.Key)
	resp, err := quickClient.Do(req)
	if err != nil {
		return "", "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", "", fmt.Errorf("auth: HTTP %d", resp.StatusCode)
	}
	storageURL, token = resp.Header.Get("X-Storage-Url"), resp.Header.Get("X-Auth-Token")
	if storageURL == "" || token == "" {
		return "", "", fmt.Errorf("auth: no storage URL or token in the answer")
	}
	return storageURL, token, nil
}

// CreateContainer creates a container in the test account.
func (s *SwiftServer) CreateContainer(name string) error {
	storageURL, token, err := s.Auth()
	if err != nil {
		return err
	}
	return httpOK(http.MethodPut, storageURL+"/"+name, map[string]string{"X-Auth-Token": token})
}

// Env is the BACKUP_SWIFT_* variables that reach this server.
func (s *SwiftServer) Env() map[string]string {
	return map[string]string{
		"BACKUP_SWIFT_AUTH_URL": s.AuthURL,
		"BACKUP_SWIFT_USER":     s.User,
		"BACKUP_SWIFT_KEY":      s.Key,
	}
}

// Target is BACKUP_TARGET for prefix (may be empty) in container.
func (s *SwiftServer) Target(container, prefix string) string {
	if prefix == "" {
		return "swift://" + container
	}
	return "swift://" + container + "/" + prefix
}

// StopObjectServer kills the object server (as a crash would): the proxy
// still answers, with errors. StartObjectServer brings it back.
func (s *SwiftServer) StopObjectServer() { s.procs["object"].stop() }

// StartObjectServer restarts the object server after StopObjectServer and
// waits (at most 15 s) until it accepts connections.
func (s *SwiftServer) StartObjectServer() error { return s.restart("object") }

// StopProxy kills the proxy: clients get "connection refused".
func (s *SwiftServer) StopProxy() { s.procs["proxy"].stop() }

// StartProxy restarts the proxy after StopProxy and waits until it serves.
func (s *SwiftServer) StartProxy() error { return s.restart("proxy") }

func (s *SwiftServer) restart(name string) error {
	s.mu.Lock()
	stopped := s.stopped
	s.mu.Unlock()
	if stopped {
		return fmt.Errorf("swift: stopped for good")
	}
	p := s.procs[name]
	if err := p.start(); err != nil {
		return err
	}
	portArg := ""
	conf, err := os.ReadFile(p.argv[1])
	if err == nil {
		for _, line := range strings.Split(string(conf), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "bind_port" {
				portArg = strings.TrimSpace(v)
				break
			}
		}
	}
	port, _ := strconv.Atoi(portArg)
	return waitFor(time.Now().Add(15*time.Second), []*proc{p}, name+" on port "+portArg, tcpReady(port))
}

// Stop kills every process of the server (as a crash would).
func (s *SwiftServer) Stop() {
	var wg sync.WaitGroup
	for _, p := range s.all() {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop() }()
	}
	wg.Wait()
}

func (s *SwiftServer) stopForGood() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.Stop()
}
