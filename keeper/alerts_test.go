package keeper

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// pushes records the text webhook's messages by title.
type pushes struct {
	mu     sync.Mutex
	titles []string
}

func (p *pushes) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.titles
	p.titles = nil
	return t
}

func alertingKeeper(t *testing.T, extra map[string]string) (*Keeper, *pushes, *bytes.Buffer) {
	p := &pushes{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		p.mu.Lock()
		p.titles = append(p.titles, r.Header.Get("Title"))
		p.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	vars := map[string]string{"MASTOKEEPER_STATE_DIR": provisioned(t), "LOCAL_DOMAIN": "social.example.org",
		"BACKUP_PASSPHRASE": "correct horse battery staple", "NOTIFY_URL": srv.URL + "/topic", "NOTIFY_URL_FORMAT": "text"}
	for k, v := range extra {
		vars[k] = v
	}
	var banner bytes.Buffer
	return &Keeper{S: Load(env(vars), nil), Log: slog.New(slog.DiscardHandler), Banner: &banner}, p, &banner
}

func TestAnAlertIsRaisedOnceRepeatedDailyAndResolved(t *testing.T) {
	k, p, banner := alertingKeeper(t, nil)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 3, 3, 0, 0, 0, time.UTC)

	k.JobFinished("backup", t0, context.DeadlineExceeded)
	if got := p.take(); len(got) != 1 || got[0] != "[social.example.org] ATTENTION: the last backup failed" {
		t.Fatalf("raised: %q", got)
	}
	if !strings.Contains(banner.String(), "| ATTENTION: the last backup failed") {
		t.Errorf("the log has no framed alert:\n%s", banner)
	}
	k.JobFinished("backup", t0.Add(time.Hour), context.DeadlineExceeded)
	k.CheckAlerts(ctx, t0.Add(23*time.Hour))
	if got := p.take(); len(got) != 0 {
		t.Fatalf("said again within a day: %q", got)
	}
	k.CheckAlerts(ctx, t0.Add(25*time.Hour))
	if got := p.take(); len(got) != 1 || !strings.HasPrefix(got[0], "[social.example.org] STILL: the last backup failed (since 25 hours)") {
		t.Fatalf("the daily repeat: %q", got)
	}
	k.JobFinished("backup", t0.Add(26*time.Hour), nil)
	if got := p.take(); len(got) != 1 || got[0] != "[social.example.org] RESOLVED: the last backup failed" {
		t.Fatalf("resolved: %q", got)
	}
	k.CheckAlerts(ctx, t0.Add(60*time.Hour))
	if got := p.take(); len(got) != 0 {
		t.Fatalf("after the resolution: %q", got)
	}
}

func TestBackupsOffAndOverdueAreAlerts(t *testing.T) {
	k, p, _ := alertingKeeper(t, map[string]string{"BACKUP_PASSPHRASE": ""})
	now := time.Now()
	k.CheckAlerts(context.Background(), now)
	if got := p.take(); len(got) != 1 || !strings.Contains(got[0], "ATTENTION: backups are OFF") {
		t.Fatalf("backups off: %q", got)
	}
	if s := k.Status(now); !strings.HasPrefix(s.Summary, "ATTENTION: backups are OFF") {
		t.Errorf("status: %q", s.Summary)
	}
	k, _, _ = alertingKeeper(t, nil)
	if s := k.Status(now); s.Summary != "OK" || s.Attention == nil || s.Problems == nil {
		t.Errorf("a healthy status: %q, attention %v, problems %v (lists must be empty, not null)", s.Summary, s.Attention, s.Problems)
	}

	k, p, _ = alertingKeeper(t, map[string]string{"BACKUP_SCHEDULE": "@daily"})
	k.CheckAlerts(context.Background(), now) // backups switched on now: the baseline
	k.CheckAlerts(context.Background(), now.Add(47*time.Hour))
	if got := p.take(); len(got) != 0 {
		t.Fatalf("overdue too early: %q", got)
	}
	k.CheckAlerts(context.Background(), now.Add(49*time.Hour))
	if got := p.take(); len(got) != 1 || !strings.Contains(got[0], "ATTENTION: no successful backup for 2 days") {
		t.Fatalf("overdue: %q", got)
	}
}
