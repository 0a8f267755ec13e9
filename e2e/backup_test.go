package e2e

import (
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const passphrase = "correct horse battery staple"

// backupTarget is one kind of storage target for the backup tests.
type backupTarget struct {
	name string
	// open returns the variables that point mastokeeper at a fresh target,
	// and a function listing the stored object keys with their paths on
	// disk (every backend used here keeps objects as files).
	open func(t *testing.T) (env []string, objects func() map[string]string)
}

func fileTarget(t *testing.T) ([]string, func() map[string]string) {
	dir := t.TempDir()
	return []string{"BACKUP_TARGET=file://" + dir}, func() map[string]string { return filesUnder(dir) }
}

// filesUnder maps each file's path relative to dir to its absolute path,
// leaving out temporary files.
func filesUnder(dir string) map[string]string {
	m := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), ".") {
			rel, _ := filepath.Rel(dir, p)
			m[filepath.ToSlash(rel)] = p
		}
		return nil
	})
	return m
}

var backupTargets = []backupTarget{{"file", fileTarget}}

// backupDevice is a provisioned stack with media and a backup target.
type backupDevice struct {
	*stack
	media   string
	env     []string
	objects func() map[string]string
}

func newBackupDevice(t *testing.T, target backupTarget) *backupDevice {
	s := newStack(t)
	s.provision()
	media := filepath.Join(s.base, "system")
	for path, size := range map[string]int{
		"media_attachments/files/109/000/001/original/a.png": 200_000,
		"media_attachments/files/109/000/002/original/b.mp4": 3_000_000,
		"accounts/avatars/000/000/001/original/me.jpg":       50_000,
		"cache/media_attachments/files/remote/x.png":         100_000, // remote cache: never backed up
	} {
		writeRandom(t, filepath.Join(media, path), size)
	}
	env, objects := target.open(t)
	env = append(env, "MEDIA_DIR="+media, "BACKUP_PASSPHRASE="+passphrase)
	return &backupDevice{stack: s, media: media, env: env, objects: objects}
}

func writeRandom(t *testing.T, path string, size int) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (d *backupDevice) backup(t *testing.T) string {
	t.Helper()
	r := d.keeper(d.env, "backup")
	m := regexp.MustCompile(`backup (\d{8}T\d{6}Z) complete`).FindStringSubmatch(r.out)
	if r.code != 0 || m == nil {
		t.Fatalf("backup exited %d:\n%s", r.code, r.out)
	}
	return m[1]
}

func (d *backupDevice) list(t *testing.T) []string {
	t.Helper()
	r := d.keeper(d.env, "backup", "list")
	if r.code != 0 {
		t.Fatalf("backup list exited %d:\n%s", r.code, r.out)
	}
	return regexp.MustCompile(`(?m)^(\d{8}T\d{6}Z)\s`).FindAllString(r.out, -1)
}

func forEachTarget(t *testing.T, f func(t *testing.T, target backupTarget)) {
	for _, target := range backupTargets {
		t.Run(target.name, func(t *testing.T) { f(t, target) })
	}
}

func TestBackupIsCompleteVerifiableAndEncrypted(t *testing.T) {
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		id := d.backup(t)
		if got := d.list(t); len(got) != 1 || !strings.HasPrefix(got[0], id) {
			t.Errorf("backup list shows %q, want %s", got, id)
		}
		if r := d.keeper(d.env, "backup", "verify", id); r.code != 0 || !strings.Contains(r.out, "verified") {
			t.Fatalf("verify exited %d:\n%s", r.code, r.out)
		}
		objs := d.objects()
		var manifest struct {
			LocalDomain     string   `json:"local_domain"`
			MastodonVersion string   `json:"mastodon_version"`
			PostgresVersion string   `json:"postgres_version"`
			MediaFiles      int      `json:"media_files"`
			MediaBlobs      []string `json:"media_blobs"`
			Objects         []struct {
				Name   string `json:"name"`
				Size   int64  `json:"size"`
				SHA256 string `json:"sha256"`
			} `json:"objects"`
		}
		b, err := os.ReadFile(objs["snapshots/"+id+"/manifest.json"])
		if err != nil || json.Unmarshal(b, &manifest) != nil {
			t.Fatalf("manifest: %v", err)
		}
		if manifest.LocalDomain != "social.example.test" || manifest.MastodonVersion != mastodonVersion || !strings.HasPrefix(manifest.PostgresVersion, "15") {
			t.Errorf("manifest %+v", manifest)
		}
		if manifest.MediaFiles != 3 || len(manifest.MediaBlobs) != 3 {
			t.Errorf("media: %d files, %d blobs; want 3 local uploads (the remote cache left out)", manifest.MediaFiles, len(manifest.MediaBlobs))
		}
		names := []string{}
		for _, o := range manifest.Objects {
			names = append(names, o.Name)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"db.dump.zst.age", "media-index.json.age", "secrets.json.age"}) {
			t.Errorf("objects %v", names)
		}
		// Nothing leaves the device in the clear: no secret and no media
		// byte appears in any stored object.
		rec := d.record()
		media, _ := os.ReadFile(filepath.Join(d.media, "media_attachments/files/109/000/001/original/a.png"))
		for key, path := range objs {
			content, _ := os.ReadFile(path)
			for name, v := range rec.Secrets {
				if strings.Contains(string(content), v) {
					t.Errorf("%s holds %s in the clear", key, name)
				}
			}
			if strings.Contains(string(content), string(media[:64])) {
				t.Errorf("%s holds media in the clear", key)
			}
		}
	})
}

