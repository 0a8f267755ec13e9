package storagetest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireServicesEnv, when "1", turns a missing test service into a test
// failure instead of a skip (scripts/test sets it).
const RequireServicesEnv = "MASTOKEEPER_TEST_REQUIRE_SERVICES"

// missing skips t, or fails it when RequireServicesEnv=1.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireServicesEnv) == "1" {
		t.Fatalf("%s (%s=1; run scripts/install-test-deps)", msg, RequireServicesEnv)
	}
	t.Skipf("%s (run scripts/install-test-deps)", msg)
}

// repoRoot is the directory of this module's go.mod, or "".
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/mastodon-on-balena/mastodon-balena")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// findTool finds an executable in the repository's .cache/bin, then on
// PATH, then in the extra directories.
func findTool(name string, extra ...string) string {
	if root := repoRoot(); root != "" {
		p := filepath.Join(root, ".cache", "bin", name)
		if isExecutable(p) {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range extra {
		p := filepath.Join(d, name)
		if isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// handedOut are the ports already given to a server of this test process:
// tests run side by side, and a port whose probe was closed could
// otherwise be given to two servers.
var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// freePorts returns n distinct free TCP ports on 127.0.0.1, none given
// before in this process.
func freePorts(n int) ([]int, error) {
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		if p := l.Addr().(*net.TCPAddr).Port; !handedOut[p] {
			handedOut[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// FreePort is a free TCP port on 127.0.0.1 for a server of a test, never
// given before in this process.
func FreePort() (int, error) {
	ps, err := freePorts(1)
	if err != nil {
		return 0, err
	}
	return ps[0], nil
}

// proc is a server process started for a test, in its own process group,
// its output in a log file.
type proc struct {
	name    string
	argv    []string
	env     []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error // how it exited
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exited() {
		return fmt.Errorf("%s is already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Env = p.env
	cmd.Dir = filepath.Dir(p.logPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Its own group, so Stop reaches its children; killed with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// exited reports whether the process has ended (p.mu held or not needed).
func (p *proc) exited() bool {
	if p.done == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// running reports whether the process is up.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exited()
}

// stop kills the process group and waits (at most 10 s) for it to go.
func (p *proc) stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	pid := cmd.Process.Pid
	// The group (Setpgid), and the process itself in case it left it
	// (Swift's servers call setsid).
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	// Anything still in the group (a forked child).
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// logTail is the end of the process's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

func (p *proc) exitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err.Error()
	}
	return "exit status 0"
}

// waitFor polls ready every 50 ms until it returns nil, a process of procs
// exits, or the deadline passes.
func waitFor(deadline time.Time, procs []*proc, what string, ready func() error) error {
	var last error
	for {
		for _, p := range procs {
			if !p.running() {
				return fmt.Errorf("%s exited (%s) while waiting for %s; its log ends:\n%s", p.name, p.exitStatus(), what, p.logTail())
			}
		}
		if last = ready(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s: %v", what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tcpReady(port int) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

var quickClient = &http.Client{Timeout: 3 * time.Second}
