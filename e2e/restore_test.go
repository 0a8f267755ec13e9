package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fingerprint is what must survive a move to new hardware: a checksum of
// every table's rows and every sequence's position.
func (s *stack) fingerprint(t *testing.T) map[string]string {
	t.Helper()
	c := s.db("mastodon_production")
	ctx := context.Background()
	rows, err := c.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		tables = append(tables, n)
	}
	fp := map[string]string{}
	for _, tb := range tables {
		var sum string
		var n int
		c.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') FROM %q t`, tb)).Scan(&n, &sum)
		fp["table "+tb] = fmt.Sprintf("%d rows %s", n, sum)
	}
	seqs, _ := c.Query(ctx, `SELECT sequencename, coalesce(last_value, 0) FROM pg_sequences WHERE schemaname = 'public'`)
	for seqs.Next() {
		var n string
		var v int64
		seqs.Scan(&n, &v)
		fp["sequence "+n] = fmt.Sprint(v)
	}
	return fp
}

// backedUpWith is an old device on a file target with the rows insert
// adds, backed up, and the fingerprint a new device must match.
func backedUpWith(t *testing.T, insert string) (*backupDevice, map[string]string) {
	t.Helper()
	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	if _, err := old.db("mastodon_production").Exec(context.Background(), insert); err != nil {
		t.Fatal(err)
	}
	want := old.fingerprint(t)
	old.backup(t)
	return old, want
}

// target is the device's BACKUP_TARGET.
func (d *backupDevice) target() string {
	for _, kv := range d.env {
		if v, ok := strings.CutPrefix(kv, "BACKUP_TARGET="); ok {
			return v
		}
	}
	return ""
}

// assertSameData compares two fingerprints, leaving out the table in which
// the stand-in records each migration run (a new device migrates again).
func assertSameData(t *testing.T, old, nu map[string]string) {
	t.Helper()
	for _, k := range []string{"table standin_migration_runs", "sequence standin_migration_runs_id_seq"} {
		delete(old, k)
		delete(nu, k)
	}
	if !reflect.DeepEqual(old, nu) {
		t.Errorf("the data differs:\nold %v\nnew %v", old, nu)
	}
}

// newDevice is fresh hardware: nothing provisioned, pointed at the old
// device's backup target.
func newDevice(t *testing.T, old *backupDevice, stackEnv ...string) *backupDevice {
	s := newStack(t, stackEnv...)
	media := filepath.Join(s.base, "system")
	env := []string{}
	for _, kv := range old.env {
		if !strings.HasPrefix(kv, "MEDIA_DIR=") {
			env = append(env, kv)
		}
	}
	return &backupDevice{stack: s, media: media, env: append(env, "MEDIA_DIR="+media)}
}

