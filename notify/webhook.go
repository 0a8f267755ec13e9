package notify

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Webhook formats.
const (
	// Healthchecks: healthchecks.io's ping API - URL/start when a backup
	// starts, URL when it succeeds, URL/fail with the message on an alert.
	Healthchecks = "healthchecks"
	// UptimeKuma: an Uptime Kuma push monitor - URL?status=up&msg=... on a
	// successful backup, URL?status=down&msg=... on an alert.
	UptimeKuma = "uptime-kuma"
	// Text: the message as a plain-text POST (ntfy: title in a header);
	// alerts, repeats and resolutions only.
	Text = "text"
)

// Webhook reaches a monitoring service or a push-notification service.
type Webhook struct {
	URL    *url.URL
	Format string
	Client *http.Client
}

var _ Heartbeat = (*Webhook)(nil)

// Name shows the service's address without its path or query, where the
// token lives.
func (w *Webhook) Name() string {
	return fmt.Sprintf("%s webhook %s://%s/[redacted]", w.Format, w.URL.Scheme, w.URL.Host)
}

func webhookFromEnv(getenv func(string) string) (*Webhook, problem.List) {
	raw := getenv(URLVar)
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		// The value may hold a token: never repeated.
		return nil, problem.List{{Var: URLVar, What: "is not an http(s) URL", Example: "https://hc-ping.com/your-check-uuid"}}
	}
	format := getenv(URLFormatVar)
	switch {
	case format == "" && strings.Contains(u.Path, "/api/push/"):
		format = UptimeKuma
	case format == "" && strings.HasPrefix(u.Host, "ntfy."):
		format = Text
	case format == "":
		format = Healthchecks
	case format != Healthchecks && format != UptimeKuma && format != Text:
		return nil, problem.List{{Var: URLFormatVar, What: fmt.Sprintf("is %q; it must be healthchecks, uptime-kuma or text (for ntfy)", format), Example: Healthchecks}}
	}
	return &Webhook{URL: u, Format: format, Client: &http.Client{Timeout: 15 * time.Second}}, nil
}

// Send reports an alert (or its end, or a test).
func (w *Webhook) Send(ctx context.Context, m Message) error {
	switch w.Format {
	case Healthchecks:
		if m.Kind == Resolved {
			return nil // the next successful backup's ping says it
		}
		if m.Kind == Test {
			return w.do(ctx, "POST", w.with("", nil), m.Subject())
		}
		return w.do(ctx, "POST", w.with("/fail", nil), m.Subject()+"\n\n"+m.Body)
	case UptimeKuma:
		status := "down"
		if m.Kind == Resolved || m.Kind == Test {
			status = "up"
		}
		return w.do(ctx, "GET", w.with("", url.Values{"status": {status}, "msg": {m.Subject()}}), "")
	default:
		return w.do(ctx, "POST", w.with("", nil), m.Body, "Title", m.Subject())
	}
}

// Started tells a monitoring service that a backup began.
func (w *Webhook) Started(ctx context.Context) error {
	if w.Format != Healthchecks {
		return nil
	}
	return w.do(ctx, "POST", w.with("/start", nil), "")
}

// Succeeded tells a monitoring service that a backup completed.
func (w *Webhook) Succeeded(ctx context.Context, summary string) error {
	switch w.Format {
	case Healthchecks:
		return w.do(ctx, "POST", w.with("", nil), summary)
	case UptimeKuma:
		return w.do(ctx, "GET", w.with("", url.Values{"status": {"up"}, "msg": {summary}}), "")
	}
	return nil
}

// with is the URL with suffix added to its path and q to its query.
func (w *Webhook) with(suffix string, q url.Values) *url.URL {
	u := *w.URL
	u.Path = strings.TrimSuffix(u.Path, "/") + suffix
	u.RawPath = ""
	if q != nil {
		all := u.Query()
		for k, v := range q {
			all[k] = v
		}
		u.RawQuery = all.Encode()
	}
	return &u
}

func (w *Webhook) do(ctx context.Context, method string, u *url.URL, body string, header ...string) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Second):
			}
		}
		if err = w.once(ctx, method, u, body, header...); err == nil {
			return nil
		}
	}
	return err
}

func (w *Webhook) once(ctx context.Context, method string, u *url.URL, body string, header ...string) error {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), strings.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", w.Name(), err)
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("User-Agent", "mastokeeper")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := w.Client.Do(req)
	if err != nil {
		// url.Error repeats the URL, token and all.
		return fmt.Errorf("%s: %w", w.Name(), redact(err, w.URL.String(), w.URL.Path, w.URL.RawQuery))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: the service answered %s", w.Name(), resp.Status)
	}
	return nil
}
