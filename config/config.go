// Package config reads mastokeeper's settings from the environment - on
// balena, the variables a person sets in the dashboard - and reports every
// bad one at once.
package config

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
)

// Config is the keeper's view of its environment.
type Config struct {
	StateDir string // the keeper's volume

	DBHost, DBName, DBUser string
	DBPort                 int
	PostgresUser           string // the superuser the db container was initialised with

	RedisHost string
	RedisPort int

	AdminUsername, AdminEmail string

	// MastodonVersion is the version of the Mastodon image this binary was
	// built into; markers are kept per version.
	MastodonVersion string
}

// RedisAddr is Redis's host:port.
func (c *Config) RedisAddr() string { return net.JoinHostPort(c.RedisHost, strconv.Itoa(c.RedisPort)) }

var (
	usernameRe = regexp.MustCompile(`^[A-Za-z0-9_]{1,30}$`)
	emailRe    = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s]+$`)
)

// Load reads the configuration; the error, if any, is an *Error listing
// every problem. The domain is checked but resolved separately (see
// instance.ResolveDomain) because the recorded one wins after first boot.
func Load(getenv func(string) string) (*Config, error) {
	var ps problem.List
	add := func(v, what, ex string) { ps = append(ps, problem.Problem{Var: v, What: what, Example: ex}) }
	def := func(name, d string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return d
	}
	port := func(name string, d int) int {
		v := getenv(name)
		if v == "" {
			return d
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 65535 {
			add(name, fmt.Sprintf("is %q; it must be a TCP port number from 1 to 65535", v), strconv.Itoa(d))
			return d
		}
		return n
	}
	c := &Config{
		StateDir:        def("MASTOKEEPER_STATE_DIR", "/var/lib/mastokeeper"),
		DBHost:          def("DB_HOST", "db"),
		DBName:          def("DB_NAME", "mastodon_production"),
		DBUser:          def("DB_USER", "mastodon"),
		DBPort:          port("DB_PORT", 5432),
		PostgresUser:    def("POSTGRES_USER", "postgres"),
		AdminUsername:   def("ADMIN_USERNAME", "operator"),
		MastodonVersion: getenv("MASTOKEEPER_MASTODON_VERSION"),
	}
	if !filepath.IsAbs(c.StateDir) {
		add("MASTOKEEPER_STATE_DIR", fmt.Sprintf("is %q; it must be an absolute path", c.StateDir), "/var/lib/mastokeeper")
	}
	c.RedisHost, c.RedisPort = def("REDIS_HOST", "redis"), port("REDIS_PORT", 6379)
	if u := getenv("REDIS_URL"); u != "" {
		pu, err := url.Parse(u)
		if err != nil || pu.Scheme != "redis" && pu.Scheme != "rediss" || pu.Hostname() == "" {
			add("REDIS_URL", "is not a redis:// URL", "redis://redis:6379/0")
		} else {
			c.RedisHost = pu.Hostname()
			if ps := pu.Port(); ps != "" {
				if p, err := strconv.Atoi(ps); err != nil || p < 1 || p > 65535 {
					add("REDIS_URL", fmt.Sprintf("has port %q; it must be a TCP port number from 1 to 65535", ps), "redis://redis:6379/0")
				} else {
					c.RedisPort = p
				}
			}
		}
	}
	if getenv("REDIS_NAMESPACE") != "" {
		add("REDIS_NAMESPACE", "is set; Mastodon 4.4 and later refuse to boot with it. Remove the variable", "")
	}
	if getenv("DATABASE_URL") != "" {
		add("DATABASE_URL", "is set; this stack provisions and backs up its own PostgreSQL and configures Mastodon with DB_HOST/DB_NAME/DB_USER instead. Remove the variable", "")
	}
	for _, n := range []struct{ name, v string }{{"DB_NAME", c.DBName}, {"DB_USER", c.DBUser}, {"POSTGRES_USER", c.PostgresUser}} {
		if !identRe.MatchString(n.v) {
			add(n.name, fmt.Sprintf("is %q; use lower-case letters, digits and underscores, starting with a letter", n.v), "mastodon")
		}
	}
	if !usernameRe.MatchString(c.AdminUsername) {
		add("ADMIN_USERNAME", fmt.Sprintf("is %q; a Mastodon username is 1 to 30 letters, digits or underscores", c.AdminUsername), "alice")
	} else if why := blockedUsername(c.AdminUsername); why != "" {
		add("ADMIN_USERNAME", fmt.Sprintf("is %q, %s, so tootctl would refuse to create it", c.AdminUsername, why), "alice")
	}
	c.AdminEmail = getenv("ADMIN_EMAIL")
	if c.AdminEmail != "" && !emailRe.MatchString(c.AdminEmail) {
		add("ADMIN_EMAIL", fmt.Sprintf("is %q, which is not an e-mail address", c.AdminEmail), "alice@example.org")
	}
	if d := getenv("LOCAL_DOMAIN"); d != "" {
		if msg := instance.CheckDomain(d); msg != "" {
			add("LOCAL_DOMAIN", fmt.Sprintf("is %q; it %s", d, msg), "social.example.org")
		}
	}
	for _, p := range sizing.Check(getenv) {
		add(p.Var, p.What, p.Example)
	}
	ps = append(ps, checkProvidedSecrets(getenv)...)
	if len(ps) > 0 {
		return c, ps
	}
	return c, nil
}

// Usernames Mastodon's seeds block (db/seeds/05_blocked_usernames.rb):
// exact names, and any name containing the words after them.
var (
	blockedExact = strings.Fields(`abuse account accounts admin administration administrator admins coppa help
		helpdesk instance mod moderator moderators mods owner privacy root security server staff support terms webmaster`)
	blockedWords = []string{"mastodon", "mastadon"}
)

func blockedUsername(u string) string {
	l := strings.ToLower(u)
	for _, b := range blockedExact {
		if l == b {
			return "a name Mastodon reserves"
		}
	}
	for _, w := range blockedWords {
		if strings.Contains(l, w) {
			return "containing " + w + ", which Mastodon reserves"
		}
	}
	return ""
}

var identRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// What a good value of each secret looks like; never a real value.
var secretExamples = map[string]string{
	instance.SecretKeyBase:       "<128 hex characters, from 'mastokeeper secrets generate'>",
	instance.ARDeterministicKey:  "<32 letters and digits>",
	instance.ARKeyDerivationSalt: "<32 letters and digits>",
	instance.ARPrimaryKey:        "<32 letters and digits>",
	instance.VAPIDPrivateKey:     "<44 characters of URL-safe base64>",
	instance.VAPIDPublicKey:      "<88 characters of URL-safe base64>",
	instance.DBPassword:          "<32 letters and digits>",
	instance.PostgresPassword:    "<32 letters and digits>",
}

// checkProvidedSecrets validates secrets a person set to adopt an existing
// instance's. Messages name the variable, never its value.
func checkProvidedSecrets(getenv func(string) string) []problem.Problem {
	var ps []problem.Problem
	for _, name := range instance.SecretNames {
		if v := getenv(name); v != "" {
			if msg := instance.CheckSecret(name, v); msg != "" {
				ps = append(ps, problem.Problem{Var: name, What: msg, Example: secretExamples[name]})
			}
		}
	}
	priv, pub := getenv(instance.VAPIDPrivateKey), getenv(instance.VAPIDPublicKey)
	if (priv == "") != (pub == "") {
		ps = append(ps, problem.Problem{Var: "VAPID_PRIVATE_KEY", What: "and VAPID_PUBLIC_KEY must be set together or not at all"})
	} else if priv != "" && instance.CheckSecret(instance.VAPIDPrivateKey, priv) == "" {
		if msg := instance.CheckVAPIDPair(priv, pub); msg != "" {
			ps = append(ps, problem.Problem{Var: "VAPID_PUBLIC_KEY", What: "does not belong to VAPID_PRIVATE_KEY"})
		}
	}
	return ps
}
