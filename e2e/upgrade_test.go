package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// lastFormat1Release is the last commit whose keeper wrote format 1
// (unauthenticated) backups.
const lastFormat1Release = "e1b0c2a"

// buildRelease builds the keeper of an earlier commit of this repository.
func buildRelease(t *testing.T, rev string) string {
	t.Helper()
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", stackRepoRoot(t), rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("the keeper of %s needs this repository's history (a full clone): %v\n%s", rev, err, out)
	}
	bin := filepath.Join(t.TempDir(), "mastokeeper-"+rev)
	build := exec.Command("go", "build", "-o", bin, "./cmd/mastokeeper")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the keeper of %s: %v\n%s", rev, err, out)
	}
	return bin
}

// runWith runs another build of the keeper with the device's environment.
func (d *backupDevice) runWith(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = d.with(d.env...)
	out, err := cmd.CombinedOutput()
	d.logWriter("old " + strings.Join(args, " ")).Write(out)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{string(out), code}
}

// A device that ran the last format 1 release upgrades: its old backups
// stay listed (as unauthenticated) and restorable with --trust-old-format,
// never by default; its first new backup claims the target as its own (the
// old backups decrypt with its key), and a new device restores the new
// format by default. A purged device with the same domain and device ID
// claims nothing.
func TestBackupsOfTheLastFormat1ReleaseStayRestorable(t *testing.T) {
	t.Parallel()
	oldBin := buildRelease(t, lastFormat1Release)
	s := newStack(t, "BALENA_DEVICE_UUID=0123456789abcdef0123456789abcdef")
	d := &backupDevice{stack: s, media: filepath.Join(s.base, "system")}
	d.env = append(fileTarget(t), "MEDIA_DIR="+d.media, "BACKUP_PASSPHRASE="+passphrase)
	writeRandom(t, filepath.Join(d.media, "media_attachments/files/109/000/001/original/a.png"), 100_000)
	if r := d.runWith(t, oldBin, "provision"); r.code != 0 {
		t.Fatalf("the old keeper's provisioning exited %d:\n%s", r.code, r.out)
	}
	if _, err := d.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'format 1 ' || g FROM generate_series(1, 200) g`); err != nil {
		t.Fatal(err)
	}
	atOld := d.fingerprint(t)
	r := d.runWith(t, oldBin, "backup")
	m := regexp.MustCompile(`backup (\d{8}T\d{6}Z) complete`).FindStringSubmatch(r.out)
	if r.code != 0 || m == nil {
		t.Fatalf("the old keeper's backup exited %d:\n%s", r.code, r.out)
	}
	oldID := m[1]

	// The upgrade: the new keeper starts, and takes its first backup.
	d.provision(d.env...)
	if d.record().InstanceID == "" {
		t.Error("the upgraded keeper gave the record no instance ID")
	}
	if l := d.keeper(d.env, "backup", "list"); !regexp.MustCompile(`(?m)^` + oldID + `\s.*old format`).MatchString(l.out) {
		t.Errorf("backup list does not show %s as old format:\n%s", oldID, l.out)
	}
	d.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'format 2 ' || g FROM generate_series(1, 100) g`)
	atNew := d.fingerprint(t)
	newID := d.backup(t)
	if _, ok := d.objects(t)["snapshots/"+oldID+"/manifest.json"]; !ok {
		t.Error("the first new backup's retention deleted the old-format backup")
	}
	for _, mk := range d.markers() {
		if strings.HasPrefix(mk, "verified-") {
			t.Errorf("the old release's marker %s is left", mk)
		}
	}

	// A purged device: same device ID, same domain, a new instance.
	purged := newDevice(t, d, "BALENA_DEVICE_UUID=0123456789abcdef0123456789abcdef")
	purged.provision(purged.env...)
	before := purged.objects(t)
	if r := purged.keeper(purged.env, "backup"); r.code != 3 || !strings.Contains(r.out, "another instance") {
		t.Errorf("the purged device's backup exited %d; want 3, refusing another instance's target:\n%s", r.code, r.out)
	}
	if after := purged.objects(t); len(after) != len(before) {
		t.Errorf("the refused backup changed the target: %d objects before, %d after", len(before), len(after))
	}

	// New hardware restores the new backup by default...
	nu := newDevice(t, d)
	if r := nu.keeper(nu.env, "restore"); r.code != 0 || !strings.Contains(r.out, newID) {
		t.Fatalf("the default restore exited %d; want backup %s:\n%s", r.code, newID, r.out)
	}
	assertSameData(t, atNew, nu.fingerprint(t))

	// ...and the old one only when asked to trust the old format.
	older := newDevice(t, d)
	if r := older.keeper(older.env, "restore", "--backup", oldID); r.code != 3 || !strings.Contains(r.out, "--trust-old-format") {
		t.Errorf("restore of the old-format backup without trust exited %d; want 3 naming --trust-old-format:\n%s", r.code, r.out)
	}
	if r := older.keeper(older.env, "restore", "--backup", oldID, "--trust-old-format"); r.code != 0 {
		t.Fatalf("restore --trust-old-format exited %d:\n%s", r.code, r.out)
	}
	assertSameData(t, atOld, older.fingerprint(t))
	a, _ := os.ReadFile(filepath.Join(d.media, "media_attachments/files/109/000/001/original/a.png"))
	b, _ := os.ReadFile(filepath.Join(older.media, "media_attachments/files/109/000/001/original/a.png"))
	if len(a) == 0 || string(a) != string(b) {
		t.Error("the old-format backup's media did not come back")
	}
}

// lastPerRowChunksRelease is the last commit whose keeper stored the dump
// as pg_dump wrote it, a chunk per row, and did not record its size.
const lastPerRowChunksRelease = "25e2e70"

// Its backups restore with this release's staging: indexed for several
// pg_restore jobs, the free space estimated from the stored size.
func TestBackupsOfTheReleaseBeforeRechunkingRestore(t *testing.T) {
	t.Parallel()
	oldBin := buildRelease(t, lastPerRowChunksRelease)
	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	if _, err := old.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'per row ' || g FROM generate_series(1, 3000) g`); err != nil {
		t.Fatal(err)
	}
	want := old.fingerprint(t)
	r := old.runWith(t, oldBin, "backup")
	m := regexp.MustCompile(`backup (` + idPattern + `) complete`).FindStringSubmatch(r.out)
	if r.code != 0 || m == nil {
		t.Fatalf("the old keeper's backup exited %d:\n%s", r.code, r.out)
	}
	if _, ok := old.manifest(t, m[1])["dump_bytes"]; ok {
		t.Fatalf("the old keeper recorded the dump's size: not the release this test means")
	}

	nu := newDevice(t, old)
	r = nu.keeper(nu.env, "restore")
	jobs := fmt.Sprintf("jobs=%d", min(runtime.NumCPU(), 8))
	if r.code != 0 || !strings.Contains(r.out, m[1]) || !strings.Contains(r.out, jobs) {
		t.Fatalf("restore of the old release's backup exited %d (want backup %s, %s):\n%s", r.code, m[1], jobs, r.out)
	}
	nu.provision(append(nu.env, unset("BACKUP_PASSPHRASE"))...)
	assertSameData(t, want, nu.fingerprint(t))
}
