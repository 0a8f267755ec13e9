package frontdoor

import (
	"slices"
	"strings"
	"testing"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

func TestTheModeDefaultsToTodaysPlainHTTPBehindThePublicURL(t *testing.T) {
	for _, e := range [][]string{nil, {"LOCAL_DOMAIN=social.example.org"}} {
		p, ps, _ := Load(env(e...))
		if p.Mode != PublicURL || p.ModeSet || len(ps) > 0 {
			t.Errorf("%v: mode %s (set %v), problems %v; want public-url, inferred", e, p.Mode, p.ModeSet, ps)
		}
		if got := p.CaddyEnv(); !slices.Equal(got, []string{"PROXY_SITES=public-url"}) {
			t.Errorf("%v: Caddy gets %v", e, got)
		}
	}
}

func TestALocalhostDomainIsATrialWithCaddysOwnCA(t *testing.T) {
	for _, d := range []string{"mastodon.localhost", "social.home.localhost"} {
		p, ps, _ := Load(env("LOCAL_DOMAIN=" + d))
		if p.Mode != Local || len(ps) > 0 {
			t.Fatalf("%s: mode %s, problems %v", d, p.Mode, ps)
		}
		want := []string{"PROXY_SITES=https", "PROXY_DOMAINS=" + d, "PROXY_TLS=internal"}
		if got := p.CaddyEnv(); !slices.Equal(got, want) {
			t.Errorf("%s: Caddy gets %v, want %v", d, got, want)
		}
	}
}

func TestHTTPSCertifiesTheDomainAndWebDomainWithTheAdminsAddress(t *testing.T) {
	p, ps, _ := Load(env("PROXY_MODE=https", "LOCAL_DOMAIN=example.org", "WEB_DOMAIN=social.example.org", "ADMIN_EMAIL=alice@example.org"))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	want := []string{"PROXY_SITES=https", "PROXY_DOMAINS=example.org social.example.org", "PROXY_TLS=acme-email", "ACME_EMAIL=alice@example.org"}
	if got := p.CaddyEnv(); !slices.Equal(got, want) {
		t.Errorf("Caddy gets %v, want %v", got, want)
	}

	p, ps, _ = Load(env("PROXY_MODE=https", "LOCAL_DOMAIN=example.org", "ADMIN_EMAIL=alice@example.org", "ACME_EMAIL=certs@example.org", "ACME_CA=staging"))
	want = []string{"PROXY_SITES=https", "PROXY_DOMAINS=example.org", "PROXY_TLS=acme-email-ca", "ACME_EMAIL=certs@example.org", "ACME_CA=" + LetsEncryptStaging}
	if got := p.CaddyEnv(); len(ps) > 0 || !slices.Equal(got, want) {
		t.Errorf("Caddy gets %v (problems %v), want %v", got, ps, want)
	}

	p, _, _ = Load(env("PROXY_MODE=https", "LOCAL_DOMAIN=example.org"))
	if got := p.CaddyEnv(); !slices.Equal(got, []string{"PROXY_SITES=https", "PROXY_DOMAINS=example.org", "PROXY_TLS=acme"}) {
		t.Errorf("without any address: Caddy gets %v", got)
	}
}

func TestATokenAloneMeansTheTunnel(t *testing.T) {
	p, ps, warnings := Load(env("LOCAL_DOMAIN=example.org", "CLOUDFLARE_TUNNEL_TOKEN=x"))
	if p.Mode != CloudflareTunnel || !p.Tunnel || len(ps) > 0 || len(warnings) > 0 {
		t.Errorf("mode %s, tunnel %v, problems %v, warnings %v", p.Mode, p.Tunnel, ps, warnings)
	}
	if got := p.CaddyEnv(); !slices.Equal(got, []string{"PROXY_SITES=public-url"}) {
		t.Errorf("Caddy gets %v", got)
	}
	_, _, warnings = Load(env("LOCAL_DOMAIN=example.org", "PROXY_MODE=cloudflare-tunnel"))
	if len(warnings) != 1 || !strings.Contains(warnings[0], "CLOUDFLARE_TUNNEL_TOKEN is not set") {
		t.Errorf("a tunnel without its token is not warned of: %v", warnings)
	}
}

// Bad combinations are refused with the reason, naming the variable; the
// proxy then serves plain HTTP on port 80 (the starting page) meanwhile.
func TestBadCombinationsAreRefusedWithTheReason(t *testing.T) {
	for _, tc := range []struct {
		env      []string
		variable string
		says     string
	}{
		{[]string{"PROXY_MODE=tls"}, "PROXY_MODE", "one of public-url, https, cloudflare-tunnel, local"},
		{[]string{"PROXY_MODE=https", "BALENA_DEVICE_UUID=abc"}, "PROXY_MODE", "needs the instance's own domain in LOCAL_DOMAIN"},
		{[]string{"PROXY_MODE=https", "LOCAL_DOMAIN=0123abc.balena-devices.com"}, "PROXY_MODE", "balena public URL"},
		{[]string{"PROXY_MODE=https", "LOCAL_DOMAIN=mastodon.localhost"}, "PROXY_MODE", "no public CA can certify"},
		{[]string{"PROXY_MODE=cloudflare-tunnel"}, "PROXY_MODE", "serves your own domain"},
		{[]string{"PROXY_MODE=https", "LOCAL_DOMAIN=example.org", "CLOUDFLARE_TUNNEL_TOKEN=x"}, "CLOUDFLARE_TUNNEL_TOKEN", "set PROXY_MODE=cloudflare-tunnel"},
		{[]string{"PROXY_MODE=https", "LOCAL_DOMAIN=example.org", "WEB_DOMAIN=Social.Example.org"}, "WEB_DOMAIN", "lower case"},
		{[]string{"ACME_EMAIL=alice"}, "ACME_EMAIL", "not a bare e-mail address"},
		{[]string{"ACME_EMAIL=a@b.org }"}, "ACME_EMAIL", "not a bare e-mail address"},
		{[]string{"ACME_CA=http://ca.example.org/dir"}, "ACME_CA", "https:// URL of an ACME directory"},
		{[]string{"TOR_ENABLED=maybe"}, "TOR_ENABLED", "true or false"},
	} {
		p, ps, _ := Load(env(tc.env...))
		if len(ps) != 1 || ps[0].Var != tc.variable || !strings.Contains(ps[0].String(), tc.says) || !strings.Contains(ps[0].String(), "example: ") && tc.variable != TunnelTokenVar {
			t.Errorf("%v: problems %v; want one naming %s with %q and an example", tc.env, ps, tc.variable, tc.says)
			continue
		}
		// An example is a value of the variable named, never VAR=OTHER=x.
		if strings.Contains(ps[0].Example, "=") {
			t.Errorf("%v: example %q", tc.env, ps[0].Example)
		}
		if p.Mode != PublicURL && p.Mode != CloudflareTunnel && len(p.Domains) == 0 && p.CaddyEnv()[0] != "PROXY_SITES=public-url" {
			t.Errorf("%v: a refused front door must fall back to plain HTTP, Caddy gets %v", tc.env, p.CaddyEnv())
		}
	}
}

// Whatever reaches the Caddyfile is a checked value: an unusable address
// from ADMIN_EMAIL (config names it) is left out rather than passed on.
func TestOnlyCheckedValuesReachCaddy(t *testing.T) {
	p, _, _ := Load(env("PROXY_MODE=https", "LOCAL_DOMAIN=example.org", "ADMIN_EMAIL=x@y.org {\n}"))
	if got := p.CaddyEnv(); !slices.Equal(got, []string{"PROXY_SITES=https", "PROXY_DOMAINS=example.org", "PROXY_TLS=acme"}) {
		t.Errorf("Caddy gets %v", got)
	}
	p, _, _ = Load(env("PROXY_MODE=https", "LOCAL_DOMAIN=example.org }"))
	if got := p.CaddyEnv(); !slices.Equal(got, []string{"PROXY_SITES=public-url"}) {
		t.Errorf("a bad LOCAL_DOMAIN: Caddy gets %v", got)
	}
}

func TestTorIsOffUnlessEnabled(t *testing.T) {
	for v, want := range map[string]bool{"": false, "false": false, "true": true, "TRUE": true, "1": true, "no": false} {
		if p, _, _ := Load(env("TOR_ENABLED=" + v)); p.Tor != want {
			t.Errorf("TOR_ENABLED=%q: tor %v, want %v", v, p.Tor, want)
		}
	}
}
