package mastodon

import (
	"crypto/rand"
	"slices"
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
)

func testRecord(t *testing.T) *instance.Record {
	t.Helper()
	s, err := instance.GenerateSecrets(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &instance.Record{LocalDomain: "social.example.org", Secrets: s}
}

func testConfig() *config.Config {
	return &config.Config{
		StateDir: "/var/lib/mastokeeper", DBHost: "db", DBPort: 5432, DBName: "mastodon_production",
		DBUser: "mastodon", PostgresUser: "postgres", RedisHost: "redis", RedisPort: 6379, AdminUsername: "operator",
	}
}

// parse turns an environment list into a map, failing on a repeated name
// or a malformed entry.
func parse(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			t.Errorf("malformed entry %q", kv)
			continue
		}
		if _, dup := m[k]; dup {
			t.Errorf("%s appears more than once", k)
		}
		m[k] = v
	}
	return m
}

// baseFromMap builds an environment list from pairs; order is kept.
func baseOf(kv ...string) []string {
	var out []string
	for i := 0; i < len(kv); i += 2 {
		out = append(out, kv[i]+"="+kv[i+1])
	}
	return out
}

func getenvOf(base []string) func(string) string {
	m := map[string]string{}
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

var trickyValues = baseOf(
	"SMTP_PASSWORD", `p@ss"word'with$HOME and \backslash`,
	"SMTP_FROM_ADDRESS", `"Mastodon" <notifications@example.org>`,
	"S3_ALIAS_HOST", "files.example.org",
	"MULTILINE", "line one\nline two\n",
	"WITH_EQUALS", "a=b=c",
	"EMPTY", "",
	"UNICODE", "héllo wörld ✓",
)

func TestEnv_KeepsEveryBaseVariableUnchanged(t *testing.T) {
	base := append([]string{"PATH=/usr/local/bin:/usr/bin", "HOME=/opt/mastodon"}, trickyValues...)
	env := parse(t, Env(base, testConfig(), testRecord(t), sizing.For(4<<30, getenvOf(base))))
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		got, ok := env[k]
		if !ok {
			t.Errorf("%s was dropped", k)
		} else if got != v {
			t.Errorf("%s = %q; want %q unchanged", k, got, v)
		}
	}
}

func TestEnv_SetsDomainAndSecretsFromTheRecord(t *testing.T) {
	rec := testRecord(t)
	stale, _ := instance.GenerateSecrets(rand.Reader)
	// The person's environment may hold other values; the record wins
	// (Guard refuses such an environment before a launch ever gets here).
	base := baseOf("LOCAL_DOMAIN", "other.example.net", instance.SecretKeyBase, stale[instance.SecretKeyBase],
		instance.DBPassword, stale[instance.DBPassword])
	env := parse(t, Env(base, testConfig(), rec, sizing.For(4<<30, getenvOf(base))))
	if env["LOCAL_DOMAIN"] != "social.example.org" {
		t.Errorf("LOCAL_DOMAIN = %q; want the record's", env["LOCAL_DOMAIN"])
	}
	for _, name := range instance.SecretNames {
		if name == instance.PostgresPassword {
			continue
		}
		if env[name] != rec.Secrets[name] {
			t.Errorf("%s is not the record's value", name)
		}
	}
}

func TestEnv_AddsTheOnionAddressToThePersonsAlternateDomains(t *testing.T) {
	rec := testRecord(t)
	const onion = "7fx3g4wf2zryveieet3xstmmsjvuxu3un6okn4hz4abfxta3b5vyqrqd.onion"
	rec.Onion = &instance.OnionKey{Hostname: onion}
	for _, tc := range []struct{ set, want string }{
		{"", onion},
		{"old.example.org", "old.example.org," + onion},
		{"old.example.org, " + onion, "old.example.org, " + onion}, // already there
	} {
		base := baseOf("ALTERNATE_DOMAINS", tc.set)
		env := parse(t, Env(base, testConfig(), rec, sizing.For(4<<30, getenvOf(base))))
		if env["ALTERNATE_DOMAINS"] != tc.want {
			t.Errorf("with ALTERNATE_DOMAINS=%q: got %q, want %q", tc.set, env["ALTERNATE_DOMAINS"], tc.want)
		}
	}
	rec.Onion = nil
	env := parse(t, Env(baseOf("ALTERNATE_DOMAINS", "old.example.org"), testConfig(), rec, sizing.Plan{}))
	if env["ALTERNATE_DOMAINS"] != "old.example.org" {
		t.Errorf("without an onion service: ALTERNATE_DOMAINS = %q, want the person's", env["ALTERNATE_DOMAINS"])
	}
}

