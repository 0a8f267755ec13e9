package e2e

// The front door for real: the proxy started as the stack starts it
// (`mastokeeper launch proxy -- caddy run`) in each PROXY_MODE, the https
// mode against Pebble, Let's Encrypt's test ACME CA, with its DNS server
// resolving the test domain to 127.0.0.1.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/smoke"
)

// pebble is a running Pebble with its DNS server.
type pebble struct {
	dir       string // https://127.0.0.1:port/dir
	caFile    string // the roots that Pebble's own HTTPS listener chains to
	roots     *x509.CertPool
	issuing   *x509.CertPool // Pebble's root for the certificates it issues
	httpPort  int            // where Pebble validates HTTP-01 (the proxy's HTTP port)
	tlsPort   int            // where Pebble validates TLS-ALPN-01 (the proxy's HTTPS port)
	stopFuncs []func()
}

func (p *pebble) stop() {
	for _, f := range p.stopFuncs {
		f()
	}
	p.stopFuncs = nil
}

// startPebble starts pebble-challtestsrv (DNS: every name is 127.0.0.1)
// and Pebble, issuing certificates valid for validity.
func startPebble(t *testing.T, validity time.Duration) *pebble {
	t.Helper()
	pebbleBin, challBin := stackRequireTool(t, "pebble"), stackRequireTool(t, "pebble-challtestsrv")
	dir := t.TempDir()
	p := &pebble{httpPort: freePort(t), tlsPort: freePort(t)}
	t.Cleanup(p.stop)

	// Pebble's own HTTPS listener needs a certificate: from a CA made here.
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e ACME listener CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, &key.PublicKey, caKey)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	p.caFile = filepath.Join(dir, "ca.pem")
	stackWriteFile(t, p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	stackWriteFile(t, filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}))
	stackWriteFile(t, filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	p.roots = x509.NewCertPool()
	p.roots.AddCert(ca)

	dnsPort, acmePort, mgmtPort, challMgmt := freePort(t), freePort(t), freePort(t), freePort(t)
	cfg, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": fmt.Sprintf("127.0.0.1:%d", acmePort), "managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate": filepath.Join(dir, "cert.pem"), "privateKey": filepath.Join(dir, "key.pem"),
		"httpPort": p.httpPort, "tlsPort": p.tlsPort, "ocspResponderURL": "", "externalAccountBindingRequired": false,
		"keyAlgorithm": "ecdsa",
		"profiles":     map[string]any{"default": map[string]any{"description": "e2e", "validityPeriod": int(validity.Seconds())}},
	}})
	stackWriteFile(t, filepath.Join(dir, "pebble.json"), cfg)

	run := func(name string, env []string, args ...string) {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), env...)
		var out bytes.Buffer
		var mu sync.Mutex
		cmd.Stdout, cmd.Stderr = stackLockedWriter{w: &out, mu: &mu}, stackLockedWriter{w: &out, mu: &mu}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.stopFuncs = append([]func(){func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				mu.Lock()
				t.Logf("%s's output:\n%s", filepath.Base(name), out.String())
				mu.Unlock()
			}
		}}, p.stopFuncs...)
	}
	run(challBin, nil, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort), "-management", fmt.Sprintf("127.0.0.1:%d", challMgmt),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	// No random sleeps before validation, no nonces rejected at random:
	// the test waits for issuance, not for Pebble's chaos.
	run(pebbleBin, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		"-config", filepath.Join(dir, "pebble.json"), "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort))

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots}}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			block, _ := pem.Decode(b)
			if resp.StatusCode == 200 && block != nil {
				root, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				p.issuing = x509.NewCertPool()
				p.issuing.AddCert(root)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Pebble does not answer after 20s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.dir = fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort)
	return p
}

// proxy is the stack's proxy service, run as the stack runs it.
type proxy struct {
	httpPort, httpsPort int
	logs                *bytes.Buffer
	mu                  *sync.Mutex
	stop                func()
}

func (p *proxy) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startProxy runs `mastokeeper launch proxy -- caddy run` with the
// repository's Caddyfile on loopback ports, keeping Caddy's data in
// dataHome (the certificates volume), and waits until it listens.
func startProxy(t *testing.T, dataHome string, httpPort, httpsPort int, env ...string) *proxy {
	t.Helper()
	caddy := stackCaddy(t)
	cmd := exec.Command(keeperBin, "launch", "proxy", "--", caddy, "run", "--adapter", "caddyfile", "--config", filepath.Join(stackRepoRoot(t), "proxy", "Caddyfile"))
	cmd.Env = stackCaddyEnv(t, append([]string{
		"PROXY_PORT=" + strconv.Itoa(httpPort), "PROXY_HTTPS_PORT=" + strconv.Itoa(httpsPort), "PROXY_BIND=127.0.0.1",
		"XDG_DATA_HOME=" + dataHome,
	}, env...)...)
	p := &proxy{httpPort: httpPort, httpsPort: httpsPort, logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	cmd.Stdout, cmd.Stderr = stackLockedWriter{w: p.logs, mu: p.mu}, stackLockedWriter{w: p.logs, mu: p.mu}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stopped := false
	p.stop = func() {
		if !stopped {
			stopped = true
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("the proxy's output:\n%s", p.log())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)), time.Second)
		if err == nil {
			c.Close()
			return p
		}
		select {
		case <-done:
			t.Fatalf("the proxy exited:\n%s", p.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy does not listen on %d after 20s:\n%s", httpPort, p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loopback is an HTTP client that reaches the proxy's ports for every
// host name, trusting roots: what a visitor's browser does once DNS points
// at the device.
func loopback(p *proxy, roots *x509.CertPool) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				if port == "443" {
					port = strconv.Itoa(p.httpsPort)
				} else {
					port = strconv.Itoa(p.httpPort)
				}
				return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			},
		},
	}
}

