package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mastodon-on-balena/mastodon-balena/storage/storagetest"
)

// stack is one simulated device: a keeper state volume, a Redis, and a db
// service started through `mastokeeper launch postgres` - so PostgreSQL is
// initialised with the password the keeper generates, as on a device.
type stack struct {
	t         *testing.T
	base      string
	stateDir  string
	pgPort    int
	redisPort int
	env       []string // the device's environment, shared by every service

	mu   sync.Mutex
	logs bytes.Buffer // everything every process printed, for the secret scan
}

const mastodonVersion = "v4.7.0"

func freePort(t *testing.T) int {
	t.Helper()
	p, err := storagetest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func requireServerTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"initdb", "postgres", "redis-server", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			stackMissing(t, "%s (PostgreSQL server binaries and redis-server on PATH)", tool)
		}
	}
}

// newStack starts Redis and the db service; the db waits, as on a device,
// until a keeper has generated the instance's passwords.
func newStack(t *testing.T, env ...string) *stack {
	t.Helper()
	requireServerTools(t)
	base, err := os.MkdirTemp("", "mk-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(base, 0o755)
	s := &stack{t: t, base: base, stateDir: filepath.Join(base, "keeper"), pgPort: freePort(t), redisPort: freePort(t)}
	pgData, pgSock := filepath.Join(base, "pg"), filepath.Join(base, "pgsock")
	for _, d := range []string{pgData, pgSock} {
		os.Mkdir(d, 0o700)
		if u, err := user.Lookup("postgres"); err == nil && os.Geteuid() == 0 {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			os.Chown(d, uid, gid)
		}
	}
	s.env = append([]string{
		"PATH=" + standinDir + ":" + os.Getenv("PATH"),
		"HOME=" + base,
		"MASTOKEEPER_STATE_DIR=" + s.stateDir,
		"MASTOKEEPER_MASTODON_VERSION=" + mastodonVersion,
		"DB_HOST=127.0.0.1", "DB_PORT=" + strconv.Itoa(s.pgPort),
		"REDIS_HOST=127.0.0.1", "REDIS_PORT=" + strconv.Itoa(s.redisPort),
		"LOCAL_DOMAIN=social.example.test",
		"ADMIN_USERNAME=alice",
	}, env...)

	redis := exec.Command("redis-server", "--port", strconv.Itoa(s.redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	redis.Stdout, redis.Stderr = io.Discard, io.Discard
	if err := redis.Start(); err != nil {
		t.Fatal(err)
	}
	db := exec.Command(keeperBin, "launch", "postgres", "--", "docker-entrypoint.sh", "postgres")
	db.Env = append(s.with(), "PGDATA="+pgData, "PGPORT="+strconv.Itoa(s.pgPort), "PG_SOCKET_DIR="+pgSock)
	db.Stdout, db.Stderr = s.logWriter("db"), s.logWriter("db")
	db.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	db.WaitDelay = 5 * time.Second
	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-db.Process.Pid, syscall.SIGINT) // PostgreSQL's fast shutdown
		redis.Process.Kill()
		waitOrKill(db, 20*time.Second)
		syscall.Kill(-db.Process.Pid, syscall.SIGKILL)
		redis.Wait()
		s.assertNoSecretInLogs()
		if t.Failed() {
			t.Logf("all output of this device:\n%s", s.allLogs())
		}
		os.RemoveAll(base)
	})
	return s
}

func waitOrKill(c *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		c.Process.Kill()
		<-done
	}
}

// with returns the device's environment with extra variables set (a later
// assignment of a name wins, as in a shell).
func (s *stack) with(extra ...string) []string {
	m := map[string]string{}
	var order []string
	for _, kv := range append(append([]string{}, s.env...), extra...) {
		k, v, _ := strings.Cut(kv, "=")
		if _, ok := m[k]; !ok {
			order = append(order, k)
		}
		m[k] = v
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		if m[k] != "\x00unset" {
			out = append(out, k+"="+m[k])
		}
	}
	return out
}

// unset, passed to with, removes a variable.
func unset(name string) string { return name + "=\x00unset" }

type prefixWriter struct {
	s      *stack
	prefix string
}

func (w prefixWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if l != "" {
			w.s.logs.WriteString(w.prefix + " | " + l)
		}
	}
	return len(p), nil
}

func (s *stack) logWriter(prefix string) io.Writer { return prefixWriter{s, prefix} }

func (s *stack) allLogs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

// result is one finished mastokeeper run.
type result struct {
	out  string // stdout and stderr
	code int
}

