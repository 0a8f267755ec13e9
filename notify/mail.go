package notify

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Mail sends alerts through the instance's own SMTP settings, read as
// Mastodon reads them (config/email.yml and EmailConfigurationHelper in
// Mastodon 4.4/4.5): what delivers Mastodon's mails delivers these.
type Mail struct {
	To, From string
	ReplyTo  string
	// ReturnPath is the envelope sender (SMTP_RETURN_PATH), if set.
	ReturnPath string
	Host       string
	Port       int
	HELO       string
	// ImplicitTLS is SMTP_TLS/SMTP_SSL: TLS from the first byte (port 465).
	ImplicitTLS bool
	// StartTLS applies without ImplicitTLS.
	StartTLS gomail.TLSPolicy
	Auth     gomail.SMTPAuthType // "" for none
	Login    string
	Password string
	TLS      *tls.Config
	Timeout  time.Duration
}

var _ Channel = (*Mail)(nil)

func (m *Mail) Name() string {
	return "e-mail to " + m.To + " via " + m.Host + ":" + strconv.Itoa(m.Port)
}

// mailFromEnv reads the SMTP_* variables; nil without SMTP_SERVER or a
// recipient (NOTIFY_EMAIL, else an ADMIN_EMAIL that was set).
func mailFromEnv(getenv func(string) string, domain string) (*Mail, problem.List) {
	to := getenv(EmailVar)
	toVar := EmailVar
	if to == "" {
		to, toVar = getenv("ADMIN_EMAIL"), "ADMIN_EMAIL"
	}
	host := getenv("SMTP_SERVER")
	if host == "" || to == "" {
		return nil, nil
	}
	var ps problem.List
	add := func(v, what, ex string) { ps = append(ps, problem.Problem{Var: v, What: what, Example: ex}) }
	if _, err := mail.ParseAddress(to); err != nil {
		add(toVar, fmt.Sprintf("is %q, which is not an e-mail address", to), "alice@example.org")
	}
	m := &Mail{To: to, Host: host, Port: 25, Timeout: 20 * time.Second,
		From:       orDefault(getenv("SMTP_FROM_ADDRESS"), "notifications@localhost"),
		ReplyTo:    getenv("SMTP_REPLY_TO"),
		ReturnPath: getenv("SMTP_RETURN_PATH"),
		HELO:       orDefault(getenv("SMTP_DOMAIN"), orDefault(domain, "localhost")),
		Login:      getenv("SMTP_LOGIN"), Password: getenv("SMTP_PASSWORD"),
	}
	if _, err := mail.ParseAddress(m.From); err != nil {
		add("SMTP_FROM_ADDRESS", fmt.Sprintf("is %q, which is not an e-mail address", m.From), "Mastodon <notifications@social.example.org>")
	}
	if v := getenv("SMTP_PORT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			add("SMTP_PORT", fmt.Sprintf("is %q; it must be a TCP port number from 1 to 65535", v), "587")
		}
		m.Port = n
	}
	// Mastodon: only the exact string "true" turns implicit TLS on.
	m.ImplicitTLS = getenv("SMTP_TLS") == "true" || getenv("SMTP_SSL") == "true"
	switch st := getenv("SMTP_ENABLE_STARTTLS"); st {
	case "always":
		m.StartTLS = gomail.TLSMandatory
	case "never", "false":
		m.StartTLS = gomail.NoTLS
	case "auto":
		m.StartTLS = gomail.TLSOpportunistic
	default:
		// Mastodon: unset (or unknown) falls back to SMTP_ENABLE_STARTTLS_AUTO,
		// on unless it is exactly "false".
		m.StartTLS = gomail.TLSOpportunistic
		if getenv("SMTP_ENABLE_STARTTLS_AUTO") == "false" {
			m.StartTLS = gomail.NoTLS
		}
	}
	if m.ImplicitTLS && (getenv("SMTP_ENABLE_STARTTLS") == "always" || getenv("SMTP_ENABLE_STARTTLS") == "auto") {
		add("SMTP_ENABLE_STARTTLS", "is set together with SMTP_TLS/SMTP_SSL=true; TLS from the first byte and STARTTLS exclude each other (Mastodon refuses to send too). Remove one", "never")
	}
	// Mastodon authenticates only with a login; its default method is plain.
	// Like Mastodon, credentials go over whatever connection the TLS
	// settings give: the NoEnc variants do not refuse a plain one.
	if m.Login != "" {
		switch method := orDefault(getenv("SMTP_AUTH_METHOD"), "plain"); method {
		case "plain":
			m.Auth = gomail.SMTPAuthPlainNoEnc
		case "login":
			m.Auth = gomail.SMTPAuthLoginNoEnc
		case "cram_md5":
			m.Auth = gomail.SMTPAuthCramMD5
		case "none":
		default:
			add("SMTP_AUTH_METHOD", fmt.Sprintf("is %q; it must be plain, login, cram_md5 or none", method), "plain")
		}
	}
	m.TLS = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	switch mode := getenv("SMTP_OPENSSL_VERIFY_MODE"); mode {
	case "", "peer":
	case "none", "client_once", "fail_if_no_peer_cert":
		// OpenSSL's client_once and fail_if_no_peer_cert lack the peer bit:
		// for a client they verify nothing, like none.
		m.TLS.InsecureSkipVerify = true
	default:
		add("SMTP_OPENSSL_VERIFY_MODE", fmt.Sprintf("is %q; it must be peer or none", mode), "peer")
	}
	if ca := getenv("SMTP_CA_FILE"); ca != "" {
		pem, err := os.ReadFile(ca)
		pool := x509.NewCertPool()
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			add("SMTP_CA_FILE", fmt.Sprintf("is %q, which is not a readable file of PEM certificates", ca), "/etc/ssl/certs/ca-certificates.crt")
		}
		m.TLS.RootCAs = pool
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return m, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Send sends m as a plain-text mail.
func (m *Mail) Send(ctx context.Context, msg Message) error {
	e := gomail.NewMsg()
	if err := e.From(m.From); err != nil {
		return fmt.Errorf("mail: from %s: %w", m.From, err)
	}
	if err := e.To(m.To); err != nil {
		return fmt.Errorf("mail: to %s: %w", m.To, err)
	}
	if m.ReplyTo != "" {
		e.ReplyTo(m.ReplyTo)
	}
	if m.ReturnPath != "" {
		e.EnvelopeFrom(m.ReturnPath)
	}
	e.Subject(msg.Subject())
	e.SetDate()
	// Mastodon's form: random@the sender's domain.
	var b [12]byte
	rand.Read(b[:])
	_, fromDomain, _ := strings.Cut(m.From, "@")
	e.SetMessageIDWithValue(hex.EncodeToString(b[:]) + "@" + strings.TrimSuffix(fromDomain, ">"))
	e.SetBodyString(gomail.TypeTextPlain, msg.Body+"\n\n-- \nmastokeeper, the keeper of "+msg.Domain+"\n")

	opts := []gomail.Option{gomail.WithPort(m.Port), gomail.WithTimeout(m.Timeout), gomail.WithHELO(m.HELO), gomail.WithTLSConfig(m.TLS)}
	if m.ImplicitTLS {
		opts = append(opts, gomail.WithSSL())
	} else {
		opts = append(opts, gomail.WithTLSPolicy(m.StartTLS))
	}
	if m.Auth != "" {
		opts = append(opts, gomail.WithSMTPAuth(m.Auth), gomail.WithUsername(m.Login), gomail.WithPassword(m.Password))
	}
	c, err := gomail.NewClient(m.Host, opts...)
	if err != nil {
		return fmt.Errorf("mail to %s: %w", m.To, redact(err, m.Password))
	}
	if err := c.DialAndSendWithContext(ctx, e); err != nil {
		return fmt.Errorf("mail to %s via %s:%d: %w", m.To, m.Host, m.Port, redact(err, m.Password))
	}
	return nil
}
