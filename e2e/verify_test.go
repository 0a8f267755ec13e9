package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A media blob damaged on the target after it was stored is found by the
// scheduled verification - a different eighth of the blobs each run, so
// every blob within eight runs - and uploaded again from the device while
// the file is still there. A blob whose file is gone is reported, and the
// check fails loudly.
func TestTheScheduledCheckFindsAndRepairsADamagedMediaBlob(t *testing.T) {
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		id := d.backup(t)
		rel := "media_attachments/files/109/000/001/original/a.png"
		content, err := os.ReadFile(filepath.Join(d.media, rel))
		if err != nil {
			t.Fatal(err)
		}
		blob := blobKey(sha(content))
		d.flip(t, blob, func(n int) int { return n - 20 })
		if r := d.keeper(d.env, "backup", "verify", id); r.code == 0 || !strings.Contains(r.out, "damaged") {
			t.Fatalf("verify passed a damaged blob (exit %d):\n%s", r.code, r.out)
		}
		repaired := false
		for run := 0; run < 8 && !repaired; run++ {
			r := d.keeper(d.env, "backup", "check")
			if r.code != 0 {
				t.Fatalf("check %d exited %d:\n%s", run, r.code, r.out)
			}
			repaired = strings.Contains(r.out, "1 damaged blob(s) uploaded again")
		}
		if !repaired {
			t.Fatal("eight checks never found the damaged blob")
		}
		if r := d.keeper(d.env, "backup", "verify", id); r.code != 0 {
			t.Errorf("after the repair, verify exited %d:\n%s", r.code, r.out)
		}

		// Damaged again, and the file is gone from the device: reported.
		d.flip(t, blob, func(n int) int { return n - 20 })
		os.Remove(filepath.Join(d.media, rel))
		failed := false
		for run := 0; run < 8 && !failed; run++ {
			r := d.keeper(d.env, "backup", "check")
			if r.code != 0 {
				failed = strings.Contains(r.out, "no longer on this device")
				if !failed {
					t.Fatalf("check failed for another reason:\n%s", r.out)
				}
			}
		}
		if !failed {
			t.Error("eight checks never reported the damaged blob whose file is gone")
		}
	})
}
