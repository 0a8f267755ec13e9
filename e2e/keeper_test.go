package e2e

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	hex128    = regexp.MustCompile(`^[0-9a-f]{128}$`)
	alnum32   = regexp.MustCompile(`^[A-Za-z0-9]{32}$`)
	b64url44  = regexp.MustCompile(`^[A-Za-z0-9_-]{43}=$`)
	b64url88  = regexp.MustCompile(`^[A-Za-z0-9_-]{87}=$`)
	bannerPwd = regexp.MustCompile(`Password:\s+([0-9a-f]{32})`)
)

func TestFirstBootProvisionsEverythingFromEmpty(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	r := s.provision()

	// The record: the domain and every secret in Mastodon's formats, 0600.
	fi, err := os.Stat(filepath.Join(s.stateDir, "instance.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("instance record: %v, mode %v; want mode 0600", err, fi.Mode())
	}
	rec := s.record()
	if rec.LocalDomain != "social.example.test" {
		t.Errorf("local domain %q", rec.LocalDomain)
	}
	formats := map[string]*regexp.Regexp{
		"SECRET_KEY_BASE": hex128, "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY": alnum32,
		"ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT": alnum32, "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY": alnum32,
		"VAPID_PRIVATE_KEY": b64url44, "VAPID_PUBLIC_KEY": b64url88, "DB_PASS": alnum32, "POSTGRES_PASSWORD": alnum32,
	}
	for name, re := range formats {
		if !re.MatchString(rec.Secrets[name]) {
			t.Errorf("%s is not in its format %s", name, re)
		}
	}

	// PostgreSQL demands passwords: the mastodon role logs in with its own,
	// and nobody gets in with a wrong one.
	s.connect("mastodon", rec.Secrets["DB_PASS"], "mastodon_production")
	if c, err := s.tryConnect("mastodon", "wrong-password", "mastodon_production"); err == nil {
		c.Close(context.Background())
		t.Error("PostgreSQL accepted a wrong password")
	}
	var owner string
	var createdb bool
	s.db("postgres").QueryRow(context.Background(),
		`SELECT pg_get_userbyid(datdba), (SELECT rolcreatedb FROM pg_roles WHERE rolname = 'mastodon') FROM pg_database WHERE datname = 'mastodon_production'`).Scan(&owner, &createdb)
	if owner != "mastodon" || !createdb {
		t.Errorf("database owner %q, role CREATEDB %v; want mastodon, true", owner, createdb)
	}

	// The schema was loaded with seeds, once, by db:prepare.
	if n := s.count(`SELECT count(*) FROM standin_migration_runs WHERE task = 'db:prepare'`); n != 1 {
		t.Errorf("db:prepare ran %d times", n)
	}
	// The Owner: confirmed, approved, its one-time password in a banner.
	var confirmed, approved bool
	var password string
	s.db("mastodon_production").QueryRow(context.Background(), `
		SELECT u.confirmed_at IS NOT NULL, u.approved, u.encrypted_password FROM users u
		JOIN accounts a ON a.id = u.account_id JOIN user_roles r ON r.id = u.role_id
		WHERE a.username = 'alice' AND r.name = 'Owner'`).Scan(&confirmed, &approved, &password)
	if !confirmed || !approved {
		t.Errorf("Owner alice confirmed=%v approved=%v", confirmed, approved)
	}
	m := bannerPwd.FindStringSubmatch(r.out)
	if m == nil || m[1] != password {
		t.Errorf("the log shows no banner with the Owner's password:\n%s", r.out)
	}
	if !strings.Contains(r.out, "Log in as: alice@social.example.test") {
		t.Errorf("the banner does not say whom to log in as")
	}
	if got := s.markers(); !slices.Equal(got, []string{"owner-announced", "ready-" + mastodonVersion, "seeded"}) {
		t.Errorf("markers %v", got)
	}
	if strings.Count(r.out, "sizing for this device") != 1 {
		t.Errorf("sizing should be logged once per start")
	}
}

func TestSecondRunChangesNothing(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision()
	before, record := s.stateSnapshot(), s.recordBytes()
	runs := s.count(`SELECT count(*) FROM standin_migration_runs`)
	accounts := s.count(`SELECT count(*) FROM accounts`)

	r := s.provision()
	if !reflect.DeepEqual(before, s.stateSnapshot()) || string(record) != string(s.recordBytes()) {
		t.Error("a second run changed the keeper's volume")
	}
	if n := s.count(`SELECT count(*) FROM standin_migration_runs`); n != runs {
		t.Errorf("a second run ran migrations (%d runs, was %d)", n, runs)
	}
	if n := s.count(`SELECT count(*) FROM accounts`); n != accounts {
		t.Errorf("a second run created accounts")
	}
	if bannerPwd.MatchString(r.out) {
		t.Error("a second run showed a password again")
	}
	if !strings.Contains(r.out, "database schema is up to date") {
		t.Errorf("the second run does not say the schema is up to date:\n%s", r.out)
	}
}

// Each step of a first boot, named by what the keeper (or a Mastodon
// command it runs) prints when the step begins. The keeper is killed with
// SIGKILL there, with its children, then started again.
func TestKillNineAtAnyStepThenRerunConverges(t *testing.T) {
	t.Parallel()
	steps := []struct{ name, line string }{
		{"at start", ""},
		{"after the record is written", "first boot: recorded"},
		{"while waiting for PostgreSQL", "waiting for PostgreSQL"},
		{"after the role", "created or updated the database role"},
		{"after the database", "created Mastodon's database"},
		{"when the schema load starts", "loading Mastodon's database schema"},
		{"in the middle of the schema load", "create_table users"},
		{"after the schema, before the seeds", "create_table standin_migration_runs"},
		{"when creating the Owner", "creating the Owner account"},
		{"after the Owner is created, before its password is shown", "account alice created"},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			s := newStack(t)
			slow := []string{"STANDIN_SLOW=150ms", "STANDIN_AFTER_CREATE_DELAY=2s"}
			k := s.start(slow, "provision")
			if step.line != "" && !k.waitFor(step.line, 60*time.Second) {
				t.Fatalf("never reached %q", step.line)
			}
			k.kill()
			recordAfterKill := s.recordBytes()

			r := s.provision()
			if recordAfterKill != nil && string(recordAfterKill) != string(s.recordBytes()) {
				t.Error("the rerun replaced the instance record")
			}
			if got := s.markers(); !slices.Contains(got, "ready-"+mastodonVersion) || !slices.Contains(got, "seeded") {
				t.Errorf("markers after rerun: %v", got)
			}
			if n := s.count(`SELECT count(*) FROM users u JOIN user_roles r ON r.id = u.role_id WHERE r.name = 'Owner'`); n != 1 {
				t.Errorf("%d Owner accounts", n)
			}
			for _, role := range []string{"Moderator", "Admin", "Owner"} {
				if s.count(`SELECT count(*) FROM user_roles WHERE name = $1`, role) != 1 {
					t.Errorf("role %s missing or duplicated after the rerun", role)
				}
			}
			if strings.Contains(step.line, "account alice created") {
				if !strings.Contains(r.out, "mastokeeper admin reset-password alice") {
					t.Errorf("a lost first password must come with the way to get a new one:\n%s", r.out)
				}
			} else if !bannerPwd.MatchString(r.out) && !bannerPwd.MatchString(s.allLogs()) {
				t.Errorf("the Owner's password was never shown")
			}
			// A third run is a no-op.
			if r := s.provision(); !strings.Contains(r.out, "database schema is up to date") {
				t.Errorf("third run:\n%s", r.out)
			}
		})
	}
}

