package launch

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

const version = "4.4.0"

// newHealth returns a Health over a fresh state directory, with the ready
// marker for version present when ready is true, and no start time.
func newHealth(t *testing.T, ready bool) Health {
	t.Helper()
	dir := t.TempDir()
	if ready {
		if err := (instance.Dir{Path: dir}).Mark(instance.ReadyMarker(version)); err != nil {
			t.Fatal(err)
		}
	}
	return Health{
		StateDir:         dir,
		Version:          version,
		StartedFile:      filepath.Join(dir, "started"),
		Grace:            5 * time.Minute,
		SidekiqReadyFile: filepath.Join(dir, "sidekiq-ready"),
	}
}

func startedAt(t *testing.T, h Health, when time.Time) {
	t.Helper()
	if err := os.WriteFile(h.StartedFile, []byte(strconv.FormatInt(when.Unix(), 10)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func server(t *testing.T, status int) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(status)
	}))
	t.Cleanup(s.Close)
	return s.URL + "/health"
}

func unreachable(t *testing.T) string {
	t.Helper()
	s := httptest.NewServer(http.NotFoundHandler())
	u := s.URL + "/health"
	s.Close()
	return u
}

func TestHealth_WaitingForTheKeeperIsHealthy(t *testing.T) {
	h := newHealth(t, false)
	for _, target := range []string{server(t, 500), unreachable(t), "sidekiq"} {
		if err := h.Check(context.Background(), target); err != nil {
			t.Errorf("Check(%q) without the ready marker = %v; want nil (waiting is progress)", target, err)
		}
	}
}

func TestHealth_ReadyMarkerOfAnotherVersionDoesNotCount(t *testing.T) {
	h := newHealth(t, false)
	if err := (instance.Dir{Path: h.StateDir}).Mark(instance.ReadyMarker("4.3.0")); err != nil {
		t.Fatal(err)
	}
	if err := h.Check(context.Background(), unreachable(t)); err != nil {
		t.Errorf("Check = %v; want nil while this version's marker is absent", err)
	}
}

func TestHealth_HTTPTarget(t *testing.T) {
	h := newHealth(t, true)
	tests := []struct {
		name, target string
		healthy      bool
	}{
		{"answers 200", server(t, http.StatusOK), true},
		{"answers 500", server(t, http.StatusInternalServerError), false},
		{"answers 503", server(t, http.StatusServiceUnavailable), false},
		{"answers 204", server(t, http.StatusNoContent), false},
		{"unreachable", unreachable(t), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := h.Check(context.Background(), tc.target)
			if tc.healthy && err != nil {
				t.Errorf("Check = %v; want healthy", err)
			}
			if !tc.healthy && err == nil {
				t.Error("Check = nil; want unhealthy")
			}
		})
	}
}

func TestHealth_UnhealthyStatusIsReported(t *testing.T) {
	h := newHealth(t, true)
	target := server(t, http.StatusInternalServerError)
	err := h.Check(context.Background(), target)
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), target) {
		t.Errorf("Check = %v; want an error naming the target and the status", err)
	}
}

func TestHealth_FailuresWithinGraceOfTheStartAreHealthy(t *testing.T) {
	h := newHealth(t, true)
	startedAt(t, h, time.Now().Add(-time.Minute))
	for _, target := range []string{server(t, 500), unreachable(t), "sidekiq"} {
		if err := h.Check(context.Background(), target); err != nil {
			t.Errorf("Check(%q) one minute after the start = %v; want nil within the grace period", target, err)
		}
	}
}

func TestHealth_FailuresAfterGraceAreUnhealthy(t *testing.T) {
	h := newHealth(t, true)
	startedAt(t, h, time.Now().Add(-10*time.Minute))
	for _, target := range []string{server(t, 500), unreachable(t), "sidekiq"} {
		if err := h.Check(context.Background(), target); err == nil {
			t.Errorf("Check(%q) ten minutes after the start = nil; want unhealthy", target)
		}
	}
}

func TestHealth_UnreadableStartTimeGivesNoGrace(t *testing.T) {
	h := newHealth(t, true)
	if err := os.WriteFile(h.StartedFile, []byte("yesterday"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Check(context.Background(), server(t, 500)); err == nil {
		t.Error("Check = nil; want unhealthy when the start time cannot be read")
	}
}

func TestHealth_StartTimeMayEndInANewline(t *testing.T) {
	h := newHealth(t, true)
	if err := os.WriteFile(h.StartedFile, []byte(strconv.FormatInt(time.Now().Unix(), 10)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Check(context.Background(), server(t, 500)); err != nil {
		t.Errorf("Check = %v; want nil within the grace period", err)
	}
}

func TestHealth_SidekiqIsHealthyOnceItsReadyFileExists(t *testing.T) {
	h := newHealth(t, true)
	if err := h.Check(context.Background(), "sidekiq"); err == nil {
		t.Error("Check(sidekiq) without its ready file = nil; want unhealthy")
	}
	if err := os.WriteFile(h.SidekiqReadyFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.Check(context.Background(), "sidekiq"); err != nil {
		t.Errorf("Check(sidekiq) with its ready file = %v; want healthy", err)
	}
}

// A mistyped healthcheck is reported at once, also while waiting for the
// keeper and within the grace period: otherwise it would only show once the
// container is restarted for it.
func TestHealth_TargetMustBeAURLOrSidekiq(t *testing.T) {
	for _, ready := range []bool{true, false} {
		targetMustBeAURLOrSidekiq(t, newHealth(t, ready))
	}
}

func targetMustBeAURLOrSidekiq(t *testing.T, h Health) {
	t.Helper()
	for _, target := range []string{"web", "127.0.0.1:3000/health", "ftp://127.0.0.1/health", "Sidekiq", ""} {
		err := h.Check(context.Background(), target)
		if err == nil {
			t.Errorf("Check(%q) = nil; want an error", target)
		} else if target != "" && !strings.Contains(err.Error(), target) {
			t.Errorf("Check(%q) = %v; want the error to quote the target", target, err)
		}
	}
}

func TestHealth_HonoursTheCallersContext(t *testing.T) {
	h := newHealth(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Check(ctx, server(t, http.StatusOK)); err == nil {
		t.Error("Check with a cancelled context = nil; want an error")
	}
}

func TestSidekiqReadyFile(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if got, want := SidekiqReadyFile(getenv), filepath.Join("tmp", "sidekiq_process_has_started_and_will_begin_processing_jobs"); got != want {
		t.Errorf("default = %q; want %q", got, want)
	}
	env["MASTODON_SIDEKIQ_READY_FILENAME"] = "sidekiq_ready"
	if got, want := SidekiqReadyFile(getenv), filepath.Join("tmp", "sidekiq_ready"); got != want {
		t.Errorf("with MASTODON_SIDEKIQ_READY_FILENAME = %q; want %q", got, want)
	}
}
