// Package frontdoor holds how people reach the instance: the proxy's
// exposure mode (PROXY_MODE) with its certificates, the Cloudflare tunnel
// and the Tor onion service - read from the environment, checked, and
// turned into what Caddy, cloudflared and tor are started with.
package frontdoor

import (
	"fmt"
	"net/mail"
	"net/url"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Mode is how the proxy is exposed.
type Mode string

const (
	// PublicURL: plain HTTP on port 80 behind something that ends TLS -
	// balena's public device URL, a tunnel, a router's reverse proxy.
	PublicURL Mode = "public-url"
	// HTTPS: Caddy obtains certificates for the instance's own domain
	// (ACME) on ports 80 and 443, which the router forwards to the device.
	HTTPS Mode = "https"
	// CloudflareTunnel: plain HTTP on port 80, reached through cloudflared
	// from Cloudflare's edge, which ends TLS - no port opened at home.
	CloudflareTunnel Mode = "cloudflare-tunnel"
	// Local: a certificate from Caddy's own CA, for a trial on one's own
	// computer (LOCAL_DOMAIN=mastodon.localhost) or a LAN.
	Local Mode = "local"
)

// Modes are the valid values of PROXY_MODE.
var Modes = []Mode{PublicURL, HTTPS, CloudflareTunnel, Local}

// Variables read here.
const (
	ModeVar        = "PROXY_MODE"
	ACMEEmailVar   = "ACME_EMAIL"
	ACMECAVar      = "ACME_CA"
	TunnelTokenVar = "CLOUDFLARE_TUNNEL_TOKEN"
	TorVar         = "TOR_ENABLED"
)

// LetsEncryptStaging is what ACME_CA=staging stands for: certificates no
// browser trusts, under far higher rate limits, for trying a setup out.
const LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"

// Plan is the front door the environment asks for.
type Plan struct {
	Mode Mode
	// ModeSet says PROXY_MODE was set; otherwise Mode was inferred.
	ModeSet bool
	// Domains are the host names served over HTTPS in the https and local
	// modes: LOCAL_DOMAIN, and WEB_DOMAIN when it differs.
	Domains   []string
	ACMEEmail string // may be empty: Caddy registers without one
	ACMECA    string // empty: Caddy's default CAs
	Tunnel    bool   // CLOUDFLARE_TUNNEL_TOKEN is set
	Tor       bool
}

// Load reads the front door from getenv. Problems name the variable at
// fault; warnings stop nothing.
func Load(getenv func(string) string) (Plan, problem.List, []string) {
	var p Plan
	var ps problem.List
	var warnings []string
	add := func(v, what, example string) { ps = append(ps, problem.Problem{Var: v, What: what, Example: example}) }

	domain := getenv("LOCAL_DOMAIN") // checked by config; the public URL host when unset
	local := strings.HasSuffix(domain, ".localhost")
	p.Tunnel = getenv(TunnelTokenVar) != ""

	switch raw := getenv(ModeVar); {
	case raw != "":
		p.Mode, p.ModeSet = Mode(raw), true
		if !validMode(p.Mode) {
			add(ModeVar, fmt.Sprintf("is %q; it must be one of %s", raw, modeList()), "https")
			p.Mode = PublicURL // still serve the starting page on port 80
		}
	case local:
		p.Mode = Local
	case p.Tunnel:
		p.Mode = CloudflareTunnel
	default:
		p.Mode = PublicURL
	}

	switch p.Mode {
	case HTTPS, Local:
		if domain != "" && instance.CheckDomain(domain) != "" {
			break // config names LOCAL_DOMAIN's problem; the proxy serves port 80 meanwhile
		}
		if domain == "" {
			add(ModeVar, fmt.Sprintf("is %s, which needs the instance's own domain in LOCAL_DOMAIN (example: LOCAL_DOMAIN=social.example.org): the balena public URL's host has its certificate from balena, and only port 80 reaches the device there", p.Mode),
				"public-url")
			break
		}
		if p.Mode == HTTPS && local {
			add(ModeVar, fmt.Sprintf("is https, but LOCAL_DOMAIN %q is a .localhost name no public CA can certify; leave PROXY_MODE unset (or local) for a trial with Caddy's own certificate", domain),
				"local")
			break
		}
		if p.Mode == HTTPS && instance.IsPublicURLHost(domain) {
			add(ModeVar, fmt.Sprintf("is https, but LOCAL_DOMAIN %q is a balena public URL, whose HTTPS balena's proxy already provides; use PROXY_MODE=public-url", domain),
				"public-url")
			break
		}
		p.Domains = []string{domain}
		if w := getenv("WEB_DOMAIN"); w != "" && w != domain {
			if msg := instance.CheckDomain(w); msg != "" {
				add("WEB_DOMAIN", fmt.Sprintf("is %q; it %s", w, msg), "mastodon.example.org")
			} else {
				p.Domains = append(p.Domains, w)
			}
		}
	case CloudflareTunnel:
		if domain == "" || instance.IsPublicURLHost(domain) {
			add(ModeVar, "is cloudflare-tunnel, which serves your own domain: set LOCAL_DOMAIN to the host name the tunnel is routed from (example: LOCAL_DOMAIN=social.example.org)",
				"public-url")
		}
		if !p.Tunnel {
			warnings = append(warnings, TunnelTokenVar+" is not set, so the cloudflared service idles: create a tunnel in Cloudflare's dashboard (Zero Trust > Networks > Tunnels), route your domain to http://proxy:80 and put its token into "+TunnelTokenVar)
		}
	}
	if p.Tunnel && p.Mode != CloudflareTunnel {
		add(TunnelTokenVar, fmt.Sprintf("is set, but PROXY_MODE is %s: a tunnel ends TLS itself and needs the plain-HTTP proxy; set PROXY_MODE=cloudflare-tunnel or remove the token", p.Mode),
			"")
	}

	if e := getenv(ACMEEmailVar); e != "" {
		if !bareEmail(e) {
			add(ACMEEmailVar, fmt.Sprintf("is %q, which is not a bare e-mail address", e), "you@example.org")
		} else {
			p.ACMEEmail = e
		}
	} else if e := getenv("ADMIN_EMAIL"); bareEmail(e) {
		p.ACMEEmail = e // config names ADMIN_EMAIL's problem, if any
	}
	switch ca := getenv(ACMECAVar); ca {
	case "":
	case "staging":
		p.ACMECA = LetsEncryptStaging
	default:
		if u, err := url.Parse(ca); err != nil || u.Scheme != "https" || u.Host == "" || strings.ContainsAny(ca, " \t\n{}\"") {
			add(ACMECAVar, fmt.Sprintf("is %q; it must be the https:// URL of an ACME directory, or staging for Let's Encrypt's", ca), "staging")
		} else {
			p.ACMECA = ca
		}
	}
	if p.ACMECA != "" && p.Mode != HTTPS {
		warnings = append(warnings, fmt.Sprintf("%s is set but PROXY_MODE is %s, which asks no CA for certificates; it is ignored", ACMECAVar, p.Mode))
	}

	switch t := strings.ToLower(getenv(TorVar)); t {
	case "", "false", "0", "no", "off":
	case "true", "1", "yes", "on":
		p.Tor = true
	default:
		add(TorVar, fmt.Sprintf("is %q; it must be true or false", getenv(TorVar)), "true")
	}
	return p, ps, warnings
}

// bareEmail says whether e is a plain address, safe to hand to Caddy.
func bareEmail(e string) bool {
	a, err := mail.ParseAddress(e)
	return err == nil && a.Address == e && a.Name == "" && !strings.ContainsAny(e, " \t\n{}\"'\\")
}

func validMode(m Mode) bool {
	for _, v := range Modes {
		if m == v {
			return true
		}
	}
	return false
}

func modeList() string {
	s := make([]string, len(Modes))
	for i, m := range Modes {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

// CaddyEnv is what the proxy's Caddyfile reads (see proxy/Caddyfile): its
// sites, the names it certifies and where the certificates come from - none
// of them empty, which would break the Caddyfile's parsing. A
// cloudflare-tunnel proxy is a public-url one.
func (p Plan) CaddyEnv() []string {
	if len(p.Domains) == 0 || (p.Mode != HTTPS && p.Mode != Local) {
		return []string{"PROXY_SITES=public-url"}
	}
	tls := "internal"
	if p.Mode == HTTPS {
		tls = "acme"
		if p.ACMEEmail != "" {
			tls += "-email"
		}
		if p.ACMECA != "" {
			tls += "-ca"
		}
	}
	env := []string{"PROXY_SITES=https", "PROXY_DOMAINS=" + strings.Join(p.Domains, " "), "PROXY_TLS=" + tls}
	if p.ACMEEmail != "" {
		env = append(env, "ACME_EMAIL="+p.ACMEEmail)
	}
	if p.ACMECA != "" {
		env = append(env, "ACME_CA="+p.ACMECA)
	}
	return env
}