func TestRestoreOntoNewHardwareKeepsEverything(t *testing.T) {
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		old := newBackupDevice(t, target)
		ctx := context.Background()
		c := old.db("mastodon_production")
		if _, err := c.Exec(ctx, `INSERT INTO statuses (account_id, text) SELECT 1, 'toot ' || g || ' ''quoted'' ünïcode' FROM generate_series(1, 5000) g`); err != nil {
			t.Fatal(err)
		}
		c.Exec(ctx, `DELETE FROM statuses WHERE id % 7 = 0`) // holes, and a sequence ahead of max(id)
		want := old.fingerprint(t)
		oldRecord := old.record()
		id := old.backup(t)

		nu := newDevice(t, old)
		r := nu.keeper(nu.env, "restore")
		if r.code != 0 || !strings.Contains(r.out, "restored backup "+id) {
			t.Fatalf("restore exited %d:\n%s", r.code, r.out)
		}
		if !strings.Contains(r.out, "rails db:migrate") || strings.Contains(r.out, "taking a backup before migrating") {
			t.Errorf("the restore did not migrate the restored schema for this release (without a backup of what it just restored):\n%s", r.out)
		}
		p := nu.provision(nu.env...)
		if !strings.Contains(p.out, "database schema is up to date") {
			t.Errorf("the keeper's next start found work left:\n%s", p.out)
		}
		if bannerPwd.MatchString(p.out) {
			t.Error("the keeper created a new Owner on a restored instance")
		}
		assertSameData(t, want, nu.fingerprint(t))
		if !reflect.DeepEqual(oldRecord, nu.record()) {
			t.Error("the secrets or the domain differ after the move")
		}
		for _, rel := range []string{"media_attachments/files/109/000/001/original/a.png", "accounts/avatars/000/000/001/original/me.jpg"} {
			a, _ := os.ReadFile(filepath.Join(old.media, rel))
			b, _ := os.ReadFile(filepath.Join(nu.media, rel))
			if len(a) == 0 || string(a) != string(b) {
				t.Errorf("%s was not restored byte for byte", rel)
			}
		}
		if _, err := os.Stat(filepath.Join(nu.media, "cache")); err == nil {
			t.Error("the remote media cache was restored")
		}
		// The new device backs up to the same target; the old one stops.
		nu.backup(t)
		o := old.keeper(old.env, "backup")
		if o.code != 3 || !strings.Contains(o.out, "another device owns this backup target") {
			t.Errorf("the old device still writes to the target (%d):\n%s", o.code, o.out)
		}
	})
}

func TestRestoreRefusesBeforeTouchingAnything(t *testing.T) {
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		old := newBackupDevice(t, target)
		id := old.backup(t)

		t.Run("wrong passphrase", func(t *testing.T) {
			nu := newDevice(t, old)
			r := nu.keeper(append(nu.env, "BACKUP_PASSPHRASE=not the passphrase"), "restore")
			if r.code != 3 || !strings.Contains(r.out, "BACKUP_PASSPHRASE does not open") {
				t.Errorf("exit %d:\n%s", r.code, r.out)
			}
			if len(nu.stateSnapshot()) > 1 { // device-id only
				t.Errorf("a refused restore left %v", nu.stateSnapshot())
			}
		})
		t.Run("a changed byte", func(t *testing.T) {
			defer old.flip(t, "snapshots/"+id+"/db.dump.zst.age", func(n int) int { return n - 100 })()
			nu := newDevice(t, old)
			r := nu.keeper(nu.env, "restore")
			if r.code == 0 || !strings.Contains(r.out, "damaged") {
				t.Errorf("exit %d:\n%s", r.code, r.out)
			}
			if _, err := os.Stat(filepath.Join(nu.stateDir, "instance.json")); err == nil {
				t.Error("a refused restore wrote the instance record")
			}
		})
		t.Run("a different LOCAL_DOMAIN", func(t *testing.T) {
			nu := newDevice(t, old)
			r := nu.keeper(append(nu.env, "LOCAL_DOMAIN=elsewhere.example.test"), "restore")
			if r.code != 3 || !strings.Contains(r.out, "an instance keeps its domain") {
				t.Errorf("exit %d:\n%s", r.code, r.out)
			}
		})
		t.Run("a database with data needs --force", func(t *testing.T) {
			before := old.fingerprint(t)
			r := old.keeper(old.env, "restore")
			if r.code != 3 || !strings.Contains(r.out, "--force") {
				t.Errorf("exit %d:\n%s", r.code, r.out)
			}
			if !reflect.DeepEqual(before, old.fingerprint(t)) {
				t.Error("the refused restore changed the database")
			}
		})
	})
}