func TestEnv_WithholdsTheSuperuserPasswordAndBalenaKeys(t *testing.T) {
	rec := testRecord(t)
	base := baseOf(instance.PostgresPassword, rec.Secrets[instance.PostgresPassword],
		"BALENA_SUPERVISOR_API_KEY", "sup-key", "BALENA_API_KEY", "api-key", "BALENA_DEVICE_UUID", "abc")
	envList := Env(base, testConfig(), rec, sizing.For(4<<30, getenvOf(base)))
	env := parse(t, envList)
	for _, k := range []string{instance.PostgresPassword, "BALENA_SUPERVISOR_API_KEY", "BALENA_API_KEY"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s reaches Mastodon", k)
		}
	}
	for _, kv := range envList {
		if strings.Contains(kv, rec.Secrets[instance.PostgresPassword]) {
			t.Errorf("the superuser password appears in %s", strings.SplitN(kv, "=", 2)[0])
		}
	}
	if env["BALENA_DEVICE_UUID"] != "abc" {
		t.Errorf("BALENA_DEVICE_UUID = %q; other balena variables are kept", env["BALENA_DEVICE_UUID"])
	}
}

func TestEnv_WiresTheDatabaseAndRedisFromConfig(t *testing.T) {
	cfg := testConfig()
	cfg.DBHost, cfg.DBPort, cfg.DBName, cfg.DBUser = "pg", 6543, "social", "social_user"
	cfg.RedisHost, cfg.RedisPort = "cache", 6380
	env := parse(t, Env(nil, cfg, testRecord(t), sizing.For(4<<30, getenvOf(nil))))
	for k, want := range map[string]string{
		"DB_HOST": "pg", "DB_PORT": "6543", "DB_NAME": "social", "DB_USER": "social_user",
		"REDIS_HOST": "cache", "REDIS_PORT": "6380",
	} {
		if env[k] != want {
			t.Errorf("%s = %q; want %q", k, env[k], want)
		}
	}
}

func TestEnv_LeavesRedisToREDIS_URLWhenSet(t *testing.T) {
	base := baseOf("REDIS_URL", "redis://cache:6380/0")
	env := parse(t, Env(base, testConfig(), testRecord(t), sizing.For(4<<30, getenvOf(base))))
	if env["REDIS_URL"] != "redis://cache:6380/0" {
		t.Errorf("REDIS_URL = %q", env["REDIS_URL"])
	}
	for _, k := range []string{"REDIS_HOST", "REDIS_PORT"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s is set alongside REDIS_URL", k)
		}
	}
}

func TestEnv_SetsSizingAndKeepsThePersonsOverride(t *testing.T) {
	base := baseOf("WEB_CONCURRENCY", "3", "SIDEKIQ_CONCURRENCY", "20")
	plan := sizing.For(2<<30, getenvOf(base))
	env := parse(t, Env(base, testConfig(), testRecord(t), plan))
	for k, want := range map[string]string{
		"WEB_CONCURRENCY": "3", "SIDEKIQ_CONCURRENCY": "20", "MAX_THREADS": "5", "DB_POOL": "20",
	} {
		if env[k] != want {
			t.Errorf("%s = %q; want %q", k, env[k], want)
		}
	}
	for _, s := range plan.Postgres {
		if _, ok := env[s.Var]; ok {
			t.Errorf("PostgreSQL setting %s is given to Mastodon", s.Var)
		}
	}
}

func TestEnv_EachNameAppearsOnce(t *testing.T) {
	base := append(baseOf("DB_HOST", "elsewhere", "LOCAL_DOMAIN", "social.example.org", "WEB_CONCURRENCY", "1",
		"DUP", "first", "DUP", "second", "REDIS_HOST", "redis"), trickyValues...)
	base = append(base, "=no-name", "NOEQUALS")
	list := Env(base, testConfig(), testRecord(t), sizing.For(4<<30, getenvOf(base)))
	env := parse(t, list) // fails on duplicates
	if env["DUP"] != "second" {
		t.Errorf("DUP = %q; want the last value, as a shell or exec would use", env["DUP"])
	}
	names := make([]string, 0, len(list))
	for _, kv := range list {
		names = append(names, strings.SplitN(kv, "=", 2)[0])
	}
	if slices.Contains(names, "") || slices.Contains(names, "NOEQUALS") {
		t.Errorf("malformed base entries were passed on: %q", names)
	}
}

