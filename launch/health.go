package launch

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

// Health checks a Mastodon process so that the engine restarts it only
// when it is truly stuck: a process still waiting for the keeper (a long
// first boot or migration) or within Grace of its start counts as healthy.
type Health struct {
	StateDir    string
	Version     string
	StartedFile string
	Grace       time.Duration
	// SidekiqReadyFile is where sidekiq signals readiness.
	SidekiqReadyFile string
}

// Check probes target: an http(s) URL that must answer 200, or "sidekiq".
func (h Health) Check(ctx context.Context, target string) error {
	if target != "sidekiq" && !strings.HasPrefix(target, "http://") && !strings.HasPrefix(target, "https://") {
		return fmt.Errorf("healthcheck target %q: give an http:// URL or 'sidekiq'", target)
	}
	if !(instance.Dir{Path: h.StateDir}).Has(instance.ReadyMarker(h.Version)) {
		return nil // still waiting for the keeper: that is progress
	}
	err := h.probe(ctx, target)
	if err != nil && h.inGrace() {
		return nil
	}
	return err
}

func (h Health) probe(ctx context.Context, target string) error {
	if target == "sidekiq" {
		if _, err := os.Stat(h.SidekiqReadyFile); err != nil {
			return fmt.Errorf("sidekiq has not signalled readiness: %w", err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", target, resp.Status)
	}
	return nil
}

func (h Health) inGrace() bool {
	b, err := os.ReadFile(h.StartedFile)
	if err != nil {
		return false
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return err == nil && time.Since(time.Unix(sec, 0)) < h.Grace
}

// SidekiqReadyFile is where Mastodon's sidekiq touches its readiness file.
func SidekiqReadyFile(getenv func(string) string) string {
	name := getenv("MASTODON_SIDEKIQ_READY_FILENAME")
	if name == "" {
		name = "sidekiq_process_has_started_and_will_begin_processing_jobs"
	}
	return filepath.Join("tmp", name)
}
