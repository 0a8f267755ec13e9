package e2e

// The Tor onion service: Debian's tor with the product's torrc (through
// `mastokeeper launch tor`), without network access - tor makes its key
// and address all the same.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
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

	"github.com/mastodon-on-balena/mastodon-balena/smoke"
)

// runningTor is `mastokeeper launch tor -- tor` as the tor service runs it.
type runningTor struct {
	dir  string
	logs *bytes.Buffer
	mu   *sync.Mutex
}

func (r *runningTor) log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

// hostname is the address tor wrote, "" before it did.
func (r *runningTor) hostname() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "onion_service", "hostname"))
	return strings.TrimSpace(string(b))
}

func (r *runningTor) waitForHostname(t *testing.T, want string, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if h := r.hostname(); h != "" && (want == "" || h == want) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("tor has no onion address %q after %s (has %q):\n%s", want, within, r.hostname(), r.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startTor(t *testing.T, dir, upstream string, env ...string) *runningTor {
	t.Helper()
	stackRequireTool(t, "tor")
	// No network here: tor still makes the key and address at its start.
	cmd := exec.Command(keeperBin, "launch", "tor", "--", "tor", "--DisableNetwork", "1")
	cmd.Env = append(os.Environ(), append([]string{"TOR_DATA_DIR=" + dir, "TOR_UPSTREAM=" + upstream, "TMPDIR=" + t.TempDir()}, env...)...)
	r := &runningTor{dir: dir, logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	cmd.Stdout, cmd.Stderr = stackLockedWriter{w: r.logs, mu: r.mu}, stackLockedWriter{w: r.logs, mu: r.mu}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("launch tor did not stop on SIGTERM")
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("tor's output:\n%s", r.log())
		}
	})
	return r
}

// The onion address: tor makes it, the keeper keeps its key in the
// instance record (so backups carry it) and gives the name to Mastodon
// (ALTERNATE_DOMAINS), to the proxy (Onion-Location, and the onion site
// as plain HTTP) and to status; on new hardware the restore brings the
// same address back.
func TestTheOnionAddressIsServedBackedUpAndMovedWithTheInstance(t *testing.T) {
	t.Parallel()
	old, _ := backedUpWith(t, `SELECT 1`)
	live := filepath.Join(old.base, "frontdoor", "live")
	os.MkdirAll(live, 0o755)
	torEnv := []string{"TOR_ENABLED=true", "TOR_DATA_DIR=" + filepath.Join(old.base, "tor"), "FRONTDOOR_DIR=" + live}
	old.env = append(old.env, torEnv...)

	// The proxy ends HTTPS itself (Caddy's own CA here), as with an own domain.
	web, schemes := webTellingTheScheme(t, "social.example.test")
	data := t.TempDir()
	p := startProxy(t, data, freePort(t), freePort(t), "WEB_UPSTREAM="+web, "MASTODON_PUBLIC="+t.TempDir(),
		"STARTING_DIR="+filepath.Dir(live), "LOCAL_DOMAIN=social.example.test", "PROXY_MODE=local", "TOR_ENABLED=true")
	tor := startTor(t, filepath.Join(old.base, "tor"), "127.0.0.1:"+strconv.Itoa(p.httpPort), "TOR_ENABLED=true")
	onion := tor.waitForHostname(t, "", 30*time.Second)

	k := old.start(old.env, "run")
	if !k.waitFor("the onion service's address is "+onion, 60*time.Second) {
		t.Fatalf("the keeper did not adopt the onion address:\n%s", old.allLogs())
	}
	var rec struct {
		Onion struct {
			Hostname  string `json:"hostname"`
			SecretKey []byte `json:"hs_ed25519_secret_key"`
		} `json:"onion"`
	}
	json.Unmarshal(old.recordBytes(), &rec)
	secret, _ := os.ReadFile(filepath.Join(old.base, "tor", "onion_service", "hs_ed25519_secret_key"))
	if rec.Onion.Hostname != onion || !bytes.Equal(rec.Onion.SecretKey, secret) {
		t.Errorf("the record holds onion %q and not tor's key", rec.Onion.Hostname)
	}
	if b, _ := os.ReadFile(filepath.Join(live, "onion-hostname")); string(b) != onion {
		t.Errorf("the proxy was told %q", b)
	}
	k.kill()

	// Mastodon answers for the onion name; status shows it.
	l := old.keeper(old.env, "launch", "mastodon", "--", "sh", "-c", `echo "ALTERNATE_DOMAINS=$ALTERNATE_DOMAINS"`)
	if !strings.Contains(l.out, "ALTERNATE_DOMAINS="+onion+"\n") {
		t.Errorf("Mastodon's environment lacks the onion address:\n%s", l.out)
	}
	if st := old.keeper(old.env, "status"); !strings.Contains(st.out, "http://"+onion) {
		t.Errorf("status does not show the onion address:\n%s", st.out)
	}

	// The proxy: Onion-Location on the clearnet site; the onion site as
	// plain HTTP, with Mastodon told so (it then skips its HTTPS redirect).
	rootPEM, _ := os.ReadFile(filepath.Join(data, "caddy", "pki", "authorities", "local", "root.crt"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	waitForCertificate(t, p, roots, "social.example.test", 30*time.Second)
	c := loopback(p, roots)
	resp, err := c.Get("https://social.example.test/@alice?x=1")
	if err != nil || resp.Header.Get("Onion-Location") != "http://"+onion+"/@alice?x=1" {
		t.Fatalf("clearnet: %v, Onion-Location %q", err, resp.Header.Get("Onion-Location"))
	}
	req, _ := http.NewRequest("GET", "http://"+onion+"/health", nil)
	resp, err = c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the onion site: %v %v", err, resp)
	}
	if s := schemes(); len(s) < 2 || s[len(s)-1] != onion+" http" || s[0] != "social.example.test https" {
		t.Errorf("Mastodon was told %v", s)
	}
	// What an admin's smoke check says of it.
	ch, _ := smoke.New("https://social.example.test")
	ch.Client = c
	for _, r := range ch.Run(context.Background()) {
		if r.Check == "onion" && (!r.OK || !strings.Contains(r.Detail, onion+", which the proxy serves as plain HTTP")) {
			t.Errorf("smoke onion: %+v", r)
		}
	}

	// New hardware: its tor made another address before the restore; the
	// keeper puts the instance's key back and tor restarts with it.
	old.backup(t)
	nu := newDevice(t, old)
	nuTorDir := filepath.Join(nu.base, "tor")
	nuLive := filepath.Join(nu.base, "frontdoor", "live")
	os.MkdirAll(nuLive, 0o755)
	nu.env = append(nu.env, "TOR_DATA_DIR="+nuTorDir, "FRONTDOOR_DIR="+nuLive)
	nuTor := startTor(t, nuTorDir, "127.0.0.1:"+strconv.Itoa(p.httpPort), "TOR_ENABLED=true")
	if other := nuTor.waitForHostname(t, "", 30*time.Second); other == onion {
		t.Fatal("two tors made the same address")
	}
	if r := nu.keeper(nu.env, "restore"); r.code != 0 {
		t.Fatalf("restore exited %d:\n%s", r.code, r.out)
	}
	nk := nu.start(nu.env, "run")
	if !nk.waitFor("put the instance's onion key into tor's volume", 60*time.Second) {
		t.Fatalf("the keeper did not restore the onion key:\n%s", nu.allLogs())
	}
	deadline := time.Now().Add(40 * time.Second)
	for !strings.Contains(nuTor.log(), "restarting tor with it") || strings.Count(nuTor.log(), "tor started") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("tor did not restart with the restored key")
		}
		time.Sleep(200 * time.Millisecond)
	}
	nuTor.waitForHostname(t, onion, 10*time.Second)
	if b, _ := os.ReadFile(filepath.Join(nuLive, "onion-hostname")); string(b) != onion {
		t.Errorf("the new device's proxy was told %q", b)
	}
}