func TestEnv_KeepsTheBaseOrderFirst(t *testing.T) {
	base := baseOf("FIRST", "1", "SECOND", "2", "THIRD", "3")
	list := Env(base, testConfig(), testRecord(t), sizing.For(4<<30, getenvOf(base)))
	if !slices.Equal(list[:3], base) {
		t.Errorf("Env starts with %q; want the base %q first", list[:3], base)
	}
}

func TestEnv_DoesNotModifyItsInput(t *testing.T) {
	rec := testRecord(t)
	base := baseOf("A", "1", instance.PostgresPassword, "x")
	orig := slices.Clone(base)
	secrets := map[string]string{}
	for k, v := range rec.Secrets {
		secrets[k] = v
	}
	Env(base, testConfig(), rec, sizing.For(4<<30, getenvOf(base)))
	PostgresEnv(base, testConfig(), rec)
	if !slices.Equal(base, orig) {
		t.Errorf("base changed to %q", base)
	}
	for k, v := range secrets {
		if rec.Secrets[k] != v {
			t.Errorf("record secret %s changed", k)
		}
	}
}

func TestPostgresEnv_HasTheSuperuserAndNoMastodonSecrets(t *testing.T) {
	rec := testRecord(t)
	cfg := testConfig()
	cfg.PostgresUser = "pgadmin"
	base := append(baseOf("PGDATA", "/var/lib/postgresql/data", "BALENA_SUPERVISOR_API_KEY", "sup-key",
		"BALENA_API_KEY", "api-key", "POSTGRES_USER", "someone_else"), trickyValues...)
	for _, name := range instance.SecretNames {
		base = append(base, name+"="+rec.Secrets[name]+"-from-env")
	}
	list := PostgresEnv(base, cfg, rec)
	env := parse(t, list)
	if env[instance.PostgresPassword] != rec.Secrets[instance.PostgresPassword] {
		t.Errorf("POSTGRES_PASSWORD is not the record's")
	}
	if env["POSTGRES_USER"] != "pgadmin" {
		t.Errorf("POSTGRES_USER = %q; want pgadmin", env["POSTGRES_USER"])
	}
	if env["PGDATA"] != "/var/lib/postgresql/data" {
		t.Errorf("PGDATA = %q; want kept", env["PGDATA"])
	}
	for _, name := range instance.SecretNames {
		if name == instance.PostgresPassword {
			continue
		}
		if _, ok := env[name]; ok {
			t.Errorf("%s reaches PostgreSQL", name)
		}
		for _, kv := range list {
			if strings.Contains(kv, rec.Secrets[name]) {
				t.Errorf("the value of %s appears in %s", name, strings.SplitN(kv, "=", 2)[0])
			}
		}
	}
	for _, k := range []string{"BALENA_SUPERVISOR_API_KEY", "BALENA_API_KEY"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s reaches PostgreSQL", k)
		}
	}
}

func TestPostgresEnv_KeepsOtherServicesCredentialsOut(t *testing.T) {
	base := baseOf("SMTP_PASSWORD", "smtp-secret", "AWS_SECRET_ACCESS_KEY", "s3-secret", "LANG", "en_US.utf8",
		"PG_MAJOR", "17", "POSTGRES_SHARED_BUFFERS", "256MB", "PATH", "/usr/bin")
	env := parse(t, PostgresEnv(base, testConfig(), testRecord(t)))
	for _, k := range []string{"SMTP_PASSWORD", "AWS_SECRET_ACCESS_KEY"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s reaches PostgreSQL", k)
		}
	}
	for _, k := range []string{"LANG", "PG_MAJOR", "POSTGRES_SHARED_BUFFERS", "PATH"} {
		if env[k] == "" {
			t.Errorf("%s was dropped; PostgreSQL's image uses it", k)
		}
	}
}