func TestBackupKilledMidwayNeverLooksComplete(t *testing.T) {
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		for _, at := range []string{"backup started", "database dumped", "media backed up"} {
			t.Run(at, func(t *testing.T) {
				d := newBackupDevice(t, target)
				k := d.start(d.env, "backup")
				if !k.waitFor(at, 60*time.Second) {
					t.Fatalf("never reached %q", at)
				}
				k.kill()
				if got := d.list(t); len(got) != 0 {
					t.Errorf("an interrupted backup is listed: %q", got)
				}
				id := d.backup(t)
				if got := d.list(t); len(got) != 1 || !strings.HasPrefix(got[0], id) {
					t.Errorf("after the next run: %q", got)
				}
				if r := d.keeper(d.env, "backup", "verify", id); r.code != 0 {
					t.Errorf("verify: %s", r.out)
				}
			})
		}
	})
}

func TestAChangedByteInAnyObjectIsRefused(t *testing.T) {
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		id := d.backup(t)
		for key, path := range d.objects() {
			if strings.HasSuffix(key, "manifest.json") || key == "owner.json" || key == "keys/backup-key.age" {
				continue
			}
			t.Run(key, func(t *testing.T) {
				orig, _ := os.ReadFile(path)
				flipped := slices.Clone(orig)
				flipped[len(flipped)/2] ^= 0x01
				os.WriteFile(path, flipped, 0o600)
				defer os.WriteFile(path, orig, 0o600)
				r := d.keeper(d.env, "backup", "verify", id)
				if r.code == 0 || !strings.Contains(r.out, "damaged") {
					t.Errorf("verify accepted a changed byte in %s (exit %d):\n%s", key, r.code, r.out)
				}
			})
		}
	})
}

func TestASecondBackupUploadsNoUnchangedMedia(t *testing.T) {
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		d.backup(t)
		before := mediaObjects(d.objects())
		time.Sleep(1100 * time.Millisecond) // a new backup ID
		writeRandom(t, filepath.Join(d.media, "media_attachments/files/109/000/003/original/c.png"), 10_000)
		r := d.keeper(d.env, "backup")
		if r.code != 0 || !strings.Contains(r.out, "newly_uploaded=1") {
			t.Fatalf("second backup (%d):\n%s", r.code, r.out)
		}
		after := mediaObjects(d.objects())
		if len(after) != len(before)+1 {
			t.Errorf("%d media objects after, %d before; want exactly the new file added", len(after), len(before))
		}
		for k, p := range before {
			if after[k] != p {
				t.Errorf("media object %s was replaced", k)
			}
		}
	})
}

func mediaObjects(objs map[string]string) map[string]string {
	m := map[string]string{}
	for k, p := range objs {
		if strings.HasPrefix(k, "media/") {
			fi, _ := os.Stat(p)
			m[k] = fi.ModTime().String()
		}
	}
	return m
}

// The README's recipe works: age, zstd, jq and pg_restore alone open a
// backup, with the passphrase typed at age's prompt.
func TestABackupDecryptsByHandWithoutMastokeeper(t *testing.T) {
	for _, tool := range []string{"age", "zstd", "jq", "pg_restore", "script"} {
		if _, err := exec.LookPath(tool); err != nil {
			stackMissing(t, "%s (the README's decrypt-by-hand recipe)", tool)
		}
	}
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	id := d.backup(t)
	objs := d.objects()
	root := strings.TrimSuffix(objs["owner.json"], "owner.json")
	work := t.TempDir()
	// age reads a passphrase only from a terminal: `script` gives it one.
	recipe := `set -euo pipefail
cd "$ROOT"
printf '%s\n' "$PASS" | script -qec "age -d -o $WORK/backup-key.txt keys/backup-key.age" /dev/null >/dev/null
age -d -i $WORK/backup-key.txt snapshots/$ID/secrets.json.age > $WORK/secrets.json
age -d -i $WORK/backup-key.txt snapshots/$ID/db.dump.zst.age | zstd -q -d > $WORK/mastodon.dump
pg_restore --list $WORK/mastodon.dump > $WORK/toc.txt
age -d -i $WORK/backup-key.txt snapshots/$ID/media-index.json.age |
  jq -r '.[] | .sha256 + " " + .path' | while read -r sum path; do
    mkdir -p "$WORK/system/$(dirname "$path")"
    age -d -i $WORK/backup-key.txt "media/${sum:0:2}/$sum.age" > "$WORK/system/$path"
  done
`
	cmd := exec.Command("bash", "-c", recipe)
	cmd.Env = append(os.Environ(), "ROOT="+root, "WORK="+work, "ID="+id, "PASS="+passphrase)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the recipe failed: %v\n%s", err, out)
	}
	secrets, _ := os.ReadFile(filepath.Join(work, "secrets.json"))
	if !strings.Contains(string(secrets), d.record().Secrets["SECRET_KEY_BASE"]) {
		t.Error("secrets.json does not hold the instance's secrets")
	}
	toc, _ := os.ReadFile(filepath.Join(work, "toc.txt"))
	if !strings.Contains(string(toc), "TABLE public accounts") {
		t.Errorf("the dump's table of contents lacks the accounts table:\n%s", toc)
	}
	for _, rel := range []string{"media_attachments/files/109/000/001/original/a.png", "accounts/avatars/000/000/001/original/me.jpg"} {
		want, _ := os.ReadFile(filepath.Join(d.media, rel))
		got, _ := os.ReadFile(filepath.Join(work, "system", rel))
		if len(want) == 0 || string(got) != string(want) {
			t.Errorf("%s did not come back byte for byte", rel)
		}
	}
}
