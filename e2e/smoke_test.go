package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mastodonWebStandIn answers what other servers and apps ask a Mastodon
// instance for, as web does: health, the instance, WebFinger, host-meta,
// NodeInfo and a home page naming a pack.
func mastodonWebStandIn(t *testing.T, domain string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Rails' force_ssl in production: a request that did not come over
		// HTTPS, as the proxy tells it, is redirected there - except
		// /health and .onion hosts (config/environments/production.rb).
		if r.Header.Get("X-Forwarded-Proto") != "https" && r.URL.Path != "/health" && !strings.HasSuffix(r.Host, ".onion") {
			http.Redirect(w, r, "https://"+r.Host+r.URL.RequestURI(), http.StatusMovedPermanently)
			return
		}
		switch r.URL.Path {
		case "/health":
			io.WriteString(w, "OK")
		case "/api/v2/instance":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"domain":%q,"contact":{"account":{"username":"alice"}}}`, domain)
		case "/.well-known/webfinger":
			if r.URL.Query().Get("resource") != "acct:alice@"+domain {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/jrd+json")
			fmt.Fprintf(w, `{"subject":"acct:alice@%s"}`, domain)
		case "/.well-known/host-meta":
			fmt.Fprintf(w, `<XRD><Link rel="lrdd" template="https://%s/.well-known/webfinger?resource={uri}"/></XRD>`, domain)
		case "/.well-known/nodeinfo":
			// Mastodon links with the scheme the proxy says the visitor used.
			scheme := r.Header.Get("X-Forwarded-Proto")
			if scheme == "" {
				scheme = "http"
			}
			fmt.Fprintf(w, `{"links":[{"rel":"http://nodeinfo.diaspora.software/ns/schema/2.0","href":"%s://%s/nodeinfo/2.0"}]}`, scheme, r.Host)
		case "/nodeinfo/2.0":
			io.WriteString(w, `{"software":{"name":"mastodon","version":"4.7.0"}}`)
		case "/":
			io.WriteString(w, `<html><head><script src="/packs/app-0123abcd.js"></script></head></html>`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// mastokeeper smoke, against real Caddy with the project's Caddyfile in front
// of stand-ins: every check passes; with streaming down, the WebSocket and
// streaming checks fail, say why, and the exit status is 1.
func TestSmokeChecksALiveInstanceThroughTheProxy(t *testing.T) {
	t.Parallel()
	web := mastodonWebStandIn(t, "social.example.test")
	streaming, _ := streamingStandIn(t)
	public := t.TempDir()
	js := bytes.Repeat([]byte("console.log('mastodon');\n"), 50)
	stackWriteFile(t, filepath.Join(public, "packs", "app-0123abcd.js"), js)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(js)
	zw.Close()
	stackWriteFile(t, filepath.Join(public, "packs", "app-0123abcd.js.gz"), gz.Bytes())
	base := stackStartCaddy(t, web.Listener.Addr().String(), streaming.Listener.Addr().String(), public)

	run := func(args ...string) (string, int) {
		cmd := exec.Command(keeperBin, append([]string{"smoke"}, args...)...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := run("--domain", "social.example.test", base)
	if code != 0 {
		t.Fatalf("smoke exited %d:\n%s", code, out)
	}
	for _, want := range []string{"ok    health", "ok    instance", "ok    webfinger", "ok    host-meta", "ok    nodeinfo",
		"ok    streaming", "ok    websocket", "ok    assets", "gzip", "max-age", "skip  https"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
	js2, code := run("--json", "--domain", "social.example.test", base)
	var results []struct {
		Check string
		OK    bool
	}
	if err := json.Unmarshal([]byte(js2), &results); err != nil || code != 0 || len(results) < 9 {
		t.Errorf("--json (%d): %v\n%s", code, err, js2)
	}

	wrong, code := run(base) // the URL's host, 127.0.0.1, is not the instance's name
	if code != 1 || !strings.Contains(wrong, `FAIL  instance`) || !strings.Contains(wrong, "usually: LOCAL_DOMAIN differs") {
		t.Errorf("a wrong domain (%d):\n%s", code, wrong)
	}
	// Web reached without the proxy's X-Forwarded-Proto: Mastodon sends
	// every visitor to HTTPS, round and round.
	bare, code := run("--domain", "social.example.test", web.URL)
	if code != 1 || !strings.Contains(bare, "FAIL  instance") || !strings.Contains(bare, "X-Forwarded-Proto: https") {
		t.Errorf("without X-Forwarded-Proto (%d):\n%s", code, bare)
	}
	streaming.Close()
	down, code := run("--domain", "social.example.test", base)
	if code != 1 || !strings.Contains(down, "FAIL  websocket") || !strings.Contains(down, "FAIL  streaming") || !strings.Contains(down, "checks failed") {
		t.Errorf("with streaming down (%d):\n%s", code, down)
	}
	if _, code := run("ftp://x"); code != 2 {
		t.Errorf("a URL that is not http(s): exit %d, want 2", code)
	}
}
