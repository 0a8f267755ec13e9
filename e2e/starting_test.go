package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// While web does not answer, a visitor gets the starting page - the
// keeper's, saying what it does now, or the image's own - and machines a
// 503 to retry; once web answers, the page is gone.
func TestWhileWebIsDownVisitorsGetTheStartingPage(t *testing.T) {
	t.Parallel()
	starting := t.TempDir()
	page, err := os.ReadFile(filepath.Join(stackRepoRoot(t), "proxy", "starting", "starting.html"))
	if err != nil {
		t.Fatal(err)
	}
	stackWriteFile(t, filepath.Join(starting, "starting.html"), page)
	live := filepath.Join(starting, "live")
	os.Mkdir(live, 0o755)
	webAddr := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nothing listens yet
	base := stackStartCaddy(t, webAddr, webAddr, t.TempDir(), "STARTING_DIR="+starting)

	get := func(path, accept string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Host = "social.example.test"
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	code, h, body := get("/", "text/html")
	if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(h.Get("Content-Type"), "text/html") ||
		!strings.Contains(body, "This Mastodon server is starting") || !strings.Contains(body, `http-equiv="refresh"`) {
		t.Errorf("without the keeper's page: %d %v\n%s", code, h, body)
	}
	for _, c := range []struct{ path, accept string }{
		{"/api/v1/instance", ""}, {"/.well-known/webfinger?resource=acct:alice@social.example.test", ""},
		{"/users/alice", "application/activity+json"}, {"/nodeinfo/2.0", ""},
	} {
		code, h, body := get(c.path, c.accept)
		if code != 503 || h.Get("Retry-After") == "" || h.Get("Content-Type") != "application/json" || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("%s (%s): %d %v %s", c.path, c.accept, code, h, body)
		}
	}

	// The keeper writes what it does into the frontdoor volume.
	s := newStack(t, "FRONTDOOR_DIR="+live)
	s.provision()
	_, _, body = get("/about", "")
	if !strings.Contains(body, "<h1>social.example.test</h1>") || !strings.Contains(body, "Starting Mastodon.") {
		t.Errorf("the keeper's page is not shown:\n%s", body)
	}
	for name, v := range s.record().Secrets {
		if v != "" && strings.Contains(body, v) {
			t.Errorf("the starting page shows %s", name)
		}
	}

	// Web answers: the page is gone.
	l, err := net.Listen("tcp", webAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "mastodon web") })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	if code, _, body := get("/", "text/html"); code != 200 || body != "mastodon web" {
		t.Errorf("with web up: %d %s", code, body)
	}
}