// Off by default: the tor service says how to turn it on, once, and idles
// until it is stopped - never a restart loop.
func TestTorAndTheTunnelIdleQuietlyUntilEnabled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		what string
		env  []string
		says string
	}{
		{"tor", nil, "set TOR_ENABLED=true"},
		{"cloudflared", nil, "set PROXY_MODE=cloudflare-tunnel, LOCAL_DOMAIN and CLOUDFLARE_TUNNEL_TOKEN"},
		// A token with another mode is a bad combination: refused, and idle.
		{"cloudflared", []string{"CLOUDFLARE_TUNNEL_TOKEN=eyJhIjoiYiJ9", "PROXY_MODE=https", "LOCAL_DOMAIN=social.example.test"}, "set PROXY_MODE=cloudflare-tunnel or remove the token"},
	} {
		cmd := exec.Command(keeperBin, "launch", tc.what, "--", "false")
		cmd.Env = append(os.Environ(), tc.env...)
		var out bytes.Buffer
		var mu sync.Mutex
		cmd.Stdout, cmd.Stderr = stackLockedWriter{w: &out, mu: &mu}, stackLockedWriter{w: &out, mu: &mu}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond)
		if cmd.ProcessState != nil {
			t.Fatalf("%s exited", tc.what)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		mu.Lock()
		got := out.String()
		mu.Unlock()
		if err != nil || !strings.Contains(got, tc.says) || strings.Count(got, "\n") != 1 && tc.env == nil {
			t.Errorf("launch %s %v: %v, want one line saying %q and exit 0 on SIGTERM:\n%s", tc.what, tc.env, err, tc.says, got)
		}
		if strings.Contains(got, "eyJhIjoiYiJ9") {
			t.Errorf("the tunnel's token was logged:\n%s", got)
		}
	}
}

// With its token, the tunnel starts cloudflared with the token in
// TUNNEL_TOKEN, where cloudflared reads it - never in its arguments.
func TestTheTunnelGetsItsTokenThroughTheEnvironment(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(keeperBin, "launch", "cloudflared", "--", "sh", "-c", `echo "args=$*"; env`, "sh", "tunnel", "run")
	cmd.Env = append(os.Environ(), "CLOUDFLARE_TUNNEL_TOKEN=eyJhIjoiYiJ9", "LOCAL_DOMAIN=social.example.test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !strings.Contains(string(out), "TUNNEL_TOKEN=eyJhIjoiYiJ9\n") || strings.Contains(string(out), "CLOUDFLARE_TUNNEL_TOKEN=") || !strings.Contains(string(out), "args=tunnel run\n") {
		t.Errorf("cloudflared's environment and arguments:\n%s", out)
	}
}
