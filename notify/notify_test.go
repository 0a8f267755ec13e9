package notify

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	gomail "github.com/wneessen/go-mail"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// receiver records every request a webhook makes.
type receiver struct {
	mu   sync.Mutex
	got  []string
	code int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	line := req.Method + " " + req.URL.RequestURI()
	if t := req.Header.Get("Title"); t != "" {
		line += " title=" + t
	}
	if len(b) > 0 {
		line += " body=" + strings.SplitN(string(b), "\n", 2)[0]
	}
	r.got = append(r.got, line)
	if r.code != 0 {
		w.WriteHeader(r.code)
	}
}

func webhook(t *testing.T, path, format string) (*Webhook, *receiver) {
	r := &receiver{}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	chans, ps := FromEnv(env(map[string]string{URLVar: srv.URL + path, URLFormatVar: format}), "social.example.org")
	if len(ps) != 0 || len(chans) != 1 {
		t.Fatalf("%v %v", chans, ps)
	}
	return chans[0].(*Webhook), r
}

func TestHealthchecksGetsStartSuccessAndFailWithTheMessage(t *testing.T) {
	w, r := webhook(t, "/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278", "")
	ctx := context.Background()
	w.Started(ctx)
	w.Succeeded(ctx, "backup 20261203T030000.000Z complete")
	w.Send(ctx, Message{Kind: Raised, Domain: "social.example.org", Title: "the last backup failed", Body: "why"})
	w.Send(ctx, Message{Kind: Resolved, Title: "the last backup failed"})
	want := []string{
		"POST /ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278/start",
		"POST /ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278 body=backup 20261203T030000.000Z complete",
		"POST /ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278/fail body=[social.example.org] ATTENTION: the last backup failed",
	}
	if strings.Join(r.got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(r.got, "\n"), strings.Join(want, "\n"))
	}
}

func TestUptimeKumaPushesUpAndDown(t *testing.T) {
	w, r := webhook(t, "/api/push/Tok3n", "") // recognised by its path
	ctx := context.Background()
	w.Started(ctx)
	w.Succeeded(ctx, "backup done")
	w.Send(ctx, Message{Kind: Raised, Title: "disk full"})
	want := "GET /api/push/Tok3n?msg=backup+done&status=up\nGET /api/push/Tok3n?msg=ATTENTION%3A+disk+full&status=down"
	if strings.Join(r.got, "\n") != want {
		t.Errorf("got\n%s", strings.Join(r.got, "\n"))
	}
}

func TestTextPostsTheMessageWithItsTitle(t *testing.T) {
	w, r := webhook(t, "/mastodon-alerts", Text)
	ctx := context.Background()
	w.Started(ctx)
	w.Succeeded(ctx, "backup done")
	w.Send(ctx, Message{Kind: Resolved, Domain: "d.example", Title: "backups are OFF", Body: "BACKUP_PASSPHRASE is set now."})
	if want := "POST /mastodon-alerts title=[d.example] RESOLVED: backups are OFF body=BACKUP_PASSPHRASE is set now."; strings.Join(r.got, "\n") != want {
		t.Errorf("got %q", r.got)
	}
}

func TestAWebhookErrorNeverShowsItsToken(t *testing.T) {
	w, r := webhook(t, "/ping/secret-token-123", "")
	r.code = 404
	err := w.Send(context.Background(), Message{Kind: Raised, Title: "x"})
	if err == nil || strings.Contains(err.Error(), "secret-token-123") || !strings.Contains(err.Error(), "404") {
		t.Errorf("error %v", err)
	}
	w.URL.Host = "127.0.0.1:1" // nothing listens
	err = w.Send(context.Background(), Message{Kind: Raised, Title: "x"})
	if err == nil || strings.Contains(err.Error(), "secret-token-123") {
		t.Errorf("error %v", err)
	}
	if strings.Contains(w.Name(), "secret") {
		t.Errorf("name %q", w.Name())
	}
}