func TestChangedLocalDomainIsRefusedAndNothingChanges(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision()
	before := s.stateSnapshot()
	runs := s.count(`SELECT count(*) FROM standin_migration_runs`)

	r := s.keeper([]string{"LOCAL_DOMAIN=other.example.test", "MASTOKEEPER_MASTODON_VERSION=v4.7.1"}, "provision")
	if r.code != 3 {
		t.Fatalf("exit code %d, want 3 (refused):\n%s", r.code, r.out)
	}
	for _, want := range []string{"other.example.test", "provisioned as", "social.example.test", "Set LOCAL_DOMAIN back", "nothing was changed"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("the refusal does not say %s:\n%s", want, r.out)
		}
	}
	if !reflect.DeepEqual(before, s.stateSnapshot()) {
		t.Error("the refused run changed the keeper's volume")
	}
	if n := s.count(`SELECT count(*) FROM standin_migration_runs`); n != runs {
		t.Error("the refused run migrated")
	}
	// Web, sidekiq and streaming refuse too.
	l := s.keeper([]string{"LOCAL_DOMAIN=other.example.test", "STANDIN_REPORT=" + filepath.Join(s.base, "r.json")}, "config", "check")
	if l.code != 3 || !strings.Contains(l.out, "LOCAL_DOMAIN") {
		t.Errorf("config check: %d\n%s", l.code, l.out)
	}
}

