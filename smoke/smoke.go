// Package smoke checks a live instance from outside, as an admin does
// after a deploy: each check one line - ok, or what is wrong and what
// usually causes it.
package smoke

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/frontdoor"
)

// Result is one check.
type Result struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Skip   bool   `json:"skipped,omitempty"`
	Detail string `json:"detail"`
	// Cause is what usually causes the failure.
	Cause string `json:"usual_cause,omitempty"`
}

// Checker checks one instance.
type Checker struct {
	Base   *url.URL // https://social.example.org
	Domain string   // the domain the instance must name (Base's host when empty)
	Client *http.Client
	// CertMinDays: a certificate expiring sooner fails.
	CertMinDays int
}

// New is a Checker for base (a URL), with a client that follows no
// redirects and trusts the system's roots.
func New(base string) (*Checker, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL (example: https://social.example.org)", base)
	}
	u.Path, u.RawQuery = "", ""
	return &Checker{Base: u, Domain: u.Hostname(), CertMinDays: 14, Client: &http.Client{
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

type response struct {
	code   int
	header http.Header
	body   []byte
	tls    *tls.ConnectionState
}

func (c *Checker) get(ctx context.Context, path string, header ...string) (*response, error) {
	return c.getURL(ctx, c.Base.String()+path, header...)
}

func (c *Checker) getURL(ctx context.Context, u string, header ...string) (*response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "mastokeeper-smoke")
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return &response{resp.StatusCode, resp.Header, b, resp.TLS}, err
}

// Run runs every check, in order.
func (c *Checker) Run(ctx context.Context) []Result {
	var out []Result
	ok := func(check, detail string) { out = append(out, Result{Check: check, OK: true, Detail: detail}) }
	fail := func(check, detail, cause string) {
		out = append(out, Result{Check: check, Detail: detail, Cause: cause})
	}
	skip := func(check, detail string) {
		out = append(out, Result{Check: check, OK: true, Skip: true, Detail: detail})
	}

	// 1. Web answers.
	r, err := c.get(ctx, "/health")
	switch {
	case err != nil:
		fail("health", "GET /health: "+err.Error(), "the device is off, the domain points elsewhere, or the proxy is down")
	case r.code == 503 && strings.Contains(string(r.body), "starting"):
		fail("health", "the starting page answers: Mastodon's web service is not up yet", "the first boot, an update's migrations or a restore are still running (see 'mastokeeper status')")
	case r.code != 200:
		fail("health", fmt.Sprintf("GET /health answered %d", r.code), "web is down or crash-looping (see its log)")
	default:
		ok("health", "/health answers "+strings.TrimSpace(string(r.body)))
	}

	// 2. The instance names its domain.
	var inst struct {
		Domain  string `json:"domain"`
		Contact struct {
			Account struct {
				Username string `json:"username"`
			} `json:"account"`
		} `json:"contact"`
	}
	r, err = c.get(ctx, "/api/v2/instance", "Accept", "application/json")
	switch {
	case err != nil:
		fail("instance", "GET /api/v2/instance: "+err.Error(), "web does not answer")
	case r.code/100 == 3 && strings.HasPrefix(r.header.Get("Location"), "https://"+c.Base.Host):
		fail("instance", "GET /api/v2/instance redirects to "+r.header.Get("Location")+": Mastodon thinks the visitor came over plain HTTP",
			"whatever ends HTTPS in front of Mastodon must send X-Forwarded-Proto: https (visitors go round in a redirect loop)")
	case r.code != 200 || json.Unmarshal(r.body, &inst) != nil:
		fail("instance", fmt.Sprintf("GET /api/v2/instance answered %d without the instance's JSON", r.code), "web is down, or the proxy sends the API elsewhere")
	case inst.Domain != c.Domain:
		fail("instance", fmt.Sprintf("the instance names itself %q, not %q", inst.Domain, c.Domain), "LOCAL_DOMAIN differs from the address used, or WEB_DOMAIN is set")
	default:
		ok("instance", "/api/v2/instance names "+inst.Domain)
	}

	// 3. WebFinger, host-meta, NodeInfo: how other servers find it.
	if user := inst.Contact.Account.Username; user == "" {
		skip("webfinger", "no contact account to look up (set one in the server settings)")
	} else {
		res := "acct:" + user + "@" + c.Domain
		r, err = c.get(ctx, "/.well-known/webfinger?resource="+url.QueryEscape(res))
		switch {
		case err != nil:
			fail("webfinger", err.Error(), "web does not answer")
		case r.code != 200 || !strings.Contains(string(r.body), `"subject"`):
			fail("webfinger", fmt.Sprintf("WebFinger for %s answered %d", res, r.code), "other servers cannot find accounts here: the proxy must pass /.well-known/ to web")
		default:
			ok("webfinger", "WebFinger finds "+res)
		}
	}
	r, err = c.get(ctx, "/.well-known/host-meta")
	if err != nil || r.code != 200 || !strings.Contains(string(r.body), "webfinger") {
		fail("host-meta", describe(r, err, "/.well-known/host-meta"), "the proxy must pass /.well-known/ to web")
	} else {
		ok("host-meta", "/.well-known/host-meta links to WebFinger")
	}
	var ni struct {
		Links []struct{ Href string } `json:"links"`
	}
	r, err = c.get(ctx, "/.well-known/nodeinfo")
	if err != nil || r.code != 200 || json.Unmarshal(r.body, &ni) != nil || len(ni.Links) == 0 {
		fail("nodeinfo", describe(r, err, "/.well-known/nodeinfo"), "the proxy must pass /.well-known/ to web")
	} else {
		var doc struct {
			Software struct{ Name, Version string } `json:"software"`
		}
		// The link names the instance's domain; fetched through the address
		// checked, it checks this device even before DNS points at it.
		href := ni.Links[0].Href
		if u, perr := url.Parse(href); perr == nil && (u.Hostname() == c.Domain || u.Host == c.Base.Host) {
			r, err = c.get(ctx, u.RequestURI())
		} else {
			r, err = c.getURL(ctx, href)
		}
		if err != nil || r.code != 200 || json.Unmarshal(r.body, &doc) != nil || doc.Software.Name == "" {
			fail("nodeinfo", describe(r, err, ni.Links[0].Href), "the NodeInfo link points to another address: check LOCAL_DOMAIN and the proxy")
		} else {
			ok("nodeinfo", fmt.Sprintf("NodeInfo: %s %s", doc.Software.Name, doc.Software.Version))
		}
	}

	// 4. Streaming: health, and a WebSocket through the proxy.
	r, err = c.get(ctx, "/api/v1/streaming/health")
	if err != nil || r.code != 200 {
		fail("streaming", describe(r, err, "/api/v1/streaming/health"), "the streaming service is down, or the proxy does not send /api/v1/streaming to it")
	} else {
		ok("streaming", "/api/v1/streaming/health answers "+strings.TrimSpace(string(r.body)))
	}
	if code, err := c.websocket(ctx); err != nil || (code != 101 && code != 401) {
		fail("websocket", fmt.Sprintf("a WebSocket to /api/v1/streaming: %s", describeCode(code, err)), "the proxy drops the Upgrade header, or streaming is down: live timelines stay still")
	} else {
		ok("websocket", fmt.Sprintf("a WebSocket to /api/v1/streaming is upgraded (%d)", code))
	}

	// 5. Assets: served with long caching and compression.
	out = append(out, c.asset(ctx))

	// 6. The onion service, when the site offers one.
	out = append(out, c.onion(ctx))

	// 7. HTTPS: the redirect, the certificate, HSTS.
	if c.Base.Scheme != "https" {
		skip("https", "checked over plain HTTP: TLS ends before this address (balena's public URL, a tunnel)")
		return out
	}
	plain := *c.Base
	plain.Scheme = "http"
	if r, err := c.getURL(ctx, plain.String()+"/"); err != nil || r.code/100 != 3 || !strings.HasPrefix(r.header.Get("Location"), "https://") {
		fail("https redirect", describe(r, err, plain.String()+"/"), "port 80 is not forwarded to the device, or the proxy is not in https mode")
	} else {
		ok("https redirect", "http:// redirects to https://")
	}
	r, err = c.get(ctx, "/health")
	switch {
	case err != nil || r.tls == nil || len(r.tls.PeerCertificates) == 0:
		fail("certificate", describe(r, err, "/health"), "no valid certificate: the domain's DNS, or ports 80 and 443, do not reach the device")
	default:
		cert := r.tls.PeerCertificates[0]
		days := int(time.Until(cert.NotAfter).Hours() / 24)
		if days < c.CertMinDays {
			fail("certificate", fmt.Sprintf("the certificate expires in %d days (%s)", days, cert.NotAfter.Format(time.DateOnly)), "renewal fails: ports 80 and 443 must stay reachable, and the proxy's data volume kept")
		} else {
			ok("certificate", fmt.Sprintf("valid for %s until %s (%d days)", strings.Join(cert.DNSNames, ", "), cert.NotAfter.Format(time.DateOnly), days))
		}
		if r.header.Get("Strict-Transport-Security") == "" {
			fail("hsts", "no Strict-Transport-Security header", "the proxy does not send HSTS")
		} else {
			ok("hsts", "Strict-Transport-Security: "+r.header.Get("Strict-Transport-Security"))
		}
	}
	return out
}

var assetRe = regexp.MustCompile(`(?:src|href)="(/(?:packs|assets)/[^"]+\.(?:js|css))"`)

// asset finds a precompiled asset on the home page and checks its caching
// and compression.
func (c *Checker) asset(ctx context.Context) Result {
	const check = "assets"
	r, err := c.get(ctx, "/", "Accept", "text/html")
	if err != nil || r.code != 200 {
		return Result{Check: check, Detail: describe(r, err, "/"), Cause: "web does not serve the home page"}
	}
	m := assetRe.FindSubmatch(r.body)
	if m == nil {
		return Result{Check: check, OK: true, Skip: true, Detail: "no /packs/ or /assets/ file named on the home page"}
	}
	path := string(m[1])
	r, err = c.get(ctx, path, "Accept-Encoding", "br, gzip")
	switch {
	case err != nil || r.code != 200:
		return Result{Check: check, Detail: describe(r, err, path), Cause: "the proxy's copy of Mastodon's public/ is not this release's"}
	case !strings.Contains(r.header.Get("Cache-Control"), "max-age"):
		return Result{Check: check, Detail: path + " has no long Cache-Control", Cause: "the proxy does not set caching headers on assets"}
	case r.header.Get("Content-Encoding") == "":
		return Result{Check: check, Detail: path + " is sent uncompressed", Cause: "the proxy does not serve the precompressed .br/.gz files"}
	}
	return Result{Check: check, OK: true, Detail: fmt.Sprintf("%s: %s, %s", path, r.header.Get("Content-Encoding"), r.header.Get("Cache-Control"))}
}

// onion checks the onion service the site advertises (Onion-Location):
// its address, and - where this address reaches the device's own port 80,
// an own domain in the https mode - that the proxy serves it as plain HTTP.
// Tor itself, outside the device, is not checked from here.
func (c *Checker) onion(ctx context.Context) Result {
	const check = "onion"
	r, err := c.get(ctx, "/health")
	if err != nil || r.header.Get("Onion-Location") == "" {
		return Result{Check: check, OK: true, Skip: true, Detail: "no Onion-Location header: no onion service (TOR_ENABLED is off)"}
	}
	loc, perr := url.Parse(r.header.Get("Onion-Location"))
	if perr != nil || loc.Scheme != "http" || !frontdoor.IsOnionHost(loc.Host) {
		return Result{Check: check, Detail: fmt.Sprintf("Onion-Location is %q, not http://<56 characters>.onion", r.header.Get("Onion-Location")),
			Cause: "the keeper wrote no valid address for the proxy: see the keeper's and the tor service's logs"}
	}
	if c.Base.Scheme != "https" {
		return Result{Check: check, OK: true, Detail: "the site offers http://" + loc.Host + " (served through balena's or a tunnel's address, which cannot reach it from here)"}
	}
	plain := *c.Base
	plain.Scheme, plain.Host = "http", c.Base.Hostname()
	r, err = c.getURL(ctx, plain.String()+"/health", "Host", loc.Host)
	if err != nil || r.code != 200 {
		return Result{Check: check, Detail: describe(r, err, "/health of "+loc.Host+" through port 80"), Cause: "the proxy does not serve .onion hosts on port 80: an old proxy image, or another proxy in front"}
	}
	return Result{Check: check, OK: true, Detail: "the site offers http://" + loc.Host + ", which the proxy serves as plain HTTP"}
}

// websocket asks for a WebSocket on the public stream and returns the
// status code of the answer.
func (c *Checker) websocket(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base.String()+"/api/v1/streaming?stream=public", nil)
	if err != nil {
		return 0, err
	}
	key := make([]byte, 16)
	rand.Read(key)
	// An upgrade request: net/http speaks HTTP/1.1 for it, even where the
	// server offers HTTP/2.
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
	req.Header.Set("User-Agent", "mastokeeper-smoke")
	resp, err := c.Client.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func describe(r *response, err error, what string) string {
	if err != nil {
		return what + ": " + err.Error()
	}
	if r == nil {
		return what + ": no answer"
	}
	return fmt.Sprintf("%s answered %d", what, r.code)
}

func describeCode(code int, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("answered %d", code)
}