func TestAnUpgradeTakesABackupBeforeMigrating(t *testing.T) {
	t.Parallel()
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	r := d.provision(append(d.env, "MASTOKEEPER_MASTODON_VERSION=v4.7.1")...)
	backupAt := strings.Index(r.out, "taking a backup before migrating")
	migrateAt := strings.Index(r.out, "migrated to v4.7.1")
	doneAt := strings.Index(r.out, "backup complete")
	if backupAt < 0 || doneAt < 0 || migrateAt < doneAt {
		t.Errorf("no backup completed before the migration:\n%s", r.out)
	}
	if got := d.list(t); len(got) != 1 {
		t.Errorf("backups after the upgrade: %q", got)
	}
	// A backup that fails stops the migration: web keeps waiting.
	bad := append(d.env, "MASTOKEEPER_MASTODON_VERSION=v4.7.2", "BACKUP_TARGET=s3://no-such-bucket/x", "BACKUP_S3_ENDPOINT=http://127.0.0.1:1",
		"BACKUP_S3_ACCESS_KEY_ID=k", "BACKUP_S3_SECRET_ACCESS_KEY=s")
	f := d.keeper(bad, "provision")
	if f.code == 0 || !strings.Contains(f.out, "was not migrated") {
		t.Errorf("a failed backup did not stop the migration (exit %d):\n%s", f.code, f.out)
	}
	if slices.Contains(d.markers(), "ready-v4.7.2") {
		t.Error("v4.7.2 was marked ready without its backup")
	}
}