func TestTwoKeepersAtOnceRunOneMigration(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	both := func(extra ...string) {
		var wg sync.WaitGroup
		outs := make([]result, 2)
		for i := range outs {
			wg.Add(1)
			go func() { defer wg.Done(); outs[i] = s.keeper(extra, "provision") }()
		}
		wg.Wait()
		for _, o := range outs {
			if o.code != 0 {
				t.Fatalf("a keeper failed (%d):\n%s", o.code, o.out)
			}
		}
	}
	t.Run("first boot", func(t *testing.T) {
		both("STANDIN_SLOW=100ms")
		if n := s.count(`SELECT count(*) FROM standin_migration_runs`); n != 1 {
			t.Errorf("%d schema runs, want 1", n)
		}
		if n := s.count(`SELECT count(*) FROM users`); n != 1 {
			t.Errorf("%d accounts created, want 1", n)
		}
	})
	t.Run("upgrade", func(t *testing.T) {
		both("MASTOKEEPER_MASTODON_VERSION=v4.7.1", "STANDIN_MIGRATE_DELAY=2s")
		if n := s.count(`SELECT count(*) FROM standin_migration_runs WHERE task = 'db:migrate' AND version = 'v4.7.1'`); n != 1 {
			t.Errorf("%d migration runs for v4.7.1, want exactly 1", n)
		}
		// Keepers sharing a state volume wait on the job lock; keepers that
		// share only the database, on its schema lock.
		if logs := s.allLogs(); !strings.Contains(logs, "waiting for the job that is running") && !strings.Contains(logs, "another keeper is provisioning or migrating this database; waiting") {
			t.Error("the second keeper did not say it waited")
		}
		if !slices.Contains(s.markers(), "ready-v4.7.1") {
			t.Errorf("markers %v", s.markers())
		}
	})
	t.Run("the stand-in fails concurrent migrations as Rails does", func(t *testing.T) {
		env := append(s.with("MASTOKEEPER_MASTODON_VERSION=v4.7.2", "STANDIN_MIGRATE_DELAY=2s"), mastodonEnv(s)...)
		var wg sync.WaitGroup
		outs := make([]string, 2)
		for i := range outs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(filepath.Join(standinDir, "rails"), "db:migrate")
				cmd.Env = env
				b, _ := cmd.CombinedOutput()
				outs[i] = string(b)
			}()
			time.Sleep(300 * time.Millisecond)
		}
		wg.Wait()
		if !strings.Contains(strings.Join(outs, ""), "ConcurrentMigrationError") {
			t.Errorf("no ConcurrentMigrationError:\n%s", strings.Join(outs, "\n"))
		}
	})
}

