package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
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

// mailpit is a real SMTP server (mailpit, built by install-test-deps) whose
// HTTP API tells what it received.
type mailpit struct {
	smtpPort int
	api      string
	certFile string
}

const (
	smtpLogin    = "keeper-alerts"
	smtpPassword = "smtp-pa55word-never-logged"
)

// startMailpit starts mailpit on loopback; secure: STARTTLS required with
// a certificate for 127.0.0.1 and a login.
func startMailpit(t *testing.T, secure bool) *mailpit {
	t.Helper()
	bin := filepath.Join(stackCacheDir(t), "bin", "mailpit")
	if _, err := os.Stat(bin); err != nil {
		stackMissing(t, "mailpit in %s (scripts/install-test-deps builds it)", bin)
	}
	dir := t.TempDir()
	m := &mailpit{smtpPort: freePort(t)}
	httpPort := freePort(t)
	m.api = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	args := []string{"--smtp", "127.0.0.1:" + strconv.Itoa(m.smtpPort), "--listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--database", filepath.Join(dir, "mail.db"), "--disable-version-check"}
	if secure {
		m.certFile = filepath.Join(dir, "cert.pem")
		key := filepath.Join(dir, "key.pem")
		selfSigned(t, m.certFile, key)
		os.WriteFile(filepath.Join(dir, "auth"), []byte(smtpLogin+":"+smtpPassword+"\n"), 0o600)
		args = append(args, "--smtp-tls-cert", m.certFile, "--smtp-tls-key", key, "--smtp-auth-file", filepath.Join(dir, "auth"), "--smtp-require-starttls")
	} else {
		args = append(args, "--smtp-auth-accept-any", "--smtp-auth-allow-insecure")
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if r, err := http.Get(m.api + "/readyz"); err == nil && r.StatusCode == 200 {
			r.Body.Close()
			break
		}
		if i > 100 {
			t.Fatal("mailpit did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return m
}

func selfSigned(t *testing.T, certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

// env is what points a device's mail at this server, as Mastodon reads it.
func (m *mailpit) env() []string {
	e := []string{"SMTP_SERVER=127.0.0.1", "SMTP_PORT=" + strconv.Itoa(m.smtpPort), "SMTP_FROM_ADDRESS=Mastodon <notifications@social.example.test>",
		"NOTIFY_EMAIL=admin@example.test"}
	if m.certFile != "" {
		e = append(e, "SMTP_LOGIN="+smtpLogin, "SMTP_PASSWORD="+smtpPassword, "SMTP_ENABLE_STARTTLS=always", "SMTP_CA_FILE="+m.certFile)
	} else {
		e = append(e, "SMTP_ENABLE_STARTTLS=never")
	}
	return e
}

type mail struct{ Subject, Text, To string }

// mails are the messages received, oldest first.
func (m *mailpit) mails(t *testing.T) []mail {
	t.Helper()
	var list struct {
		Messages []struct {
			ID      string
			Subject string
			To      []struct{ Address string }
		}
	}
	getJSON(t, m.api+"/api/v1/messages", &list)
	var out []mail
	for i := len(list.Messages) - 1; i >= 0; i-- {
		msg := list.Messages[i]
		var full struct{ Text string }
		getJSON(t, m.api+"/api/v1/message/"+msg.ID, &full)
		to := ""
		if len(msg.To) > 0 {
			to = msg.To[0].Address
		}
		out = append(out, mail{msg.Subject, full.Text, to})
	}
	return out
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// pings is a healthchecks.io-like receiver: it records every request.
type pings struct {
	mu  sync.Mutex
	got []string
	url string
}

func startPings(t *testing.T) *pings {
	p := &pings{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.got = append(p.got, r.Method+" "+r.URL.Path+" "+strings.SplitN(string(b), "\n", 2)[0])
		p.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL + "/ping/0f6b8e0e-token-never-logged"
	return p
}

// count is how many requests went to the check's path plus suffix.
func (p *pings) count(suffix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, g := range p.got {
		if strings.Fields(g)[1] == "/ping/0f6b8e0e-token-never-logged"+suffix {
			n++
		}
	}
	return n
}

func subjects(ms []mail) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Subject)
	}
	return strings.Join(s, " | ")
}

// The scenario: a backup failing against a stopped object server
// is one mail and one /fail ping; a second failure the same day none; the
// next success a "resolved" mail and a success ping. No secret anywhere.
func TestABackupFailureIsHeardOnceAndSoIsItsEnd(t *testing.T) {
	t.Parallel()
	mp := startMailpit(t, true)
	hc := startPings(t)
	d := newBackupDevice(t, backupTarget{"s3", privateS3Target})
	d.env = append(append(d.env, mp.env()...), "NOTIFY_URL="+hc.url)
	out := outageOf(t)

	if err := out.stop(); err != nil {
		t.Fatal(err)
	}
	first := d.keeper(d.env, "backup")
	if first.code != 1 {
		t.Fatalf("a backup against a stopped object server exited %d:\n%s", first.code, first.out)
	}
	ms := mp.mails(t)
	if len(ms) != 1 || !strings.Contains(ms[0].Subject, "[social.example.test] ATTENTION: the last backup failed") || ms[0].To != "admin@example.test" {
		t.Fatalf("after one failure, mails: %s", subjects(ms))
	}
	if !strings.Contains(ms[0].Text, "'mastokeeper backup'") {
		t.Errorf("the mail does not say what to do:\n%s", ms[0].Text)
	}
	if hc.count("/fail") != 1 || hc.count("/start") != 1 {
		t.Errorf("pings: %q", hc.got)
	}
	if s := d.keeper(d.env, "status"); s.code != 1 || !strings.HasPrefix(s.out, "ATTENTION: the last backup failed") {
		t.Errorf("status while failing (%d):\n%s", s.code, s.out)
	}

	if second := d.keeper(d.env, "backup"); second.code != 1 {
		t.Fatalf("second failing backup exited %d", second.code)
	}
	if ms := mp.mails(t); len(ms) != 1 || hc.count("/fail") != 1 {
		t.Errorf("a second failure the same day was told again: mails %s, pings %q", subjects(ms), hc.got)
	}

	if err := out.start(); err != nil {
		t.Fatal(err)
	}
	d.backup(t)
	ms = mp.mails(t)
	if len(ms) != 2 || !strings.Contains(ms[1].Subject, "RESOLVED: the last backup failed") {
		t.Errorf("after the recovery, mails: %s", subjects(ms))
	}
	if hc.count("") != 1 {
		t.Errorf("no success ping: %q", hc.got)
	}
	s := d.keeper(d.env, "status")
	if s.code != 0 || !strings.HasPrefix(s.out, "OK\n") {
		t.Errorf("status after the recovery (%d):\n%s", s.code, s.out)
	}
	for _, m := range ms {
		for _, secret := range []string{passphrase, smtpPassword, "0f6b8e0e-token-never-logged"} {
			if strings.Contains(m.Text+m.Subject, secret) {
				t.Errorf("a mail contains a secret: %q", secret)
			}
		}
	}
	for _, secret := range []string{passphrase, smtpPassword, "0f6b8e0e-token-never-logged"} {
		if strings.Contains(d.allLogs(), secret) {
			t.Errorf("the device's output contains a secret: %q", secret)
		}
	}
}

// A channel that does not deliver is said in the log and in status, and
// never fails a backup.
func TestAWrongSMTPPasswordIsReportedAndTheBackupStillSucceeds(t *testing.T) {
	t.Parallel()
	mp := startMailpit(t, true)
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	d.env = append(append(d.env, mp.env()...), "SMTP_PASSWORD=not-the-password")
	bad := "BACKUP_TARGET=file://" + filepath.Join(d.base, "not-a-dir")
	os.WriteFile(filepath.Join(d.base, "not-a-dir"), nil, 0o600)

	if r := d.keeper(append(d.env, bad), "backup"); r.code == 0 || !strings.Contains(r.out, "could not notify") {
		t.Fatalf("a failing backup with a broken mail channel (%d):\n%s", r.code, r.out)
	}
	r := d.keeper(d.env, "backup")
	if r.code != 0 {
		t.Fatalf("the backup failed for the mail channel's sake (%d):\n%s", r.code, r.out)
	}
	s := d.keeper(d.env, "status")
	if s.code != 1 || !strings.Contains(s.out, "alerts do not get through: e-mail to admin@example.test") || !strings.Contains(s.out, "535") {
		t.Errorf("status does not report the broken channel (%d):\n%s", s.code, s.out)
	}
	n := d.keeper(d.env, "notify", "test")
	if n.code != 1 || !strings.Contains(n.out, "FAILED  e-mail to admin@example.test") {
		t.Errorf("notify test (%d):\n%s", n.code, n.out)
	}
	if len(mp.mails(t)) != 0 {
		t.Error("mail got through with a wrong password")
	}
	if strings.Contains(d.allLogs(), "not-the-password") {
		t.Error("the SMTP password appears in the output")
	}
}

// Backups OFF is raised when the keeper service starts: framed in the log
// and mailed (here through a plain SMTP server, without TLS or login).
func TestBackupsOffIsRaisedWhenTheKeeperStarts(t *testing.T) {
	t.Parallel()
	mp := startMailpit(t, false)
	s := newStack(t)
	s.provision()
	env := mp.env()
	k := s.start(env, "run")
	defer k.kill()
	if !k.waitFor("ATTENTION: backups are OFF", 60*time.Second) {
		t.Fatalf("no alert at start:\n%s", s.allLogs())
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(mp.mails(t)) == 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	ms := mp.mails(t)
	if len(ms) != 1 || !strings.Contains(ms[0].Subject, "ATTENTION: backups are OFF") || !strings.Contains(ms[0].Text, "BACKUP_PASSPHRASE") {
		t.Fatalf("mails: %s", subjects(ms))
	}
	if n := s.keeper(env, "notify", "test"); n.code != 0 || !strings.Contains(n.out, "ok      e-mail to admin@example.test") {
		t.Errorf("notify test (%d):\n%s", n.code, n.out)
	}
	if ms := mp.mails(t); len(ms) != 2 || !strings.Contains(ms[1].Subject, "TEST: ") {
		t.Errorf("after notify test, mails: %s", subjects(ms))
	}
}

// status, for a person and for a machine, in each state an instance can be
// in.
func TestStatusInEachState(t *testing.T) {
	t.Parallel()
	fresh := newStack(t, "BACKUP_PASSPHRASE="+passphrase)
	r := fresh.keeper(nil, "status", "--json")
	var st struct {
		Summary  string
		Instance *struct{ Domain string }
		Backups  struct {
			On     bool
			Target string
		}
		Jobs []struct {
			Name        string
			LastSuccess string `json:"last_success"`
		}
	}
	if err := json.Unmarshal([]byte(r.out), &st); err != nil {
		t.Fatalf("status --json is not JSON (%v):\n%s", err, r.out)
	}
	if st.Instance != nil || !st.Backups.On || len(st.Jobs) != 4 {
		t.Errorf("fresh: %+v", st)
	}
	if ents, _ := os.ReadDir(fresh.stateDir); len(ents) != 0 {
		t.Error("status wrote into a fresh device's state")
	}

	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	d.backup(t)
	healthy := d.keeper(d.env, "status")
	if healthy.code != 0 || !strings.HasPrefix(healthy.out, "OK\n") || !strings.Contains(healthy.out, "Newest verified:") || !strings.Contains(healthy.out, "media:") {
		t.Errorf("healthy (%d):\n%s", healthy.code, healthy.out)
	}

	// Three days without a successful backup, on a daily schedule.
	var job map[string]any
	b, _ := os.ReadFile(filepath.Join(d.stateDir, "status", "job-backup.json"))
	json.Unmarshal(b, &job)
	job["last_success"] = time.Now().Add(-73 * time.Hour).UTC().Format(time.RFC3339)
	b, _ = json.Marshal(job)
	os.WriteFile(filepath.Join(d.stateDir, "status", "job-backup.json"), b, 0o600)
	overdue := d.keeper(d.env, "status")
	if overdue.code != 1 || !strings.HasPrefix(overdue.out, "ATTENTION: no successful backup for 3 days") {
		t.Errorf("overdue (%d):\n%s", overdue.code, overdue.out)
	}

	os.WriteFile(filepath.Join(d.stateDir, "markers", "restore-incomplete"), nil, 0o600)
	restoring := d.keeper(d.env, "status", "--json")
	if restoring.code != 1 || !strings.Contains(restoring.out, `"summary": "ATTENTION: a restore onto this device did not finish`) || !strings.Contains(restoring.out, `"unfinished": true`) {
		t.Errorf("restoring (%d):\n%s", restoring.code, restoring.out)
	}
	for _, out := range []string{healthy.out, overdue.out, restoring.out} {
		if strings.Contains(out, passphrase) {
			t.Error("status shows the passphrase")
		}
	}
}