// A fresh device with RESTORE_FROM set takes the instance over by itself at
// its first start.
func TestAFreshDeviceWithRestoreFromTakesTheInstanceOver(t *testing.T) {
	t.Parallel()
	old, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) VALUES (1, 'before the move')`)

	nu := newDevice(t, old)
	target := nu.target()
	r := nu.provision(append(nu.env, "RESTORE_FROM="+target, unset("LOCAL_DOMAIN"))...)
	for _, line := range []string{"fresh device with RESTORE_FROM set", "backup downloaded and verified", "database ready"} {
		if !strings.Contains(r.out, line) {
			t.Errorf("the first start does not say %q:\n%s", line, r.out)
		}
	}
	got := nu.fingerprint(t)
	assertSameData(t, want, got)
	if nu.record().LocalDomain != "social.example.test" {
		t.Errorf("domain %q", nu.record().LocalDomain)
	}
	// Its second start provisions as usual: RESTORE_FROM acts on a fresh device only.
	again := nu.provision(append(nu.env, "RESTORE_FROM="+target)...)
	if strings.Contains(again.out, "restoring") {
		t.Errorf("a provisioned device restored again:\n%s", again.out)
	}
}

// A new passphrase re-seals the backup key (which every backup shares):
// from then on it, and only it, opens the target.
func TestANewPassphraseReplacesTheOldOne(t *testing.T) {
	t.Parallel()
	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	old.backup(t)
	again := old.keeper(old.env, "backup")
	if strings.Contains(again.out, "scrypt") || again.code != 0 {
		t.Fatalf("second backup (%d):\n%s", again.code, again.out)
	}
	time.Sleep(1100 * time.Millisecond)
	newPass := "BACKUP_PASSPHRASE=a new passphrase entirely"
	if r := old.keeper(append(old.env, newPass), "backup"); r.code != 0 {
		t.Fatalf("backup with the new passphrase:\n%s", r.out)
	}
	nu := newDevice(t, old)
	if r := nu.keeper(nu.env, "restore"); r.code != 3 || !strings.Contains(r.out, "BACKUP_PASSPHRASE does not open") {
		t.Errorf("the old passphrase still opens the target (%d):\n%s", r.code, r.out)
	}
	if r := nu.keeper(append(nu.env, newPass), "restore"); r.code != 0 {
		t.Errorf("the new passphrase does not open the target:\n%s", r.out)
	}
}

// holdPgRestore returns a PATH on which pg_restore lists archives as usual
// but, asked to restore one, says so in the file it returns and then hangs:
// the moment a restore has dropped the old database and is writing the new.
func holdPgRestore(t *testing.T) (path, held string) {
	t.Helper()
	real, err := exec.LookPath("pg_restore")
	if err != nil {
		stackMissing(t, "pg_restore on PATH")
	}
	dir := t.TempDir()
	held = filepath.Join(dir, "held")
	script := "#!/bin/sh\ncase \" $* \" in *\" --list \"*) exec " + real + " \"$@\" ;; esac\n: >" + held + "\nexec sleep 600\n"
	if err := os.WriteFile(filepath.Join(dir, "pg_restore"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir + ":" + standinDir + ":" + os.Getenv("PATH"), held
}

// killWhenHeld starts mastokeeper ARGS and kills it (-9, with its children)
// once pg_restore is held.
func (d *backupDevice) killWhenHeld(t *testing.T, path, held string, args ...string) {
	t.Helper()
	os.Remove(held)
	k := d.start(append(d.env, "PATH="+path), args...)
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(held); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mastokeeper %s never reached pg_restore:\n%s", strings.Join(args, " "), d.allLogs())
		}
	}
	k.kill()
}

// A restore killed midway leaves a device that serves nothing and says
// so, until a restore finishes: the next one resumes without --force,
// and RESTORE_FROM finishes it at the keeper's next start.
func TestARestoreKilledMidwayIsFinishedByTheNext(t *testing.T) {
	t.Parallel()
	old, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) VALUES (1, 'before the move')`)
	nu := newDevice(t, old)
	path, held := holdPgRestore(t)

	nu.killWhenHeld(t, path, held, "restore")
	if m := nu.markers(); !slices.Contains(m, "restore-incomplete") || slices.ContainsFunc(m, func(s string) bool { return strings.HasPrefix(s, "ready-") }) {
		t.Errorf("markers after a killed restore: %v; want restore-incomplete and no ready-*", m)
	}
	p := nu.keeper(nu.env, "provision")
	if p.code != 3 || !strings.Contains(p.out, "did not finish") || !strings.Contains(p.out, "mastokeeper restore") {
		t.Errorf("the keeper provisioned a half-restored device (exit %d):\n%s", p.code, p.out)
	}
	before := nu.list(t)
	if b := nu.keeper(nu.env, "backup"); b.code != 3 || !strings.Contains(b.out, "half-restored") {
		t.Errorf("a backup of the half-restored database was attempted (exit %d):\n%s", b.code, b.out)
	}
	if after := nu.list(t); !slices.Equal(before, after) {
		t.Errorf("backups before %q, after %q: the refused backup stored one", before, after)
	}
	// Without --force: the restore resumes (and is killed again).
	nu.killWhenHeld(t, path, held, "restore")

	// The keeper service, refused meanwhile, restarts once a restore has
	// finished (here the start of another keeper with RESTORE_FROM).
	k := nu.start(nu.env, "run")
	if !k.waitFor("did not finish", 60*time.Second) {
		t.Fatal("the keeper service did not refuse the half-restored device")
	}
	r := nu.provision(append(nu.env, "RESTORE_FROM="+nu.target())...)
	if !strings.Contains(r.out, "did not finish last time") || !strings.Contains(r.out, "database ready") {
		t.Errorf("the keeper's start did not finish the restore:\n%s", r.out)
	}
	assertSameData(t, want, nu.fingerprint(t))
	if slices.Contains(nu.markers(), "restore-incomplete") {
		t.Error("restore-incomplete is still marked after the restore finished")
	}
	if code := k.wait(t, 30*time.Second); code == 0 || !strings.Contains(nu.allLogs(), "a restore onto this device finished") {
		t.Errorf("the refused keeper service did not restart after the restore (exit %d)", code)
	}
}

// pg17Path is a PATH with PostgreSQL 17 - the images' major - first: its
// server and its client tools (pg_dump, pg_restore), as in the images.
func pg17Path(t *testing.T) string {
	t.Helper()
	server := filepath.Join(stackCacheDir(t), "pg17", "package", "native", "bin")
	client := filepath.Join(stackCacheDir(t), "pg17client", "bin")
	for _, p := range []string{filepath.Join(server, "postgres"), filepath.Join(client, "pg_restore")} {
		if _, err := os.Stat(p); err != nil {
			stackMissing(t, "PostgreSQL 17's %s (scripts/install-test-deps installs it)", p)
		}
	}
	return "PATH=" + server + ":" + client + ":" + standinDir + ":" + os.Getenv("PATH")
}