// mastodonEnv is what a Mastodon process gets, for running the stand-in
// directly.
func mastodonEnv(s *stack) []string {
	rec := s.record()
	env := []string{"LOCAL_DOMAIN=" + rec.LocalDomain, "DB_USER=mastodon", "DB_NAME=mastodon_production"}
	for k, v := range rec.Secrets {
		env = append(env, k+"="+v)
	}
	return env
}

const hostile = "it's \"quoted\" $HOME ${X} `id` \\back\\slash\nsecond line\ttab; rm -rf / # ünïcode"

func TestLaunchedProcessGetsEveryVariableIntactAndItsSignals(t *testing.T) {
	t.Parallel()
	s := newStack(t, "BALENA_SUPERVISOR_API_KEY=supervisor-key", "BALENA_API_KEY=device-key")
	report := filepath.Join(s.base, "web.json")
	extra := []string{
		"SMTP_PASSWORD=" + hostile, "SMTP_LOGIN=" + hostile + "=trailing=", "S3_ALIAS_HOST=files.example.test",
		"SINGLE_USER_MODE=true", "STANDIN_REPORT=" + report, "MAX_THREADS=7",
	}
	// Started before provisioning: it must wait for the keeper.
	web := s.start(extra, "launch", "mastodon", "--", "bundle", "exec", "puma", "-C", "config/puma.rb")
	time.Sleep(2 * time.Second)
	if _, err := os.Stat(report); err == nil {
		t.Fatal("web started before the database was ready")
	}
	s.provision()
	var rep struct {
		Argv []string `json:"argv"`
		Env  []string `json:"env"`
		Pid  int      `json:"pid"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(report); err == nil && json.Unmarshal(b, &rep) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("web never started after provisioning")
		}
		time.Sleep(100 * time.Millisecond)
	}
	env := map[string]string{}
	for _, kv := range rep.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	rec := s.record()
	want := map[string]string{
		"SMTP_PASSWORD": hostile, "SMTP_LOGIN": hostile + "=trailing=", "S3_ALIAS_HOST": "files.example.test",
		"SINGLE_USER_MODE": "true", "LOCAL_DOMAIN": "social.example.test", "DB_USER": "mastodon",
		"DB_NAME": "mastodon_production", "DB_PASS": rec.Secrets["DB_PASS"], "SECRET_KEY_BASE": rec.Secrets["SECRET_KEY_BASE"],
		"VAPID_PUBLIC_KEY": rec.Secrets["VAPID_PUBLIC_KEY"], "MAX_THREADS": "7",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s reached the process as %q, want %q", k, env[k], v)
		}
	}
	for _, k := range []string{"WEB_CONCURRENCY", "SIDEKIQ_CONCURRENCY", "DB_POOL"} {
		if env[k] == "" {
			t.Errorf("sizing variable %s not set", k)
		}
	}
	for _, k := range []string{"POSTGRES_PASSWORD", "BALENA_SUPERVISOR_API_KEY", "BALENA_API_KEY"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s reached a Mastodon process, which has no use for it", k)
		}
	}
	if !slices.Equal(rep.Argv, []string{"bundle", "exec", "puma", "-C", "config/puma.rb"}) {
		t.Errorf("argv %q", rep.Argv)
	}
	s.assertNoSecretInAnyCmdline()

	// The launcher replaced itself with the process: a signal to the
	// service reaches Mastodon directly.
	if rep.Pid != web.cmd.Process.Pid {
		t.Errorf("the process runs as pid %d, not as the launched service (%d)", rep.Pid, web.cmd.Process.Pid)
	}
	web.cmd.Process.Signal(syscall.SIGTERM)
	if code := web.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	b, _ := os.ReadFile(report)
	if !strings.Contains(string(b), `"signal":"terminated"`) {
		t.Errorf("the process did not receive SIGTERM: %s", b)
	}
}

func TestProvidedSecretsAreAdoptedThenGuarded(t *testing.T) {
	t.Parallel()
	gen := exec.Command(keeperBin, "secrets", "generate")
	out, err := gen.Output()
	if err != nil {
		t.Fatal(err)
	}
	provided := map[string]string{}
	var env []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		if k == "SECRET_KEY_BASE" || strings.HasPrefix(k, "ACTIVE_RECORD") || strings.HasPrefix(k, "VAPID") {
			provided[k] = v
			env = append(env, l)
		}
	}
	s := newStack(t, env...)
	s.provision()
	rec := s.record()
	for k, v := range provided {
		if rec.Secrets[k] != v {
			t.Errorf("%s was not adopted", k)
		}
	}
	slices.Sort(rec.Adopted)
	if len(rec.Adopted) != len(provided) {
		t.Errorf("adopted %v", rec.Adopted)
	}
	r := s.keeper([]string{"SECRET_KEY_BASE=" + strings.Repeat("ab", 64)}, "provision")
	if r.code != 3 || !strings.Contains(r.out, "SECRET_KEY_BASE is set and differs") {
		t.Errorf("a changed SECRET_KEY_BASE was not refused (%d):\n%s", r.code, r.out)
	}
	if strings.Contains(r.out, strings.Repeat("ab", 64)) {
		t.Error("the refusal printed the secret's value")
	}
}

func TestDomainFromPublicURLWarnsItCanNeverMove(t *testing.T) {
	t.Parallel()
	s := newStack(t, unset("LOCAL_DOMAIN"), "BALENA_DEVICE_UUID=0123456789abcdef0123456789abcdef")
	r := s.provision()
	if got := s.record().LocalDomain; got != "0123456789abcdef0123456789abcdef.balena-devices.com" {
		t.Errorf("domain %q", got)
	}
	if !strings.Contains(r.out, "can never move to other hardware") || !strings.Contains(r.out, "level=WARN") {
		t.Errorf("no loud warning:\n%s", r.out)
	}
}

func TestNoDomainAnywhereIsAClearError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(keeperBin, "provision")
	cmd.Env = []string{"MASTOKEEPER_STATE_DIR=" + dir, "MASTOKEEPER_MASTODON_VERSION=v4.7.0", "DB_HOST=127.0.0.1", "DB_PORT=1"}
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 3 || !strings.Contains(string(out), "LOCAL_DOMAIN is not set") || !strings.Contains(string(out), "example: LOCAL_DOMAIN=social.example.org") {
		t.Errorf("exit %d:\n%s", cmd.ProcessState.ExitCode(), out)
	}
	// Only lock files: the state directory's and the job lock.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != ".lock" {
			t.Errorf("a refused first boot wrote %s", p)
		}
		return nil
	})
}

func TestAdminResetPassword(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision()
	r := s.keeper(nil, "admin", "reset-password", "alice")
	m := bannerPwd.FindStringSubmatch(r.out)
	if r.code != 0 || m == nil {
		t.Fatalf("exit %d:\n%s", r.code, r.out)
	}
	if n := s.count(`SELECT count(*) FROM users WHERE encrypted_password = $1`, m[1]); n != 1 {
		t.Error("the printed password is not the account's new one")
	}
	for _, bad := range []string{"nobody", "--email"} {
		if r := s.keeper(nil, "admin", "reset-password", bad); r.code == 0 {
			t.Errorf("reset-password %s succeeded:\n%s", bad, r.out)
		}
	}
}

func TestStatusRedactsSecrets(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision()
	r := s.keeper(nil, "status")
	for _, want := range []string{"social.example.test", "Schema ready for:", mastodonVersion, "SECRET_KEY_BASE:", "[redacted]"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("status lacks %q:\n%s", want, r.out)
		}
	}
	// the secret scan at cleanup covers the values
}

// The keeper service provisions, then runs its schedule; a bad schedule
// names its variable and disables only its own job.
func TestKeeperServiceRunsTheScheduleAndABadOneDisablesOnlyItsJob(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	k := s.start([]string{"BACKUP_SCHEDULE=every night", "BACKUP_PASSPHRASE=" + passphrase, "MEDIA_DIR=" + t.TempDir()}, "run")
	if !k.waitFor("BACKUP_SCHEDULE", 90*time.Second) {
		t.Fatal("the bad BACKUP_SCHEDULE was never reported")
	}
	if !k.waitFor("next media cleanup at", 30*time.Second) {
		t.Fatal("media cleanup was not scheduled")
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	if code := k.wait(t, 60*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	if !strings.Contains(s.allLogs(), "example: BACKUP_SCHEDULE=") && !strings.Contains(s.allLogs(), "example BACKUP_SCHEDULE=") {
		t.Errorf("the report has no example of a good schedule")
	}
}

// Mastodon refuses an Owner address whose domain does not resolve (no
// network yet at a first boot): the keeper says so and keeps trying,
// never a silent or stuck first boot.
func TestAnOwnerAddressThatDoesNotResolveIsSaidAndRetried(t *testing.T) {
	t.Parallel()
	s := newStack(t, "ADMIN_EMAIL=alice@nowhere.example", "STANDIN_UNRESOLVABLE=nowhere.example")
	k := s.start(nil, "run")
	if !k.waitFor("the Owner account cannot be created yet", 60*time.Second) || !k.waitFor("waiting for the Owner's e-mail domain to resolve", 10*time.Second) {
		t.Fatalf("the keeper did not say why it cannot create the Owner:\n%s", s.allLogs())
	}
	if !k.waitFor("attempt=2", 10*time.Second) {
		t.Fatalf("the keeper did not try again:\n%s", s.allLogs())
	}
	k.kill()
	p := s.provision("STANDIN_UNRESOLVABLE=")
	if !bannerPwd.MatchString(p.out) {
		t.Errorf("once the domain resolves, the Owner is created:\n%s", p.out)
	}
}

// A trial on one's own computer (LOCAL_DOMAIN=mastodon.localhost) gets an
// Owner at once: its default address is on a domain that resolves.
func TestALocalhostTrialGetsAnOwnerWithoutAnyAddress(t *testing.T) {
	t.Parallel()
	s := newStack(t, "LOCAL_DOMAIN=mastodon.localhost", "ADMIN_EMAIL=")
	p := s.provision()
	if !bannerPwd.MatchString(p.out) || !strings.Contains(p.out, "Log in as: alice@example.com") || !strings.Contains(p.out, "Open:      https://mastodon.localhost") {
		t.Errorf("no Owner for the trial:\n%s", p.out)
	}
}

// ADMIN_USERNAME and ADMIN_EMAIL matter only when the instance is created:
// changed afterwards to a bad value, they are a warning, and the instance
// and its services go on.
func TestFirstBootOnlyVariablesNeverStopAProvisionedInstance(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	s.provision()
	p := s.provision("ADMIN_USERNAME=admin", "ADMIN_EMAIL=not-an-address")
	if !strings.Contains(p.out, "level=WARN") || !strings.Contains(p.out, "only matters when an instance is created") {
		t.Errorf("no warning:\n%s", p.out)
	}
	if b := s.provision("BACKUP_PASSPHRASE=" + passphrase); !strings.Contains(b.out, "backups go to this device's own disk") {
		t.Errorf("backups to the device itself are not warned of at start:\n%s", b.out)
	}
	l := s.keeper([]string{"ADMIN_USERNAME=admin"}, "launch", "mastodon", "--", "true")
	if l.code != 0 {
		t.Errorf("a web process with a changed ADMIN_USERNAME did not start (%d):\n%s", l.code, l.out)
	}
}
