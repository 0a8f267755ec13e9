// Package supervisor talks to the balena supervisor's API, which a service
// with the label io.balena.features.supervisor-api gets: the keeper uses it
// to restart the other services after a restore, so they start with the
// restored secrets and database.
package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client is the supervisor API of this device's application.
type Client struct {
	addr  string
	key   string
	appID string
	http  *http.Client
}

// FromEnv returns the client the supervisor's variables describe, or nil
// outside balena (plain docker compose), where there is none.
func FromEnv(getenv func(string) string) *Client {
	addr, key, app := getenv("BALENA_SUPERVISOR_ADDRESS"), getenv("BALENA_SUPERVISOR_API_KEY"), getenv("BALENA_APP_ID")
	if addr == "" || key == "" || app == "" {
		return nil
	}
	return &Client{addr: strings.TrimRight(addr, "/"), key: key, appID: app, http: &http.Client{Timeout: 30 * time.Second}}
}

// RestartService restarts service name of this application.
func (c *Client) RestartService(ctx context.Context, name string) error {
	body, _ := json.Marshal(map[string]string{"serviceName": name})
	u := c.addr + "/v2/applications/" + url.PathEscape(c.appID) + "/restart-service"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("supervisor: restart %s: %w", name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	// The key goes in a header, never in a URL that an error might print.
	req.Header.Set("Authorization", "Bearer "+c.key)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("supervisor: restart %s: %w", name, redact(err, c.key))
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("supervisor: restart %s: %s: %s", name, resp.Status, strings.TrimSpace(strings.ReplaceAll(string(msg), c.key, "[redacted]")))
	}
	return nil
}

func redact(err error, key string) error {
	if key == "" || !strings.Contains(err.Error(), key) {
		return err
	}
	return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), key, "[redacted]"))
}
