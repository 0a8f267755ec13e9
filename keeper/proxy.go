package keeper

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/frontdoor"
	"github.com/mastodon-on-balena/mastodon-balena/launch"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// LaunchProxy execs Caddy (argv) with the front door PROXY_MODE asks for.
// A setting it cannot follow is logged, and the proxy serves plain HTTP on
// port 80 meanwhile, so that visitors see the starting page rather than
// nothing. It returns only on failure.
func (k *Keeper) LaunchProxy(argv []string) error {
	log := k.logger("proxy")
	plan, ps := k.S.Door, k.S.DoorProblems()
	k.logDoorProblems(log)
	for _, w := range k.S.doorWarnings {
		log.Warn(w)
	}
	env := caddyEnv(k.S.Environ, plan.CaddyEnv())
	switch {
	case len(ps) > 0:
	case (plan.Mode == frontdoor.HTTPS || plan.Mode == frontdoor.Local) && len(plan.Domains) == 0:
		// LOCAL_DOMAIN is no domain: config names what is wrong with it.
		log.Error(fmt.Sprintf("LOCAL_DOMAIN %q is not a usable domain (see 'mastokeeper config check' on the keeper); until it is fixed the proxy serves plain HTTP on port 80 only", k.S.Getenv("LOCAL_DOMAIN")),
			"variable", "LOCAL_DOMAIN")
	case plan.Mode == frontdoor.HTTPS:
		log.Info("serving "+strings.Join(plan.Domains, " and ")+" over HTTPS with a certificate Caddy obtains and renews itself; "+
			"the domain's DNS must point at this device and the router must forward ports 80 and 443 to it",
			"acme_email", plan.ACMEEmail, "acme_ca", plan.ACMECA)
	case plan.Mode == frontdoor.Local:
		log.Info("serving " + strings.Join(plan.Domains, " and ") + " over HTTPS with a certificate from Caddy's own CA, which browsers warn about until you trust its root " +
			"(docker compose cp proxy:/data/caddy/pki/authorities/local/root.crt .)")
	case plan.Mode == frontdoor.CloudflareTunnel:
		log.Info("serving plain HTTP on port 80 for the Cloudflare tunnel, which ends HTTPS at Cloudflare")
	default:
		log.Info("serving plain HTTP on port 80; HTTPS ends before the device (balena's public device URL or your own tunnel)")
	}
	return launch.Exec(log, argv, env)
}

// logDoorProblems says each front-door problem and what the proxy does
// until it is fixed.
func (k *Keeper) logDoorProblems(log *slog.Logger) {
	for _, p := range k.S.DoorProblems() {
		log.Error(p.String()+"; until it is fixed the proxy serves plain HTTP on port 80 only", "variable", p.Var)
	}
}

// caddyEnv is environ without empty values (an empty variable breaks the
// Caddyfile, and balena gives every variable compose names one) and with
// the front door's own values, which replace any the person set.
func caddyEnv(environ, door []string) []string {
	set := map[string]bool{}
	for _, kv := range door {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	var env []string
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if v == "" || set[k] || k == frontdoor.TunnelTokenVar {
			continue
		}
		env = append(env, kv)
	}
	return append(env, door...)
}

// LaunchTunnel execs cloudflared (argv) with the tunnel's token, or idles
// until the next start when there is none - quietly, with one line saying
// how to turn the tunnel on, never in a restart loop. It returns only on
// failure or when ctx is done.
func (k *Keeper) LaunchTunnel(ctx context.Context, argv []string) error {
	log := k.logger("tunnel")
	token := k.S.Getenv(frontdoor.TunnelTokenVar)
	if token == "" {
		log.Info("the Cloudflare tunnel is off. To reach your own domain through Cloudflare without opening ports at home, " +
			"create a tunnel in Cloudflare's dashboard (Zero Trust > Networks > Tunnels), route the domain to http://proxy:80, " +
			"and set PROXY_MODE=cloudflare-tunnel, LOCAL_DOMAIN and " + frontdoor.TunnelTokenVar + " (the tunnel's token)")
		<-ctx.Done()
		return nil
	}
	if ours := tunnelProblems(k.S.DoorProblems()); len(ours) > 0 {
		for _, p := range ours {
			log.Error(p.String(), "variable", p.Var)
		}
		log.Error("the tunnel stays off until the problem above is fixed")
		<-ctx.Done()
		return nil
	}
	// cloudflared reads its token from TUNNEL_TOKEN: never an argument,
	// which anyone on the device could read.
	var env []string
	for _, kv := range k.S.Environ {
		if name, _, _ := strings.Cut(kv, "="); name != frontdoor.TunnelTokenVar && name != "TUNNEL_TOKEN" {
			env = append(env, kv)
		}
	}
	log.Info("starting the Cloudflare tunnel; it serves whatever hostnames its routes in Cloudflare's dashboard name, to http://proxy:80")
	return launch.Exec(log, argv, append(env, "TUNNEL_TOKEN="+token))
}

// tunnelProblems are the problems that keep the tunnel off.
func tunnelProblems(ps problem.List) problem.List {
	var out problem.List
	for _, p := range ps {
		if p.Var == frontdoor.TunnelTokenVar || p.Var == frontdoor.ModeVar {
			out = append(out, p)
		}
	}
	return out
}

// describeFrontdoor is the front door in a few words, for status.
func describeFrontdoor(plan frontdoor.Plan) string {
	switch plan.Mode {
	case frontdoor.HTTPS:
		ca := "Let's Encrypt"
		if plan.ACMECA != "" {
			ca = plan.ACMECA
		}
		return fmt.Sprintf("https (the proxy's certificates from %s for %s)", ca, strings.Join(plan.Domains, ", "))
	case frontdoor.Local:
		return fmt.Sprintf("local (Caddy's own CA for %s)", strings.Join(plan.Domains, ", "))
	case frontdoor.CloudflareTunnel:
		return "cloudflare-tunnel (plain HTTP on port 80 behind cloudflared)"
	}
	return "public-url (plain HTTP on port 80; HTTPS ends before the device)"
}
