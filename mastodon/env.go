// Package mastodon runs Mastodon's own commands (rails, tootctl) and builds
// the environment every Mastodon process is started with.
package mastodon

import (
	"slices"
	"strconv"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
)

// notForMastodon are variables Mastodon has no use for and should not hold:
// the superuser's password and the balena API keys the supervisor injects.
var notForMastodon = []string{instance.PostgresPassword, "BALENA_SUPERVISOR_API_KEY", "BALENA_API_KEY"}

// Env returns the environment for a Mastodon process: everything the person
// set (SMTP_*, S3_*, ...) unchanged, plus the instance's domain and secrets,
// the database wiring and the sizing defaults the person did not override.
func Env(base []string, cfg *config.Config, rec *instance.Record, plan sizing.Plan) []string {
	e := newEnv(base)
	for _, k := range notForMastodon {
		e.unset(k)
	}
	e.set("LOCAL_DOMAIN", rec.LocalDomain)
	if rec.Onion != nil {
		// Mastodon answers only for the names it knows (Rails' host
		// authorization); the onion service's is one more.
		alt := e.get("ALTERNATE_DOMAINS")
		if !slices.Contains(strings.Split(strings.ReplaceAll(alt, " ", ""), ","), rec.Onion.Hostname) {
			if alt != "" {
				alt += ","
			}
			e.set("ALTERNATE_DOMAINS", alt+rec.Onion.Hostname)
		}
	}
	for _, name := range instance.SecretNames {
		if name != instance.PostgresPassword {
			e.set(name, rec.Secrets[name])
		}
	}
	e.set("DB_HOST", cfg.DBHost)
	e.set("DB_PORT", strconv.Itoa(cfg.DBPort))
	e.set("DB_NAME", cfg.DBName)
	e.set("DB_USER", cfg.DBUser)
	if e.get("REDIS_URL") == "" {
		e.set("REDIS_HOST", cfg.RedisHost)
		e.set("REDIS_PORT", strconv.Itoa(cfg.RedisPort))
	}
	for _, s := range plan.Mastodon {
		e.set(s.Var, s.Value) // s.Value is the person's own when they set it
	}
	return e.list()
}

// env is an ordered environment in which each name appears once.
type env struct {
	names []string
	vals  map[string]string
}

func newEnv(base []string) *env {
	e := &env{vals: map[string]string{}}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" {
			e.set(k, v)
		}
	}
	return e
}

func (e *env) get(k string) string { return e.vals[k] }

func (e *env) set(k, v string) {
	if _, ok := e.vals[k]; !ok {
		e.names = append(e.names, k)
	}
	e.vals[k] = v
}

func (e *env) unset(k string) {
	if _, ok := e.vals[k]; ok {
		delete(e.vals, k)
		e.names = slices.DeleteFunc(e.names, func(n string) bool { return n == k })
	}
}

func (e *env) list() []string {
	out := make([]string, 0, len(e.names))
	for _, k := range e.names {
		out = append(out, k+"="+e.vals[k])
	}
	return out
}

// PostgresEnv is the environment for the db container's entrypoint: the
// superuser password it initialises the cluster with, and of the rest only
// what PostgreSQL and its image use - not Mastodon's secrets, nor the SMTP
// or storage credentials a person sets for all services.
func PostgresEnv(base []string, cfg *config.Config, rec *instance.Record) []string {
	e := newEnv(nil)
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		if forPostgres(k) {
			e.set(k, v)
		}
	}
	e.set("POSTGRES_USER", cfg.PostgresUser)
	e.set(instance.PostgresPassword, rec.Secrets[instance.PostgresPassword])
	return e.list()
}

func forPostgres(name string) bool {
	switch name {
	case "PATH", "HOME", "HOSTNAME", "TZ", "LANG", "LANGUAGE", "GOSU_VERSION", "MASTOKEEPER_STATE_DIR":
		return true
	}
	return strings.HasPrefix(name, "PG") || strings.HasPrefix(name, "LC_") ||
		(strings.HasPrefix(name, "POSTGRES_") && name != instance.PostgresPassword)
}
