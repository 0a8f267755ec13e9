package config_test

import (
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func secrets(t *testing.T) instance.Secrets {
	t.Helper()
	s, err := instance.GenerateSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// problems loads env and returns the problems, failing unless the error is
// a problem.List.
func problems(t *testing.T, env map[string]string) ([]problem.Problem, string) {
	t.Helper()
	_, err := config.Load(envOf(env))
	if err == nil {
		return nil, ""
	}
	var ce problem.List
	if !errors.As(err, &ce) {
		t.Fatalf("Load error %v is a %T; want a problem.List", err, err)
	}
	return ce, err.Error()
}

func TestLoad_EmptyEnvironmentGivesTheDefaults(t *testing.T) {
	c, err := config.Load(envOf(nil))
	if err != nil {
		t.Fatalf("Load(empty) = %v", err)
	}
	want := config.Config{
		StateDir:      "/var/lib/mastokeeper",
		DBHost:        "db",
		DBPort:        5432,
		DBName:        "mastodon_production",
		DBUser:        "mastodon",
		PostgresUser:  "postgres",
		RedisHost:     "redis",
		RedisPort:     6379,
		AdminUsername: "operator",
	}
	if *c != want {
		t.Errorf("Load(empty) = %+v;\nwant %+v", *c, want)
	}
	if got := c.RedisAddr(); got != "redis:6379" {
		t.Errorf("RedisAddr = %q; want redis:6379", got)
	}
}

func TestLoad_TakesSetValues(t *testing.T) {
	c, err := config.Load(envOf(map[string]string{
		"MASTOKEEPER_STATE_DIR":        "/data/keeper",
		"DB_HOST":                      "pg.internal",
		"DB_PORT":                      "6543",
		"DB_NAME":                      "social",
		"DB_USER":                      "social_user",
		"POSTGRES_USER":                "root_user",
		"REDIS_HOST":                   "cache",
		"REDIS_PORT":                   "6380",
		"ADMIN_USERNAME":               "alice",
		"ADMIN_EMAIL":                  "alice@example.org",
		"MASTOKEEPER_MASTODON_VERSION": "4.4.0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		StateDir: "/data/keeper", DBHost: "pg.internal", DBPort: 6543, DBName: "social", DBUser: "social_user",
		PostgresUser: "root_user", RedisHost: "cache", RedisPort: 6380, AdminUsername: "alice",
		AdminEmail: "alice@example.org", MastodonVersion: "4.4.0",
	}
	if *c != want {
		t.Errorf("Load = %+v;\nwant %+v", *c, want)
	}
}

func TestLoad_RedisURLGivesHostAndPort(t *testing.T) {
	tests := map[string]string{
		"redis://cache.internal:6380/0":    "cache.internal:6380",
		"rediss://:pw@cache.internal:7000": "cache.internal:7000",
		"redis://cache.internal":           "cache.internal:6379",
		"redis://[fd00::1]:6390/1":         "[fd00::1]:6390",
	}
	for u, want := range tests {
		c, err := config.Load(envOf(map[string]string{"REDIS_URL": u, "REDIS_HOST": "ignored"}))
		if err != nil {
			t.Errorf("REDIS_URL=%s: %v", u, err)
			continue
		}
		if got := c.RedisAddr(); got != want {
			t.Errorf("REDIS_URL=%s: RedisAddr = %q; want %q", u, got, want)
		}
	}
}

func TestLoad_BadRedisURL(t *testing.T) {
	for _, u := range []string{"http://redis:6379", "redis:6379", "redis://:secretpw@/0", "::"} {
		ps, text := problems(t, map[string]string{"REDIS_URL": u})
		if len(ps) != 1 || ps[0].Var != "REDIS_URL" || ps[0].Example == "" {
			t.Errorf("REDIS_URL=%q: problems = %+v; want one for REDIS_URL with an example", u, ps)
		}
		if strings.Contains(text, "secretpw") {
			t.Errorf("REDIS_URL=%q: error repeats the URL's password: %s", u, text)
		}
	}
}

func TestLoad_ListsEveryProblemAtOnce(t *testing.T) {
	s := secrets(t)
	other := secrets(t)
	env := map[string]string{
		"DB_PORT":               "70000",
		"REDIS_PORT":            "redis",
		"REDIS_NAMESPACE":       "mastodon",
		"DATABASE_URL":          "postgres://u:p@h/db",
		"DB_NAME":               "Mastodon-Prod",
		"ADMIN_USERNAME":        "bad name!",
		"ADMIN_EMAIL":           "not-an-address",
		"LOCAL_DOMAIN":          "Social.Example.org",
		"WEB_CONCURRENCY":       "many",
		"MASTOKEEPER_STATE_DIR": "var/lib/mastokeeper",
		"SECRET_KEY_BASE":       "deadbeefcafe",
		"VAPID_PRIVATE_KEY":     s[instance.VAPIDPrivateKey],
		"VAPID_PUBLIC_KEY":      other[instance.VAPIDPublicKey],
	}
	wantVars := []string{
		"DB_PORT", "REDIS_PORT", "REDIS_NAMESPACE", "DATABASE_URL", "DB_NAME", "ADMIN_USERNAME",
		"ADMIN_EMAIL", "LOCAL_DOMAIN", "WEB_CONCURRENCY", "MASTOKEEPER_STATE_DIR", "SECRET_KEY_BASE",
		"VAPID_PUBLIC_KEY",
	}
	c, err := config.Load(envOf(env))
	var ce problem.List
	if !errors.As(err, &ce) {
		t.Fatalf("Load = %v; want a problem.List", err)
	}
	if c == nil {
		t.Error("Load returned no Config alongside the error (healthcheck and status need one)")
	}
	got := map[string]problem.Problem{}
	for _, p := range ce {
		got[p.Var] = p
	}
	for _, v := range wantVars {
		if _, ok := got[v]; !ok {
			t.Errorf("%s was not reported", v)
		}
	}
	if len(ce) != len(wantVars) {
		t.Errorf("got %d problems, want %d:\n%s", len(ce), len(wantVars), err)
	}
	text := err.Error()
	if !strings.HasPrefix(text, "12 configuration problems:\n") {
		t.Errorf("error does not start with the count: %q", text)
	}
	for _, p := range ce {
		if !strings.Contains(text, "  - "+p.String()) {
			t.Errorf("error text does not list %q", p.String())
		}
	}
	// Variables with a sensible example carry one.
	for _, v := range []string{"DB_PORT", "REDIS_PORT", "DB_NAME", "ADMIN_USERNAME", "ADMIN_EMAIL", "LOCAL_DOMAIN", "WEB_CONCURRENCY", "MASTOKEEPER_STATE_DIR", "SECRET_KEY_BASE"} {
		if got[v].Example == "" {
			t.Errorf("%s: no example", v)
		}
	}
	for _, secret := range []string{env["SECRET_KEY_BASE"], env["VAPID_PRIVATE_KEY"], env["VAPID_PUBLIC_KEY"]} {
		if strings.Contains(text, secret) {
			t.Errorf("error text contains a provided secret's value:\n%s", text)
		}
	}
}

func TestLoad_EachBadVariableIsNamedWithAnExample(t *testing.T) {
	tests := []struct {
		name, value string
		example     bool
	}{
		{"DB_PORT", "0", true},
		{"DB_PORT", "5432x", true},
		{"REDIS_PORT", "65536", true},
		{"DB_NAME", "1db", true},
		{"DB_USER", "mastodon-user", true},
		{"POSTGRES_USER", "Postgres", true},
		{"ADMIN_USERNAME", "alice.smith", true},
		{"ADMIN_USERNAME", strings.Repeat("a", 31), true},
		{"ADMIN_USERNAME", "admin", true},
		{"ADMIN_USERNAME", "Owner", true},
		{"ADMIN_USERNAME", "root", true},
		{"ADMIN_USERNAME", "mastodonfan", true},
		{"ADMIN_USERNAME", "the_MASTADON", true},
		{"ADMIN_EMAIL", "alice@localhost", true},
		{"ADMIN_EMAIL", "alice at example.org", true},
		{"ADMIN_EMAIL", "a@b@example.org", true},
		{"LOCAL_DOMAIN", "social.example.org/", true},
		{"MASTOKEEPER_STATE_DIR", "./state", true},
		{"POSTGRES_SHARED_BUFFERS", "lots", true},
		{"REDIS_NAMESPACE", "x", false},
		{"DATABASE_URL", "postgres://db/mastodon", false},
	}
	for _, tc := range tests {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			ps, _ := problems(t, map[string]string{tc.name: tc.value})
			if len(ps) != 1 || ps[0].Var != tc.name {
				t.Fatalf("problems = %+v; want exactly one for %s", ps, tc.name)
			}
			if tc.example && ps[0].Example == "" {
				t.Errorf("%s: no example", tc.name)
			}
			if tc.example {
				if again, _ := problems(t, map[string]string{tc.name: ps[0].Example}); len(again) != 0 {
					t.Errorf("the example %s=%s is itself rejected: %+v", tc.name, ps[0].Example, again)
				}
			}
		})
	}
}

func TestLoad_ReservedAdminUsernameSaysWhy(t *testing.T) {
	ps, _ := problems(t, map[string]string{"ADMIN_USERNAME": "mastodonfan"})
	if len(ps) != 1 || !strings.Contains(ps[0].What, "mastodon") || !strings.Contains(ps[0].What, "tootctl") {
		t.Errorf("problems = %+v; want one explaining that the name contains mastodon", ps)
	}
}

func TestLoad_GoodAdminUsernamesAndEmails(t *testing.T) {
	for _, env := range []map[string]string{
		{"ADMIN_USERNAME": "alice"},
		{"ADMIN_USERNAME": "Alice_99"},
		{"ADMIN_USERNAME": strings.Repeat("a", 30)},
		{"ADMIN_USERNAME": "administrator_alice"}, // reserved only as an exact name
		{"ADMIN_EMAIL": "alice@example.org"},
		{"ADMIN_EMAIL": "alice+mastodon@mail.example.co.uk"},
	} {
		if ps, text := problems(t, env); len(ps) != 0 {
			t.Errorf("%v: %s", env, text)
		}
	}
}

func TestLoad_AcceptsAFullSetOfGeneratedSecrets(t *testing.T) {
	s := secrets(t)
	env := map[string]string{}
	for _, name := range instance.SecretNames {
		env[name] = s[name]
	}
	if ps, text := problems(t, env); len(ps) != 0 {
		t.Errorf("generated secrets rejected: %s", text)
	}
}

func TestLoad_ProvidedSecretsAreCheckedWithoutShowingThem(t *testing.T) {
	short := "0123456789abcdef0123456789abcdef" // 32 hex: too short for SECRET_KEY_BASE
	unsafe := "xyzxyzxyzxyzxyzDO_NOT_USE_IN_PRODUCTION"
	ps, text := problems(t, map[string]string{
		instance.SecretKeyBase:      short,
		instance.ARPrimaryKey:       unsafe,
		instance.DBPassword:         "has space in it",
		instance.PostgresPassword:   "tiny",
		instance.ARDeterministicKey: "abcdefghijklmnopqrstuvwxyz012345", // fine
	})
	want := map[string]bool{instance.SecretKeyBase: true, instance.ARPrimaryKey: true, instance.DBPassword: true, instance.PostgresPassword: true}
	if len(ps) != len(want) {
		t.Errorf("got %d problems, want %d:\n%s", len(ps), len(want), text)
	}
	for _, p := range ps {
		if !want[p.Var] {
			t.Errorf("unexpected problem %s", p)
		}
		if p.Example == "" || !strings.HasPrefix(p.Example, "<") {
			t.Errorf("%s: example %q should describe the format, not be a value", p.Var, p.Example)
		}
	}
	for _, v := range []string{short, unsafe, "has space in it", "tiny", "abcdefghijklmnopqrstuvwxyz012345"} {
		if strings.Contains(text, v) {
			t.Errorf("error text contains the secret value %q:\n%s", v, text)
		}
	}
}

func TestLoad_MismatchedVAPIDPair(t *testing.T) {
	a, b := secrets(t), secrets(t)
	ps, text := problems(t, map[string]string{
		instance.VAPIDPrivateKey: a[instance.VAPIDPrivateKey],
		instance.VAPIDPublicKey:  b[instance.VAPIDPublicKey],
	})
	if len(ps) != 1 || ps[0].Var != instance.VAPIDPublicKey || !strings.Contains(ps[0].What, instance.VAPIDPrivateKey) {
		t.Errorf("problems = %+v; want one saying VAPID_PUBLIC_KEY does not belong to VAPID_PRIVATE_KEY", ps)
	}
	if strings.Contains(text, a[instance.VAPIDPrivateKey]) || strings.Contains(text, b[instance.VAPIDPublicKey]) {
		t.Errorf("error text contains a key:\n%s", text)
	}
}

func TestLoad_VAPIDHalfIsRefused(t *testing.T) {
	s := secrets(t)
	for _, half := range []string{instance.VAPIDPrivateKey, instance.VAPIDPublicKey} {
		ps, text := problems(t, map[string]string{half: s[half]})
		if len(ps) != 1 {
			t.Errorf("only %s set: problems = %+v; want one", half, ps)
			continue
		}
		if !strings.Contains(ps[0].String(), instance.VAPIDPrivateKey) || !strings.Contains(ps[0].String(), instance.VAPIDPublicKey) ||
			!strings.Contains(ps[0].String(), "together") {
			t.Errorf("only %s set: %q should say both must be set together", half, ps[0])
		}
		if strings.Contains(text, s[half]) {
			t.Errorf("error text contains the key")
		}
	}
}

func TestLoad_BadVAPIDPrivateKeyIsNotAlsoReportedAsAMismatch(t *testing.T) {
	s := secrets(t)
	ps, text := problems(t, map[string]string{
		instance.VAPIDPrivateKey: "bm90IGEga2V5",
		instance.VAPIDPublicKey:  s[instance.VAPIDPublicKey],
	})
	if len(ps) != 1 || ps[0].Var != instance.VAPIDPrivateKey {
		t.Errorf("problems = %+v; want only VAPID_PRIVATE_KEY's\n%s", ps, text)
	}
}

func TestLoad_RedisURLPortMustBeAPortNumber(t *testing.T) {
	for _, u := range []string{"redis://cache:99999/0", "redis://cache:0/0", "redis://cache:65536"} {
		ps, _ := problems(t, map[string]string{"REDIS_URL": u})
		if len(ps) != 1 || ps[0].Var != "REDIS_URL" {
			t.Errorf("REDIS_URL=%s: problems = %+v; want one for REDIS_URL", u, ps)
		}
	}
}