// waitForCertificate waits until the proxy serves host over HTTPS with a
// certificate that roots trust, and returns it.
func waitForCertificate(t *testing.T, p *proxy, roots *x509.CertPool, host string, within time.Duration) *x509.Certificate {
	t.Helper()
	c := loopback(p, roots)
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get("https://" + host + "/health")
		if err == nil {
			resp.Body.Close()
			return resp.TLS.PeerCertificates[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trusted certificate for %s after %s: %v\n%s", host, within, err, p.log())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// A frontdoor stand-in: Mastodon's web answering as the instance, which
// records the scheme it was told.
func webTellingTheScheme(t *testing.T, domain string) (web string, schemes func() []string) {
	var mu sync.Mutex
	var seen []string
	inner := mastodonWebStandIn(t, domain)
	srv := http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host+" "+r.Header.Get("X-Forwarded-Proto"))
		mu.Unlock()
		inner.Config.Handler.ServeHTTP(w, r)
	})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string{}, seen...)
	}
}

// PROXY_MODE=https: Caddy obtains a certificate for the instance's domain
// from a real ACME CA, serves HTTPS with it and HSTS, redirects HTTP there,
// keeps serving every other host (balena's public URL) on port 80 without a
// redirect loop, and keeps the certificate across a restart.
func TestHTTPSModeServesTheOwnDomainWithACertificateFromARealACMECA(t *testing.T) {
	t.Parallel()
	const domain = "social.example.test"
	pb := startPebble(t, 90*24*time.Hour)
	web, schemes := webTellingTheScheme(t, domain)
	streaming, _ := streamingStandIn(t)
	data := t.TempDir()
	env := []string{"PROXY_MODE=https", "LOCAL_DOMAIN=" + domain, "ADMIN_EMAIL=alice@example.org", "ACME_CA=" + pb.dir,
		"SSL_CERT_FILE=" + pb.caFile, "WEB_UPSTREAM=" + web, "STREAMING_UPSTREAM=" + streaming.Listener.Addr().String(), "MASTODON_PUBLIC=" + t.TempDir()}
	p := startProxy(t, data, pb.httpPort, pb.tlsPort, env...)
	cert := waitForCertificate(t, p, pb.issuing, domain, 90*time.Second)
	if !strings.Contains(p.log(), "serving "+domain+" over HTTPS") {
		t.Errorf("the proxy does not say what it serves:\n%s", p.log())
	}

	// The checks an admin runs after the deploy, from outside.
	ch, err := smoke.New("https://" + domain)
	if err != nil {
		t.Fatal(err)
	}
	ch.Client = loopback(p, pb.issuing)
	for _, r := range ch.Run(context.Background()) {
		if !r.OK && !r.Skip && r.Check != "assets" { // no home page with assets here
			t.Errorf("smoke %s: %s (%s)", r.Check, r.Detail, r.Cause)
		}
	}

	c := loopback(p, pb.issuing)
	resp, err := c.Get("http://" + domain + "/about?x=1")
	if err != nil || resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://"+domain+"/about?x=1" {
		t.Errorf("http://%s/about?x=1: %v %v, want a permanent redirect to https", domain, err, resp)
	}
	// balena's public URL ends TLS before the device and forwards port 80
	// only: that host is served as it is, never redirected.
	const public = "0123456789abcdef0123456789abcdef.balena-devices.com"
	req, _ := http.NewRequest("GET", "http://"+public+"/health", nil)
	resp, err = c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("the public URL's host on port 80: %v %v, want 200", err, resp)
	}
	for _, s := range schemes() {
		if !strings.HasSuffix(s, " https") {
			t.Errorf("Mastodon was told %q; every clearnet request arrived over HTTPS", s)
		}
	}

	// The certificate is in the data volume: after a restart, with the CA
	// gone, the same one is served.
	p.stop()
	pb.stop()
	p = startProxy(t, data, pb.httpPort, pb.tlsPort, env...)
	again := waitForCertificate(t, p, pb.issuing, domain, 20*time.Second)
	if again.SerialNumber.Cmp(cert.SerialNumber) != 0 {
		t.Errorf("after a restart the proxy serves another certificate (serial %v, was %v)", again.SerialNumber, cert.SerialNumber)
	}
}