func TestBadNotifyVariablesAreNamedWithoutTheirValue(t *testing.T) {
	_, ps := FromEnv(env(map[string]string{URLVar: "hc-ping.com/secret-uuid"}), "")
	if len(ps) != 1 || ps[0].Var != URLVar || strings.Contains(ps[0].String(), "secret-uuid") {
		t.Errorf("%v", ps)
	}
	_, ps = FromEnv(env(map[string]string{"SMTP_SERVER": "smtp.example.org", "ADMIN_EMAIL": "a@example.org",
		"SMTP_PORT": "smtp", "SMTP_AUTH_METHOD": "magic", "SMTP_LOGIN": "u", "SMTP_OPENSSL_VERIFY_MODE": "maybe",
		"SMTP_TLS": "true", "SMTP_ENABLE_STARTTLS": "always"}), "")
	var vars []string
	for _, p := range ps {
		vars = append(vars, p.Var)
	}
	if strings.Join(vars, " ") != "SMTP_PORT SMTP_ENABLE_STARTTLS SMTP_AUTH_METHOD SMTP_OPENSSL_VERIFY_MODE" {
		t.Errorf("problems: %v", ps)
	}
}

// The SMTP variables mean what they mean to Mastodon 4.5.
func TestMailReadsTheSMTPVariablesAsMastodonDoes(t *testing.T) {
	base := map[string]string{"SMTP_SERVER": "smtp.example.org", "NOTIFY_EMAIL": "ops@example.org", "ADMIN_EMAIL": "alice@example.org"}
	read := func(extra map[string]string) *Mail {
		t.Helper()
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		mail, ps := mailFromEnv(env(m), "social.example.org")
		if len(ps) != 0 {
			t.Fatalf("%v: %v", extra, ps)
		}
		return mail
	}
	d := read(nil)
	if d.To != "ops@example.org" || d.Port != 25 || d.From != "notifications@localhost" || d.HELO != "social.example.org" ||
		d.ImplicitTLS || d.StartTLS != gomail.TLSOpportunistic || d.Auth != "" || d.TLS.InsecureSkipVerify {
		t.Errorf("defaults: %+v", d)
	}
	if m := read(map[string]string{"SMTP_LOGIN": "u", "SMTP_PASSWORD": "p"}); m.Auth != gomail.SMTPAuthPlainNoEnc {
		t.Errorf("a login authenticates with plain by default: %q", m.Auth)
	}
	if m := read(map[string]string{"SMTP_LOGIN": "u", "SMTP_AUTH_METHOD": "login"}); m.Auth != gomail.SMTPAuthLoginNoEnc {
		t.Errorf("login: %q", m.Auth)
	}
	for v, want := range map[string]gomail.TLSPolicy{"always": gomail.TLSMandatory, "never": gomail.NoTLS, "auto": gomail.TLSOpportunistic} {
		if m := read(map[string]string{"SMTP_ENABLE_STARTTLS": v}); m.StartTLS != want {
			t.Errorf("SMTP_ENABLE_STARTTLS=%s: %v", v, m.StartTLS)
		}
	}
	if m := read(map[string]string{"SMTP_ENABLE_STARTTLS_AUTO": "false"}); m.StartTLS != gomail.NoTLS {
		t.Error("SMTP_ENABLE_STARTTLS_AUTO=false turns STARTTLS off")
	}
	if m := read(map[string]string{"SMTP_ENABLE_STARTTLS_AUTO": "no"}); m.StartTLS != gomail.TLSOpportunistic {
		t.Error("only the exact string false turns SMTP_ENABLE_STARTTLS_AUTO off")
	}
	if m := read(map[string]string{"SMTP_SSL": "true", "SMTP_PORT": "465"}); !m.ImplicitTLS || m.Port != 465 {
		t.Error("SMTP_SSL=true is TLS from the first byte")
	}
	if m := read(map[string]string{"SMTP_TLS": "yes"}); m.ImplicitTLS {
		t.Error("only the exact string true turns SMTP_TLS on")
	}
	if m := read(map[string]string{"SMTP_OPENSSL_VERIFY_MODE": "none"}); !m.TLS.InsecureSkipVerify {
		t.Error("SMTP_OPENSSL_VERIFY_MODE=none")
	}
	delete(base, "NOTIFY_EMAIL")
	if m := read(nil); m.To != "alice@example.org" {
		t.Errorf("without NOTIFY_EMAIL, ADMIN_EMAIL: %q", m.To)
	}
	if m, _ := mailFromEnv(env(map[string]string{"SMTP_SERVER": "smtp.example.org"}), "d"); m != nil {
		t.Error("without a recipient there is no mail channel")
	}
}