// keeper runs mastokeeper ARGS to completion with the device's environment
// plus extra.
func (s *stack) keeper(extra []string, args ...string) result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, keeperBin, args...)
	cmd.Env = s.with(extra...)
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	w := io.MultiWriter(&out, s.logWriter(strings.Join(args, " ")))
	cmd.Stdout, cmd.Stderr = w, w
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("mastokeeper %v: %v", args, err)
	}
	return result{out.String(), code}
}

// provision runs `mastokeeper provision` and requires success.
func (s *stack) provision(extra ...string) result {
	s.t.Helper()
	r := s.keeper(extra, "provision")
	if r.code != 0 {
		s.t.Fatalf("provision exited %d:\n%s", r.code, r.out)
	}
	return r
}

// running is a mastokeeper process the test controls, in its own process
// group so that killing it kills its children, as a container's death does.
type running struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	code  int
}

func (s *stack) start(extra []string, args ...string) *running {
	s.t.Helper()
	cmd := exec.Command(keeperBin, args...)
	cmd.Env = s.with(extra...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	r := &running{cmd: cmd, lines: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.logWriter(strings.Join(args, " ")).Write([]byte(sc.Text() + "\n"))
			select {
			case r.lines <- sc.Text():
			default:
			}
		}
		close(r.lines)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		r.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		}
		close(r.done)
	}()
	s.t.Cleanup(func() { r.kill() })
	return r
}

// kill sends SIGKILL to the whole process group and waits.
func (r *running) kill() {
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	<-r.done
}

// waitFor waits for a line containing text; false when the process ended
// or the time ran out first.
func (r *running) waitFor(text string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-r.lines:
			if !ok {
				return false
			}
			if strings.Contains(l, text) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

func (r *running) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(d):
		r.kill()
		t.Fatalf("%v did not finish within %s", r.cmd.Args, d)
		return -1
	}
}

// record is the keeper's instance record as stored.
type record struct {
	LocalDomain string            `json:"local_domain"`
	InstanceID  string            `json:"instance_id"`
	Adopted     []string          `json:"adopted"`
	Secrets     map[string]string `json:"secrets"`
}

func (s *stack) recordBytes() []byte {
	b, err := os.ReadFile(filepath.Join(s.stateDir, "instance.json"))
	if err != nil {
		return nil
	}
	return b
}

func (s *stack) record() record {
	s.t.Helper()
	var r record
	b := s.recordBytes()
	if b == nil {
		s.t.Fatal("no instance record")
	}
	if err := json.Unmarshal(b, &r); err != nil {
		s.t.Fatal(err)
	}
	return r
}

// db connects to a database as the superuser with the recorded password.
func (s *stack) db(database string) *pgx.Conn {
	s.t.Helper()
	return s.connect("postgres", s.record().Secrets["POSTGRES_PASSWORD"], database)
}

func (s *stack) connect(user, password, database string) *pgx.Conn {
	s.t.Helper()
	c, err := s.tryConnect(user, password, database)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func (s *stack) tryConnect(user, password, database string) (*pgx.Conn, error) {
	cfg, _ := pgx.ParseConfig("")
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.Database = "127.0.0.1", uint16(s.pgPort), user, password, database
	cfg.TLSConfig, cfg.Fallbacks = nil, nil
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// count runs a counting query in Mastodon's database.
func (s *stack) count(query string, args ...any) int {
	s.t.Helper()
	var n int
	if err := s.db("mastodon_production").QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// stateSnapshot maps every file of the keeper's volume to its content.
func (s *stack) stateSnapshot() map[string]string {
	s.t.Helper()
	snap := map[string]string{}
	filepath.WalkDir(s.stateDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != ".lock" {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(s.stateDir, p)
			snap[rel] = string(b)
		}
		return nil
	})
	return snap
}

func (s *stack) markers() []string {
	ents, _ := os.ReadDir(filepath.Join(s.stateDir, "markers"))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// assertNoSecretInLogs checks that no recorded secret appears in anything
// any process of the device printed, nor in PostgreSQL's arguments.
func (s *stack) assertNoSecretInLogs() {
	b := s.recordBytes()
	if b == nil {
		return
	}
	var r record
	json.Unmarshal(b, &r)
	logs := s.allLogs()
	for name, v := range r.Secrets {
		if v != "" && strings.Contains(logs, v) {
			s.t.Errorf("the value of %s appears in the logs", name)
		}
	}
}

// assertNoSecretInAnyCmdline checks every process on the machine: no
// recorded secret may appear as a process argument.
func (s *stack) assertNoSecretInAnyCmdline() {
	s.t.Helper()
	r := s.record()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	if len(procs) == 0 {
		s.t.Fatal("no /proc to inspect")
	}
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for name, v := range r.Secrets {
			if bytes.Contains(b, []byte(v)) {
				s.t.Errorf("the value of %s is an argument of %s: %q", name, p, strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
}