func serverMajor(t *testing.T, d *backupDevice) int {
	t.Helper()
	var version int
	d.db("mastodon_production").QueryRow(context.Background(), "SELECT current_setting('server_version_num')::int").Scan(&version)
	return version / 10000
}

// The keeper's images move to new PostgreSQL majors; a logical dump
// crosses them. This machine's PostgreSQL 15 backs up, a 17 server with
// 17's pg_restore (the images' major) takes the restore, with one job.
func TestRestoreOntoANewerPostgreSQLMajor(t *testing.T) {
	t.Parallel()
	pg17 := pg17Path(t)
	old, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) SELECT 1, 'toot ' || g FROM generate_series(1, 2000) g`)

	// One job: the dump streams compressed into pg_restore, as on a
	// device short of disk.
	nu := newDevice(t, old, pg17)
	r := nu.keeper(append(nu.env, "RESTORE_JOBS=1"), "restore")
	if r.code != 0 || !strings.Contains(r.out, "jobs=1") {
		t.Fatalf("restore onto PostgreSQL 17 with one job exited %d:\n%s", r.code, r.out)
	}
	// (Without the backup before migrating: this machine's pg_dump 15
	// cannot dump a 17 server; the keeper's image carries pg_dump 17.)
	nu.provision(append(nu.env, unset("BACKUP_PASSPHRASE"))...)
	if v := serverMajor(t, nu); v != 17 {
		t.Fatalf("the new device runs PostgreSQL %d, want 17", v)
	}
	got := nu.fingerprint(t)
	assertSameData(t, want, got)
}

// On the images' PostgreSQL 17, server and tools, a backup - pg_dump's own
// zstd archive - restores with one pg_restore job per core, each seeking
// to its table in the staged archive, and with one under RESTORE_JOBS=1;
// the data is the same.
func TestARestoreWithSeveralJobsOnPostgreSQL17(t *testing.T) {
	t.Parallel()
	if runtime.NumCPU() < 2 {
		t.Fatalf("this test needs 2 cores to see several pg_restore jobs; this machine has %d", runtime.NumCPU())
	}
	pg17 := pg17Path(t)
	old := newBackupDevice(t, backupTarget{"file", fileTarget}, pg17)
	if v := serverMajor(t, old); v != 17 {
		t.Fatalf("the old device runs PostgreSQL %d, want 17", v)
	}
	ctx := context.Background()
	c := old.db("mastodon_production")
	for _, q := range []string{
		`INSERT INTO statuses (account_id, text) SELECT 1, 'toot ' || g || repeat(' ünïcode', g % 40) FROM generate_series(1, 30000) g`,
		`CREATE INDEX index_statuses_text ON statuses (text)`,
		`CREATE TABLE standin_extra (id bigint PRIMARY KEY, note text)`,
		`INSERT INTO standin_extra SELECT g, md5(g::text) FROM generate_series(1, 20000) g`,
		`DELETE FROM statuses WHERE id % 11 = 0`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	want := old.fingerprint(t)
	id := old.backup(t)
	if m := old.manifest(t, id); !strings.HasPrefix(fmt.Sprint(m["postgres_version"]), "17") || m["dump_bytes"] == nil || m["dump_layout"] != "archive" {
		t.Errorf("the manifest says PostgreSQL %v, dump bytes %v, dump layout %v", m["postgres_version"], m["dump_bytes"], m["dump_layout"])
	}

	// The default, one job per core; and RESTORE_JOBS=1, which reads the
	// same staged archive with one.
	for _, jobs := range []int{min(runtime.NumCPU(), 8), 1} {
		nu := newDevice(t, old, pg17)
		env := nu.env
		if jobs == 1 {
			env = append(env, "RESTORE_JOBS=1")
		}
		r := nu.keeper(env, "restore")
		if r.code != 0 {
			t.Fatalf("restore exited %d:\n%s", r.code, r.out)
		}
		if !strings.Contains(r.out, fmt.Sprintf("jobs=%d", jobs)) {
			t.Errorf("pg_restore did not run with jobs=%d:\n%s", jobs, r.out)
		}
		nu.provision(append(nu.env, unset("BACKUP_PASSPHRASE"))...)
		assertSameData(t, want, nu.fingerprint(t))
		var indexes int
		nu.db("mastodon_production").QueryRow(ctx, "SELECT count(*) FROM pg_indexes WHERE indexname = 'index_statuses_text'").Scan(&indexes)
		if indexes != 1 {
			t.Errorf("jobs=%d: the index built by a parallel job is missing", jobs)
		}
	}
}

// A dump from a newer major may use what an older server lacks: the
// restore refuses before it drops anything.
func TestRestoreRefusesABackupFromANewerMajor(t *testing.T) {
	t.Parallel()
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	id := d.backup(t)
	// As a genuine backup from PostgreSQL 99 would say: authenticated.
	m := d.manifest(t, id)
	m["postgres_version"] = "99.1"
	d.putManifest(t, id, m, true)
	before := d.fingerprint(t)
	r := d.keeper(d.env, "restore", "--force")
	if r.code != 3 || !strings.Contains(r.out, "PostgreSQL 99.1") || !strings.Contains(r.out, "not touched") {
		t.Errorf("exit %d:\n%s", r.code, r.out)
	}
	if !reflect.DeepEqual(before, d.fingerprint(t)) {
		t.Error("the refused restore changed the database")
	}
	if slices.Contains(d.markers(), "restore-incomplete") {
		t.Error("a refused restore marked the device as half-restored")
	}
	d.provision(d.env...)
}

// supervisorStandIn is a STAND-IN for the balena supervisor's API, as
// ../shared/reference/balena.md describes it: POST
// /v2/applications/:appId/restart-service with {"serviceName": NAME},
// authorised by the API key (?apikey= or "Bearer KEY", as the supervisor's
// src/device-api/middleware/auth.ts reads it). It records the services it was asked to
// restart.
type supervisorStandIn struct {
	mu       sync.Mutex
	restarts []string
}

func startSupervisorStandIn(t *testing.T, appID, key string) (*supervisorStandIn, string) {
	sv := &supervisorStandIn{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+key && r.URL.Query().Get("apikey") != key {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		var body struct {
			ServiceName string `json:"serviceName"`
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v2/applications/"+appID+"/restart-service" || json.NewDecoder(r.Body).Decode(&body) != nil || body.ServiceName == "" {
			http.Error(w, "Not Found", http.StatusNotFound)
			return
		}
		sv.mu.Lock()
		sv.restarts = append(sv.restarts, body.ServiceName)
		sv.mu.Unlock()
		w.Write([]byte("OK"))
	}))
	t.Cleanup(srv.Close)
	return sv, srv.URL
}

// A restore in a terminal on a running device leaves it running the
// restored instance: migrated, web, sidekiq and streaming restarted through
// the supervisor, and the keeper service restarting by itself.
func TestARestoreOnARunningDeviceRestartsItsServices(t *testing.T) {
	t.Parallel()
	old, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) VALUES (1, 'from the other device')`)

	// This device runs an instance of its own, under the same name.
	nu := newDevice(t, old)
	nu.provision(nu.env...)
	const appID, apiKey = "1234567", "supervisorApiKeyNotForLogs0123"
	sv, addr := startSupervisorStandIn(t, appID, apiKey)
	balena := []string{"BALENA_SUPERVISOR_ADDRESS=" + addr, "BALENA_SUPERVISOR_API_KEY=" + apiKey, "BALENA_APP_ID=" + appID}
	k := nu.start(append(nu.env, balena...), "run")
	if !k.waitFor("the keeper now runs the scheduled jobs", 60*time.Second) {
		t.Fatal("the keeper service did not start")
	}

	r := nu.keeper(append(nu.env, balena...), "restore", "--force")
	if r.code != 0 {
		t.Fatalf("restore exited %d:\n%s", r.code, r.out)
	}
	if !slices.Contains(nu.markers(), "ready-"+mastodonVersion) {
		t.Errorf("after the restore the schema is not ready for this release: markers %v", nu.markers())
	}
	sv.mu.Lock()
	got := slices.Clone(sv.restarts)
	sv.mu.Unlock()
	if !reflect.DeepEqual(got, []string{"web", "sidekiq", "streaming"}) {
		t.Errorf("the supervisor was asked to restart %v; want web, sidekiq, streaming", got)
	}
	if code := k.wait(t, 30*time.Second); code == 0 {
		t.Error("the keeper service kept running with the replaced instance record")
	}
	if !strings.Contains(nu.allLogs(), "the instance record changed") {
		t.Error("the keeper did not say why it restarts")
	}
	fp := nu.fingerprint(t)
	assertSameData(t, want, fp)
	if strings.Contains(nu.allLogs(), apiKey) {
		t.Error("the supervisor API key appears in the output")
	}

	// Without a supervisor (docker compose) it says what to run.
	r = nu.keeper(nu.env, "restore", "--force")
	if r.code != 0 || !strings.Contains(r.out, "docker compose restart web sidekiq streaming") {
		t.Errorf("restore without a supervisor (%d):\n%s", r.code, r.out)
	}
}

