package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
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
		"POSTGRES_SHARED_BUFFERS=1G",
		"SECRET_KEY_BASE=tooshort",
		"VAPID_PRIVATE_KEY=abc",
		"BACKUP_TARGET=ftp://backups.example.org/x",
		"BACKUP_KEEP_DAILY=-1",
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
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(text, "tooshort") {
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
