// Package notify tells the instance's admin when something needs them:
// by e-mail, through the instance's own SMTP_* settings, and through a
// webhook (healthchecks.io pings, Uptime Kuma push monitors, or a plain
// text POST for ntfy). Which alerts to send, and when, is the keeper's.
package notify

import (
	"context"
	"errors"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Kind is what a message is about.
type Kind int

const (
	Raised   Kind = iota // something needs attention
	Repeated             // it still does (at most daily)
	Resolved             // it no longer does
	Test                 // `mastokeeper notify test`
)

// Message is one notification.
type Message struct {
	Kind Kind
	// Domain is the instance's, so that an admin of several knows which.
	Domain string
	// Title is one line: "the last backup failed".
	Title string
	// Body says what happened, since when and what to do. Never a secret.
	Body string
}

// Subject is the line a mail's subject or a push title shows.
func (m Message) Subject() string {
	prefix := map[Kind]string{Raised: "ATTENTION", Repeated: "STILL", Resolved: "RESOLVED", Test: "TEST"}[m.Kind]
	s := prefix + ": " + m.Title
	if m.Domain != "" {
		s = "[" + m.Domain + "] " + s
	}
	return s
}

// Channel is one way to reach the admin.
type Channel interface {
	// Name says which channel, secrets redacted: "e-mail to alice@example.org".
	Name() string
	// Send delivers m. Its error never contains a secret.
	Send(ctx context.Context, m Message) error
}

// Heartbeat is a channel that also hears of every backup run, as a
// monitoring service expects: it notices the backups stopping by itself.
type Heartbeat interface {
	Channel
	Started(ctx context.Context) error
	Succeeded(ctx context.Context, summary string) error
}

// Variables.
const (
	EmailVar     = "NOTIFY_EMAIL"
	URLVar       = "NOTIFY_URL"
	URLFormatVar = "NOTIFY_URL_FORMAT"
)

// FromEnv builds the channels the variables set up, and the problems of
// those that cannot work. domain is the instance's (HELO name, subject).
// No channel is an empty list: the log still says everything.
func FromEnv(getenv func(string) string, domain string) ([]Channel, problem.List) {
	var chans []Channel
	var ps problem.List
	if c, p := mailFromEnv(getenv, domain); len(p) > 0 {
		ps = append(ps, p...)
	} else if c != nil {
		chans = append(chans, c)
	}
	if c, p := webhookFromEnv(getenv); len(p) > 0 {
		ps = append(ps, p...)
	} else if c != nil {
		chans = append(chans, c)
	}
	return chans, ps
}

// redact removes every secret from an error's text.
func redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secrets {
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return errors.New(msg)
}
