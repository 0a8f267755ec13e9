package e2e

import (
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestConfigCheckListsEveryProblemAtOnce(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(keeperBin, "config", "check")
	cmd.Env = []string{
		"MASTOKEEPER_STATE_DIR=" + dir,
		"LOCAL_DOMAIN=Social.Example.org",
		"ADMIN_USERNAME=admin",
		"ADMIN_EMAIL=not-an-address",
		"DB_PORT=54x",
		"REDIS_NAMESPACE=mastodon",
		"WEB_CONCURRENCY=-1",
		"POSTGRES_SHARED_BUFFERS=lots",
		"SECRET_KEY_BASE=tooshort",
		"VAPID_PRIVATE_KEY=abc",
		"BACKUP_TARGET=ftp://backups.example.org/x",
		"BACKUP_KEEP_DAILY=-1",
		"BACKUP_PASSPHRASE=hunter2",
		"BACKUP_COMPRESSION=fastest",
	}
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Errorf("exit code %d, want 3", code)
	}
	text := string(out)
	for _, want := range []string{
		"LOCAL_DOMAIN", "example: LOCAL_DOMAIN=social.example.org",
		"ADMIN_USERNAME", "example: ADMIN_USERNAME=alice",
		"ADMIN_EMAIL", "DB_PORT", "REDIS_NAMESPACE", "WEB_CONCURRENCY", "example: WEB_CONCURRENCY=1",
		"POSTGRES_SHARED_BUFFERS", "example: POSTGRES_SHARED_BUFFERS=256MB",
		"SECRET_KEY_BASE", "VAPID_PRIVATE_KEY", "BACKUP_TARGET", "BACKUP_KEEP_DAILY",
		"BACKUP_PASSPHRASE: has 7 characters", "example: BACKUP_PASSPHRASE=", "example: BACKUP_COMPRESSION=fast",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(text, "tooshort") || strings.Contains(text, "hunter2") {
		t.Error("the report printed a secret's value")
	}
	if t.Failed() {
		t.Log(text)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("config check wrote %d files", len(ents))
	}

	ok := exec.Command(keeperBin, "config", "check")
	ok.Env = []string{"MASTOKEEPER_STATE_DIR=" + dir, "LOCAL_DOMAIN=social.example.org"}
	if out, err := ok.CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Errorf("a good configuration: %v\n%s", err, out)
	}
}

// A front door that cannot work is refused with its reason, before any
// service tries it; a warning for a tunnel without its token.
func TestConfigCheckRefusesAFrontDoorThatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		code int
		says string
	}{
		{[]string{"BALENA_DEVICE_UUID=0123456789abcdef0123456789abcdef", "PROXY_MODE=https"}, 3,
			"PROXY_MODE: is https, which needs the instance's own domain in LOCAL_DOMAIN"},
		{[]string{"LOCAL_DOMAIN=mastodon.localhost", "PROXY_MODE=https"}, 3, "no public CA can certify"},
		{[]string{"LOCAL_DOMAIN=social.example.org", "PROXY_MODE=https", "CLOUDFLARE_TUNNEL_TOKEN=eyJhIjoiYiJ9"}, 3,
			"CLOUDFLARE_TUNNEL_TOKEN: is set, but PROXY_MODE is https"},
		{[]string{"LOCAL_DOMAIN=social.example.org", "PROXY_MODE=cloudflare-tunnel"}, 0, "CLOUDFLARE_TUNNEL_TOKEN is not set, so the cloudflared service idles"},
		{[]string{"LOCAL_DOMAIN=social.example.org", "PROXY_MODE=https", "ACME_CA=staging"}, 0, "configuration OK"},
	} {
		cmd := exec.Command(keeperBin, "config", "check")
		cmd.Env = append([]string{"MASTOKEEPER_STATE_DIR=" + t.TempDir()}, tc.env...)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != tc.code || !strings.Contains(string(out), tc.says) {
			t.Errorf("%v: exit %d, want %d saying %q:\n%s", tc.env, code, tc.code, tc.says, out)
		}
		if strings.Contains(string(out), "eyJhIjoiYiJ9") {
			t.Errorf("the tunnel's token was printed:\n%s", out)
		}
	}
}

