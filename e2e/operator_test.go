package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A person moving to new hardware looks at the old backups first: list and
// verify them from the fresh device, with --from and the passphrase,
// without the device gaining any state - then restores the latest.
func TestAFreshDeviceListsAndVerifiesBackupsBeforeRestoringTheLatest(t *testing.T) {
	t.Parallel()
	old, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) SELECT 1, 'moving ' || g FROM generate_series(1, 300) g`)
	id := old.backup(t) // the newest: not the one the helper took
	nu := newDevice(t, old)
	own := append(nu.env, "BACKUP_TARGET=file://"+filepath.Join(nu.base, "own-target"))
	from := old.target()

	l := nu.keeper(own, "backup", "list", "--from", from)
	if l.code != 0 || !strings.Contains(l.out, id) || !strings.Contains(l.out, "verified") {
		t.Fatalf("backup list --from on a fresh device exited %d:\n%s", l.code, l.out)
	}
	v := nu.keeper(own, "backup", "verify", "--from="+from, "latest")
	if v.code != 0 || !strings.Contains(v.out, "backup "+id+" verified") {
		t.Fatalf("backup verify latest --from on a fresh device exited %d:\n%s", v.code, v.out)
	}
	if ents, _ := os.ReadDir(nu.stateDir); len(ents) != 0 {
		t.Errorf("listing and verifying wrote %d entries into the fresh device's state", len(ents))
	}
	if _, err := os.Stat(filepath.Join(nu.base, "own-target")); err == nil {
		t.Error("listing another target created the device's own")
	}
	wrong := nu.keeper(append(own, "BACKUP_PASSPHRASE=not the passphrase at all"), "backup", "list", "--from", from)
	if wrong.code != 3 || !strings.Contains(wrong.out, "BACKUP_PASSPHRASE does not open") {
		t.Errorf("a wrong passphrase (%d):\n%s", wrong.code, wrong.out)
	}

	r := nu.keeper(own, "restore", "--from", from, "--backup", "latest")
	if r.code != 0 || !strings.Contains(r.out, "restored backup "+id) {
		t.Fatalf("restore --backup latest exited %d:\n%s", r.code, r.out)
	}
	assertSameData(t, want, nu.fingerprint(t))
}

// Restore and list speak the person's words: an empty target is "no
// backups found", and a bad --from is named --from.
func TestRestoreAndListErrorsSpeakThePersonsWords(t *testing.T) {
	t.Parallel()
	s := newStack(t, "BACKUP_PASSPHRASE="+passphrase)
	empty := "file://" + filepath.Join(s.base, "empty")
	os.MkdirAll(filepath.Join(s.base, "empty"), 0o755)
	r := s.keeper(nil, "restore", "--from", empty)
	if r.code != 3 || !strings.Contains(r.out, "no backup found at "+empty) || strings.Contains(r.out, "object not found") {
		t.Errorf("restore from an empty target (%d):\n%s", r.code, r.out)
	}
	if r := s.keeper(nil, "backup", "list", "--from", empty); r.code != 0 || !strings.Contains(r.out, "no backups found at "+empty) {
		t.Errorf("listing an empty target (%d):\n%s", r.code, r.out)
	}
	for _, args := range [][]string{{"restore", "--from", "ftp://x/y"}, {"backup", "list", "--from=ftp://x/y"}, {"backup", "verify", "--from", "s3:bucket", "latest"}} {
		r := s.keeper(nil, args...)
		if r.code != 3 || !strings.Contains(r.out, "--from: ") || strings.Contains(r.out, "BACKUP_TARGET:") {
			t.Errorf("%v: a bad --from must be named --from (%d):\n%s", args, r.code, r.out)
		}
	}
	r = s.keeper([]string{"RESTORE_FROM=ftp://x/y"}, "restore")
	if r.code != 3 || !strings.Contains(r.out, "RESTORE_FROM: ") {
		t.Errorf("a bad RESTORE_FROM must be named (%d):\n%s", r.code, r.out)
	}
}

// After a move, the old device's backups are refused with the command that
// takes them back; that command asks first, and then the new device is the
// one refused.
func TestBackupClaimTakesTheTargetBackAfterAsking(t *testing.T) {
	t.Parallel()
	old, _ := backedUpWith(t, `INSERT INTO statuses (account_id, text) VALUES (1, 'claim')`)
	nu := newDevice(t, old)
	if r := nu.keeper(nu.env, "restore"); r.code != 0 {
		t.Fatalf("restore exited %d:\n%s", r.code, r.out)
	}
	nu.backup(t)
	refused := old.keeper(old.env, "backup")
	if refused.code != 3 || !strings.Contains(refused.out, "'mastokeeper backup claim'") {
		t.Fatalf("the old device's backup (%d) does not name the claim command:\n%s", refused.code, refused.out)
	}
	asked := old.keeper(old.env, "backup", "claim") // no terminal, no --yes
	if asked.code != 3 || !strings.Contains(asked.out, "written by device") || !strings.Contains(asked.out, "--yes") {
		t.Fatalf("claim without confirmation (%d):\n%s", asked.code, asked.out)
	}
	if r := old.keeper(old.env, "backup"); r.code != 3 {
		t.Fatalf("an unconfirmed claim changed the owner: backup exited %d", r.code)
	}
	claimed := old.keeper(old.env, "backup", "claim", "--yes")
	if claimed.code != 0 || !strings.Contains(claimed.out, "claimed") {
		t.Fatalf("backup claim --yes exited %d:\n%s", claimed.code, claimed.out)
	}
	old.backup(t)
	if r := nu.keeper(nu.env, "backup"); r.code != 3 || !strings.Contains(r.out, "another device owns this backup target") {
		t.Errorf("after the claim the other device still writes (%d):\n%s", r.code, r.out)
	}
	again := old.keeper(old.env, "backup", "claim", "--yes")
	if again.code != 0 || !strings.Contains(again.out, "nothing to claim") {
		t.Errorf("a second claim (%d):\n%s", again.code, again.out)
	}
}

// restore --force on a live instance backs it up first - after choosing
// what to restore, pruning nothing - so the restore can be undone; and it
// says what it brought back.
func TestAForcedRestoreTakesASafetyBackupFirstAndCanBeUndone(t *testing.T) {
	t.Parallel()
	d, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) SELECT 1, 'kept ' || g FROM generate_series(1, 40) g`)
	before := d.list(t)
	if _, err := d.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'newer ' || g FROM generate_series(1, 7) g`); err != nil {
		t.Fatal(err)
	}
	newer := d.fingerprint(t)

	r := d.keeper(d.env, "restore", "--force")
	if r.code != 0 || !strings.Contains(r.out, "taking a safety backup") || !strings.Contains(r.out, "restored backup "+strings.Fields(before[len(before)-1])[0]) {
		t.Fatalf("restore --force (%d):\n%s", r.code, r.out)
	}
	if !regexp.MustCompile(`: \d+ local accounts?, 4\d statuses, 3 media files\.`).MatchString(r.out) {
		t.Errorf("the restore does not say what it brought back:\n%s", r.out)
	}
	assertSameData(t, want, d.fingerprint(t))
	after := d.list(t)
	if len(after) != len(before)+1 {
		t.Fatalf("backups before %v, after %v: want one safety backup more and none pruned", before, after)
	}
	safety := strings.Fields(after[len(after)-1])[0]

	undo := d.keeper(d.env, "restore", "--force", "--no-safety-backup", "--backup", safety)
	if undo.code != 0 || strings.Contains(undo.out, "taking a safety backup") {
		t.Fatalf("undoing with the safety backup (%d):\n%s", undo.code, undo.out)
	}
	assertSameData(t, newer, d.fingerprint(t))
}