// A Pi's keeper is an arm64 build, a NUC's amd64: a backup made by one
// restores with the other. The other architecture's build runs here under
// qemu's user-mode emulation (its pg_dump child runs natively).
func TestABackupFromTheOtherArchitectureRestores(t *testing.T) {
	t.Parallel()
	other, qemuName, machine := "arm64", "qemu-aarch64-static", elf.EM_AARCH64
	if runtime.GOARCH == "arm64" {
		other, qemuName, machine = "amd64", "qemu-x86_64-static", elf.EM_X86_64
	}
	qemu, err := exec.LookPath(qemuName)
	if err != nil {
		stackMissing(t, "%s (Debian's qemu-user-static) to run the %s build", qemuName, other)
	}
	bin := filepath.Join(t.TempDir(), "mastokeeper-"+other)
	build := exec.Command("go", "build", "-o", bin, "../cmd/mastokeeper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+other)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build for %s: %v\n%s", other, err, out)
	}
	if f, err := elf.Open(bin); err != nil || f.Machine != machine {
		t.Fatalf("%s is not a %s binary (%v)", bin, other, err)
	}

	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	old.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'from the Pi ' || g FROM generate_series(1, 500) g`)
	want := old.fingerprint(t)
	backup := exec.Command(qemu, bin, "backup")
	backup.Env = old.with(old.env...)
	var out strings.Builder
	backup.Stdout, backup.Stderr = &out, &out
	if err := backup.Run(); err != nil || !strings.Contains(out.String(), "backup complete") {
		t.Fatalf("the %s keeper's backup: %v\n%s", other, err, out.String())
	}
	old.logWriter(other + " backup").Write([]byte(out.String()))

	nu := newDevice(t, old)
	if r := nu.keeper(nu.env, "restore"); r.code != 0 {
		t.Fatalf("the %s keeper's restore of the %s backup exited %d:\n%s", runtime.GOARCH, other, r.code, r.out)
	}
	assertSameData(t, want, nu.fingerprint(t))
	if !reflect.DeepEqual(old.record(), nu.record()) {
		t.Error("the secrets or the domain differ after the move across architectures")
	}
	a, _ := os.ReadFile(filepath.Join(old.media, "media_attachments/files/109/000/002/original/b.mp4"))
	b, _ := os.ReadFile(filepath.Join(nu.media, "media_attachments/files/109/000/002/original/b.mp4"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Error("an upload was not restored byte for byte")
	}
}