// The VAPID pair must be usable by an implementation other than Go's:
// Node.js's crypto (OpenSSL) derives the public key from the private one.
func TestSecretsGenerateVAPIDPairIsAcceptedByNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		stackMissing(t, "node")
	}
	dir := t.TempDir()
	gen := exec.Command(keeperBin, "secrets", "generate")
	gen.Env = []string{"MASTOKEEPER_STATE_DIR=" + dir}
	gen.Dir = dir
	out, err := gen.Output()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		vals[k] = v
	}
	check := exec.Command(node, "-e", `
const crypto = require('crypto');
const [priv, pub] = [process.env.PRIV, process.env.PUB];
const ecdh = crypto.createECDH('prime256v1');
ecdh.setPrivateKey(Buffer.from(priv, 'base64url'));
const derived = ecdh.getPublicKey();
const given = Buffer.from(pub, 'base64url');
if (given.length !== 65 || given[0] !== 4 || !derived.equals(given)) { console.error('mismatch'); process.exit(1); }
// And the pair signs and verifies (ES256, as web push uses it).
const jwk = { kty: 'EC', crv: 'P-256', d: Buffer.from(priv, 'base64url').toString('base64url'),
  x: given.subarray(1, 33).toString('base64url'), y: given.subarray(33).toString('base64url') };
const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
const sig = crypto.sign('sha256', Buffer.from('hello'), key);
const ok = crypto.verify('sha256', Buffer.from('hello'), crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }, format: 'jwk' }), sig);
if (!ok) { console.error('verify failed'); process.exit(1); }
console.log('ok');`)
	check.Env = append(os.Environ(), "PRIV="+vals["VAPID_PRIVATE_KEY"], "PUB="+vals["VAPID_PUBLIC_KEY"])
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("node rejected the VAPID pair: %v\n%s", err, out)
	}
	if len(vals) != 8 {
		t.Errorf("generate printed %d secrets, want 8", len(vals))
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("secrets generate persisted %d files", len(ents))
	}
}

// An admin at a terminal on the keeper service runs tootctl through
// mastokeeper, which gives it the instance's environment and then becomes
// it: tootctl's output and exit code are the command's own.
func TestTootctlRunsWithTheInstancesEnvironment(t *testing.T) {
	s := newStack(t)
	reset := []string{"tootctl", "accounts", "modify", "alice", "--reset-password"}

	// Before the keeper has readied the database: a refusal at once, saying
	// what to do; tootctl does not run and nothing is written.
	before := s.stateSnapshot()
	start := time.Now()
	r := s.keeper(nil, reset...)
	if r.code != 1 || !strings.Contains(r.out, "has not finished preparing the database for Mastodon "+mastodonVersion) ||
		!strings.Contains(r.out, "see the keeper service's log and try again") {
		t.Errorf("before provisioning: exit %d:\n%s", r.code, r.out)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("it waited %s instead of refusing at once", took)
	}
	if strings.Contains(r.out, "refuses to boot") {
		t.Error("tootctl ran before the database was ready")
	}
	if !reflect.DeepEqual(before, s.stateSnapshot()) {
		t.Error("the refused run wrote to the keeper's volume")
	}

	s.provision()
	r = s.keeper(nil, reset...)
	m := regexp.MustCompile(`(?m)^New password: ([0-9a-f]{32})$`).FindStringSubmatch(r.out)
	if r.code != 0 || m == nil || !strings.Contains(r.out, "OK") {
		t.Fatalf("after provisioning: exit %d:\n%s", r.code, r.out)
	}
	alicesPassword := `SELECT count(*) FROM users u JOIN accounts a ON a.id = u.account_id WHERE a.username = 'alice' AND u.encrypted_password = $1`
	if s.count(alicesPassword, m[1]) != 1 {
		t.Error("the printed password is not alice's new one")
	}

	// tootctl's failure is passed through as it is, not as the keeper's.
	r = s.keeper(nil, "tootctl", "accounts", "frobnicate", "alice")
	if r.code != 1 || !strings.Contains(r.out, "unsupported accounts frobnicate") || strings.Contains(r.out, "mastokeeper tootctl:") {
		t.Errorf("a failing tootctl: exit %d:\n%s", r.code, r.out)
	}
	// Without arguments it is tootctl that answers (with its help).
	if r = s.keeper(nil, "tootctl"); !strings.Contains(r.out, "tootctl stand-in") || strings.Contains(r.out, "Usage:") {
		t.Errorf("bare tootctl: exit %d:\n%s", r.code, r.out)
	}

	// A configuration the instance must refuse: refused, tootctl not run.
	r = s.keeper([]string{"LOCAL_DOMAIN=other.example.test"}, reset...)
	if r.code != 3 || !strings.Contains(r.out, "LOCAL_DOMAIN") {
		t.Errorf("a changed LOCAL_DOMAIN: exit %d:\n%s", r.code, r.out)
	}
	if s.count(alicesPassword, m[1]) != 1 {
		t.Error("the refused run changed alice's password")
	}

	// While it runs, tootctl is the very process the terminal started (so
	// Ctrl-C reaches it), and no secret is among any process's arguments:
	// they travel in its environment. (The scan at cleanup covers the output.)
	bob := s.start([]string{"STANDIN_AFTER_CREATE_DELAY=3s"}, "tootctl", "accounts", "create", "bob", "--email", "bob@example.test")
	if !bob.waitFor("account bob created", 30*time.Second) {
		t.Fatal("tootctl accounts create did not run")
	}
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(bob.cmd.Process.Pid) + "/cmdline")
	if got := strings.ReplaceAll(string(cmdline), "\x00", " "); !strings.HasPrefix(got, "tootctl accounts create bob") {
		t.Errorf("the terminal's process runs %q, not tootctl", got)
	}
	s.assertNoSecretInAnyCmdline()
	if code := bob.wait(t, 30*time.Second); code != 0 {
		t.Errorf("tootctl accounts create exited %d", code)
	}
}
