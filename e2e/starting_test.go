package e2e

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
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

	// As a phone shows it: Mastodon's dark background, light text, nothing
	// cut off at the sides.
	shot := screenshot(t, base+"/about", 390, 844)
	b := shot.Bounds()
	bg := color.RGBA{0x19, 0x1b, 0x22, 0xff}
	light := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := shot.At(x, y).RGBA()
			if r>>8 > 200 && g>>8 > 200 && bl>>8 > 200 {
				light++
			}
			if (x == b.Min.X || x == b.Max.X-1) && !near(shot.At(x, y), bg) {
				t.Errorf("the page touches the screen's edge at (%d,%d)", x, y)
				y = b.Max.Y
				break
			}
		}
	}
	if !near(shot.At(b.Min.X, b.Min.Y), bg) || light < 200 {
		t.Errorf("the page is not styled: corner %v, %d light pixels", shot.At(b.Min.X, b.Min.Y), light)
	}
	if t.Failed() {
		keepScreenshot(t, shot)
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

// screenshot is headless Chromium's picture of url in a window of w x h.
func screenshot(t *testing.T, url string, w, h int) image.Image {
	t.Helper()
	chromium := stackRequireTool(t, "chromium")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := filepath.Join(dir, "shot.png")
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(dir, "profile"), fmt.Sprintf("--window-size=%d,%d", w, h), "--screenshot="+out, url)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// keepScreenshot saves a failed test's picture where it outlives the test.
func keepScreenshot(t *testing.T, img image.Image) {
	p := filepath.Join(os.TempDir(), strings.ReplaceAll(t.Name(), "/", "_")+".png")
	if f, err := os.Create(p); err == nil {
		png.Encode(f, img)
		f.Close()
		t.Logf("the screenshot: %s", p)
	}
}

// near says whether c is within a few steps of want in every channel.
func near(c color.Color, want color.RGBA) bool {
	r, g, b, _ := c.RGBA()
	d := func(a uint32, w uint8) bool { return int(a>>8)-int(w) <= 3 && int(w)-int(a>>8) <= 3 }
	return d(r, want.R) && d(g, want.G) && d(b, want.B)
}