// The ACME challenge on port 80 gets through; and a certificate about to
// expire (renewal failing for weeks) is what smoke reports, with what
// usually causes it.
func TestSmokeReportsACertificateAboutToExpire(t *testing.T) {
	t.Parallel()
	const domain = "soon.example.test"
	pb := startPebble(t, 5*24*time.Hour)
	web := mastodonWebStandIn(t, domain)
	streaming, _ := streamingStandIn(t)
	// Pebble validates TLS-ALPN-01 at a port where nothing listens: the
	// certificate can only come through HTTP-01 on port 80, which the
	// redirect to HTTPS must leave to the ACME challenge.
	p := startProxy(t, t.TempDir(), pb.httpPort, freePort(t), "PROXY_MODE=https", "LOCAL_DOMAIN="+domain, "ACME_CA="+pb.dir,
		"SSL_CERT_FILE="+pb.caFile, "WEB_UPSTREAM="+web.Listener.Addr().String(), "STREAMING_UPSTREAM="+streaming.Listener.Addr().String(), "MASTODON_PUBLIC="+t.TempDir())
	waitForCertificate(t, p, pb.issuing, domain, 90*time.Second)
	if !strings.Contains(p.log(), `"challenge_type":"http-01"`) {
		t.Errorf("the certificate did not come through HTTP-01:\n%s", p.log())
	}
	ch, _ := smoke.New("https://" + domain)
	ch.Client = loopback(p, pb.issuing)
	found := false
	for _, r := range ch.Run(context.Background()) {
		if r.Check == "certificate" {
			found = true
			if r.OK || !strings.Contains(r.Detail, "expires in 4 days") || !strings.Contains(r.Cause, "renewal fails") {
				t.Errorf("certificate check: %+v", r)
			}
		}
	}
	if !found {
		t.Error("no certificate check")
	}
}

// LOCAL_DOMAIN=mastodon.localhost: a trial on one's own computer gets
// HTTPS from Caddy's own CA, with HTTP redirected to it.
func TestALocalhostTrialGetsHTTPSFromCaddysOwnCA(t *testing.T) {
	t.Parallel()
	const domain = "mastodon.localhost"
	web, schemes := webTellingTheScheme(t, domain)
	data := t.TempDir()
	p := startProxy(t, data, freePort(t), freePort(t), "LOCAL_DOMAIN="+domain, "WEB_UPSTREAM="+web, "MASTODON_PUBLIC="+t.TempDir())
	// Its root, as the README tells a person to copy it out of the volume.
	var rootPEM []byte
	deadline := time.Now().Add(30 * time.Second)
	for rootPEM == nil {
		rootPEM, _ = os.ReadFile(filepath.Join(data, "caddy", "pki", "authorities", "local", "root.crt"))
		if time.Now().After(deadline) {
			t.Fatalf("Caddy made no local CA:\n%s", p.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	cert := waitForCertificate(t, p, roots, domain, 30*time.Second)
	if !strings.Contains(cert.Issuer.CommonName, "Caddy Local Authority") {
		t.Errorf("issuer %q", cert.Issuer.CommonName)
	}
	resp, err := loopback(p, roots).Get("http://" + domain + "/")
	if err != nil || resp.StatusCode/100 != 3 || !strings.HasPrefix(resp.Header.Get("Location"), "https://"+domain+"/") {
		t.Errorf("http://%s/: %v %v, want a redirect to https", domain, err, resp)
	}
	if s := schemes(); len(s) == 0 || s[0] != domain+" https" {
		t.Errorf("Mastodon was told %v", s)
	}
}

// PROXY_MODE=cloudflare-tunnel: cloudflared ends HTTPS at Cloudflare's
// edge and reaches the proxy's port 80, which serves as behind balena's
// public URL.
func TestTheTunnelModeServesPlainHTTPForCloudflared(t *testing.T) {
	t.Parallel()
	web, schemes := webTellingTheScheme(t, "social.example.test")
	p := startProxy(t, t.TempDir(), freePort(t), freePort(t), "PROXY_MODE=cloudflare-tunnel", "LOCAL_DOMAIN=social.example.test",
		"CLOUDFLARE_TUNNEL_TOKEN=eyJhIjoiYiJ9", "WEB_UPSTREAM="+web, "MASTODON_PUBLIC="+t.TempDir())
	resp, err := loopback(p, nil).Get("http://social.example.test/api/v2/instance")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("through the tunnel's port 80: %v %v", err, resp)
	}
	if s := schemes(); len(s) != 1 || s[0] != "social.example.test https" {
		t.Errorf("Mastodon was told %v", s)
	}
	if !strings.Contains(p.log(), "serving plain HTTP on port 80 for the Cloudflare tunnel") || strings.Contains(p.log(), "eyJhIjoiYiJ9") {
		t.Errorf("the proxy's log:\n%s", p.log())
	}
}
