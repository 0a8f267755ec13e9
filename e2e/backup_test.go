package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
	_ "github.com/mastodon-on-balena/mastodon-balena/storage/all"
	"github.com/mastodon-on-balena/mastodon-balena/storage/storagetest"
)

const passphrase = "correct horse battery staple"

// idPattern matches a backup ID (milliseconds since format 2).
const idPattern = `\d{8}T\d{6}(?:\.\d{3})?Z`

// backupTarget is one kind of storage target for the backup tests.
type backupTarget struct {
	name string
	// open starts what the target needs and returns the variables that
	// point mastokeeper at a fresh, empty target.
	open func(t *testing.T) []string
}

// outages lets a test stop and start the object server of the target most
// recently opened by the running test. Tests run in parallel: guarded.
var (
	outagesMu sync.Mutex
	outages   = map[*testing.T]outage{}
)

type outage struct{ stop, start func() error }

func setOutage(t *testing.T, o outage) {
	outagesMu.Lock()
	defer outagesMu.Unlock()
	outages[t] = o
	t.Cleanup(func() {
		outagesMu.Lock()
		defer outagesMu.Unlock()
		delete(outages, t)
	})
}

func outageOf(t *testing.T) outage {
	outagesMu.Lock()
	defer outagesMu.Unlock()
	return outages[t]
}

func fileTarget(t *testing.T) []string {
	return []string{"BACKUP_TARGET=file://" + t.TempDir()}
}

// s3Target is a bucket of its own on the package's shared gateway.
func s3Target(t *testing.T) []string {
	gw := storagetest.SharedVersityGW(t)
	bucket := "backups-" + randomHex(t)
	if err := gw.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	return s3Env(gw, bucket)
}

// privateS3Target is a gateway of the test's own, which it may stop.
func privateS3Target(t *testing.T) []string {
	gw := storagetest.StartVersityGW(t)
	setOutage(t, outage{func() error { gw.Stop(); return nil }, gw.Start})
	return s3Env(gw, gw.Bucket)
}

func s3Env(gw *storagetest.VersityGW, bucket string) []string {
	return []string{"BACKUP_TARGET=s3://" + bucket + "/mastodon", "BACKUP_S3_ENDPOINT=" + gw.Endpoint,
		"BACKUP_S3_REGION=" + gw.Region, "BACKUP_S3_ACCESS_KEY_ID=" + gw.AccessKey, "BACKUP_S3_SECRET_ACCESS_KEY=" + gw.SecretKey,
		"BACKUP_S3_PATH_STYLE=true", "BACKUP_S3_PART_SIZE=5MiB"}
}

// swiftTarget is a container of its own on the package's shared Swift.
func swiftTarget(t *testing.T) []string {
	sw := storagetest.SharedSwift(t)
	container := "backups-" + randomHex(t)
	// Like an admin in their provider's console: the container comes first.
	if err := sw.CreateContainer(container); err != nil {
		t.Fatal(err)
	}
	return swiftEnv(sw, container)
}

// privateSwiftTarget is a Swift of the test's own, which it may stop.
func privateSwiftTarget(t *testing.T) []string {
	sw := storagetest.StartSwift(t)
	if err := sw.CreateContainer("backups"); err != nil {
		t.Fatal(err)
	}
	setOutage(t, outage{func() error { sw.StopObjectServer(); return nil }, sw.StartObjectServer})
	return swiftEnv(sw, "backups")
}

func swiftEnv(sw *storagetest.SwiftServer, container string) []string {
	env := []string{"BACKUP_TARGET=swift://" + container + "/mastodon", "BACKUP_SWIFT_SEGMENT_SIZE=1MiB"}
	for k, v := range sw.Env() {
		env = append(env, k+"="+v)
	}
	return env
}

func randomHex(t *testing.T) string {
	b := make([]byte, 8)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

var backupTargets = []backupTarget{{"file", fileTarget}, {"s3", s3Target}, {"swift", swiftTarget}}

// store opens the device's backup target through the product's own
// storage code, to look at and tamper with what is stored.
func (d *backupDevice) store(t *testing.T) storage.Store {
	t.Helper()
	env := map[string]string{}
	for _, kv := range d.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	st, err := storage.Open(context.Background(), env["BACKUP_TARGET"], func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// objects maps every stored key to its modification time.
func (d *backupDevice) objects(t *testing.T) map[string]time.Time {
	t.Helper()
	objs, err := d.store(t).List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]time.Time{}
	for _, o := range objs {
		m[o.Key] = o.ModTime
	}
	return m
}

func (d *backupDevice) read(t *testing.T, key string) []byte {
	t.Helper()
	rc, err := d.store(t).Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flip changes one byte of a stored object, as bit rot would, and returns
// a function that puts the original back.
func (d *backupDevice) flip(t *testing.T, key string, at func(n int) int) (undo func()) {
	t.Helper()
	orig := d.read(t, key)
	changed := slices.Clone(orig)
	changed[at(len(changed))] ^= 0x01
	ctx := context.Background()
	if err := d.store(t).Put(ctx, key, bytes.NewReader(changed)); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := d.store(t).Put(ctx, key, bytes.NewReader(orig)); err != nil {
			t.Fatal(err)
		}
	}
}

// backupDevice is a provisioned stack with media and a backup target.
type backupDevice struct {
	*stack
	media string
	env   []string
}

func newBackupDevice(t *testing.T, target backupTarget, stackEnv ...string) *backupDevice {
	s := newStack(t, stackEnv...)
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
	env := append(target.open(t), "MEDIA_DIR="+media, "BACKUP_PASSPHRASE="+passphrase)
	return &backupDevice{stack: s, media: media, env: env}
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
	m := regexp.MustCompile(`backup (` + idPattern + `) complete`).FindStringSubmatch(r.out)
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
	return regexp.MustCompile(`(?m)^(`+idPattern+`)\s`).FindAllString(r.out, -1)
}

// forEachTarget runs f on every kind of target, side by side.
func forEachTarget(t *testing.T, f func(t *testing.T, target backupTarget)) {
	for _, target := range backupTargets {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			f(t, target)
		})
	}
}

func TestBackupIsCompleteVerifiableAndEncrypted(t *testing.T) {
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		id := d.backup(t)
		if got := d.list(t); len(got) != 1 || !strings.HasPrefix(got[0], id) {
			t.Errorf("backup list shows %q, want %s", got, id)
		}
		if r := d.keeper(d.env, "backup", "verify", id); r.code != 0 || !strings.Contains(r.out, "verified") {
			t.Fatalf("verify exited %d:\n%s", r.code, r.out)
		}
		objs := d.objects(t)
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
		body, _ := json.Marshal(d.manifest(t, id))
		if err := json.Unmarshal(body, &manifest); err != nil {
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
		for key := range objs {
			content := d.read(t, key)
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
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		for _, at := range []string{"backup started", "database dumped", "media backed up"} {
			t.Run(at, func(t *testing.T) {
				d := newBackupDevice(t, target)
				k := d.start(d.env, "backup")
				if !k.waitFor(at, 60*time.Second) {
					t.Fatalf("never reached %q", at)
				}
				k.kill()
				// After "media backed up" only the manifest is left to put: the
				// kill may land after it, and then the backup is whole.
				if got := d.list(t); len(got) != 0 {
					id, _, _ := strings.Cut(got[0], " ")
					if r := d.keeper(d.env, "backup", "verify", id); at != "media backed up" || r.code != 0 {
						t.Errorf("an interrupted backup is listed: %q (verify exit %d)", got, r.code)
					}
					return
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
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		id := d.backup(t)
		for key := range d.objects(t) {
			if strings.HasSuffix(key, "manifest.json") || strings.HasSuffix(key, "verified.json") || key == "owner.json" || key == "keys/backup-key.age" {
				continue
			}
			t.Run(key, func(t *testing.T) {
				defer d.flip(t, key, func(n int) int { return n / 2 })()
				r := d.keeper(d.env, "backup", "verify", id)
				if r.code == 0 || !strings.Contains(r.out, "damaged") {
					t.Errorf("verify accepted a changed byte in %s (exit %d):\n%s", key, r.code, r.out)
				}
			})
		}
	})
}

func TestASecondBackupUploadsNoUnchangedMedia(t *testing.T) {
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		d.backup(t)
		before := mediaObjects(d.objects(t))
		time.Sleep(1100 * time.Millisecond) // a new backup ID
		writeRandom(t, filepath.Join(d.media, "media_attachments/files/109/000/003/original/c.png"), 10_000)
		r := d.keeper(d.env, "backup")
		if r.code != 0 || !strings.Contains(r.out, "newly_uploaded=1") {
			t.Fatalf("second backup (%d):\n%s", r.code, r.out)
		}
		after := mediaObjects(d.objects(t))
		if len(after) != len(before)+1 {
			t.Errorf("%d media objects after, %d before; want exactly the new file added", len(after), len(before))
		}
		for k, mt := range before {
			if !after[k].Equal(mt) {
				t.Errorf("media object %s was replaced", k)
			}
		}
	})
}

func mediaObjects(objs map[string]time.Time) map[string]time.Time {
	m := map[string]time.Time{}
	for k, mt := range objs {
		if strings.HasPrefix(k, "media/") {
			m[k] = mt
		}
	}
	return m
}

// The README's recipe works: age, zstd, jq and pg_restore alone open a
// backup, with the passphrase typed at age's prompt - one whose dump
// pg_dump 17 compressed (the images' tools), and one in the keeper's zstd
// frames (a pg_dump older than 16).
func TestABackupDecryptsByHandWithoutMastokeeper(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"age", "zstd", "jq", "pg_restore", "script"} {
		if _, err := exec.LookPath(tool); err != nil {
			stackMissing(t, "%s (the README's decrypt-by-hand recipe)", tool)
		}
	}
	t.Run("archive compressed by pg_dump 17", func(t *testing.T) {
		t.Parallel()
		decryptByHand(t, "archive", pg17Path(t))
	})
	t.Run("zstd frames from pg_dump 15", func(t *testing.T) {
		t.Parallel()
		decryptByHand(t, "")
	})
}

// decryptByHand follows the recipe on a backup whose manifest says the
// dump has layout ("archive", or "" for zstd frames), on a stack with
// stackEnv (PATH=... for other PostgreSQL tools).
func decryptByHand(t *testing.T, layout string, stackEnv ...string) {
	d := newBackupDevice(t, backupTarget{"file", fileTarget}, stackEnv...)
	id := d.backup(t)
	if got, _ := d.manifest(t, id)["dump_layout"].(string); got != layout {
		t.Errorf("the dump's layout is %q, want %q", got, layout)
	}
	root := strings.TrimPrefix(d.env[0], "BACKUP_TARGET=file://")
	work := t.TempDir()
	// age reads a passphrase only from a terminal: `script` gives it one.
	recipe := `set -euo pipefail
cd "$ROOT"
printf '%s\n' "$PASS" | script -qec "age -d -o $WORK/backup-key.txt keys/backup-key.age" /dev/null >/dev/null
age -d -i $WORK/backup-key.txt snapshots/$ID/secrets.json.age > $WORK/secrets.json
age -d -i $WORK/backup-key.txt snapshots/$ID/db.dump.zst.age | zstd -q -dcf > $WORK/mastodon.dump
pg_restore --list $WORK/mastodon.dump > $WORK/toc.txt
age -d -i $WORK/backup-key.txt snapshots/$ID/media-index.json.age |
  jq -r '.[] | .sha256 + " " + .path' | while read -r sum path; do
    mkdir -p "$WORK/system/$(dirname "$path")"
    age -d -i $WORK/backup-key.txt "media/${sum:0:2}/$sum.age" > "$WORK/system/$path"
  done
`
	cmd := exec.Command("bash", "-c", recipe)
	cmd.Env = append(append(os.Environ(), stackEnv...), "ROOT="+root, "WORK="+work, "ID="+id, "PASS="+passphrase)
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

func TestObjectServerStoppedMidBackupFailsClearlyAndKeepsEarlierBackups(t *testing.T) {
	t.Parallel()
	for _, target := range []backupTarget{{"s3", privateS3Target}, {"swift", privateSwiftTarget}} { // servers it may stop
		t.Run(target.name, func(t *testing.T) {
			d := newBackupDevice(t, target)
			t.Parallel()
			outage := outageOf(t)
			first := d.backup(t)
			time.Sleep(1100 * time.Millisecond)
			writeRandom(t, filepath.Join(d.media, "media_attachments/files/109/000/009/original/new.png"), 2_000_000)

			k := d.start(d.env, "backup")
			if !k.waitFor("database dumped", 60*time.Second) {
				t.Fatal("the backup never got to its media")
			}
			if err := outage.stop(); err != nil {
				t.Fatal(err)
			}
			code := k.wait(t, 5*time.Minute)
			if err := outage.start(); err != nil {
				t.Fatal(err)
			}
			logs := d.allLogs()
			if code == 0 {
				t.Fatalf("the backup succeeded with its object server stopped:\n%s", logs)
			}
			if !strings.Contains(logs, "retry") && !strings.Contains(logs, "attempt") {
				t.Errorf("the log does not show retries")
			}
			if got := d.list(t); len(got) != 1 || !strings.HasPrefix(got[0], first) {
				t.Errorf("after the failure the list is %q; want only %s", got, first)
			}
			if r := d.keeper(d.env, "backup", "verify", first); r.code != 0 {
				t.Errorf("the earlier backup no longer verifies:\n%s", r.out)
			}
			if testing.Verbose() {
				t.Logf("what the admin reads:\n%s", logs)
			}
			// Back up again, and it works.
			d.backup(t)
		})
	}
}

// With the tightest policy, only the newest backup stays - whole - and
// nothing of the others is left but media it still needs.
func TestRetentionOnEveryTargetKeepsTheNewestBackupWhole(t *testing.T) {
	t.Parallel()
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		d.env = append(d.env, "BACKUP_KEEP_DAILY=0", "BACKUP_KEEP_WEEKLY=0")
		var ids []string
		for range 3 {
			ids = append(ids, d.backup(t))
			time.Sleep(1100 * time.Millisecond)
		}
		if got := d.list(t); len(got) != 1 || !strings.HasPrefix(got[0], ids[2]) {
			t.Errorf("after three backups with policy 0/0 the list is %q; want only %s", got, ids[2])
		}
		for key := range d.objects(t) {
			if strings.Contains(key, ids[0]) || strings.Contains(key, ids[1]) {
				t.Errorf("%s of a pruned backup is still stored", key)
			}
		}
		if r := d.keeper(d.env, "backup", "verify", ids[2]); r.code != 0 {
			t.Errorf("the kept backup no longer verifies:\n%s", r.out)
		}
		var verified []string
		for key := range d.objects(t) {
			if strings.HasSuffix(key, "/verified.json") {
				verified = append(verified, key)
			}
		}
		if !slices.Equal(verified, []string{"snapshots/" + ids[2] + "/verified.json"}) {
			t.Errorf("verification records %v; want only the kept backup's", verified)
		}
	})
}

// BACKUP_COMPRESSION=fast changes how the dump is compressed, and a new
// device restores such a backup like any other: zstd decodes every level.
// A bad value refuses the backup before anything is stored, and nothing
// else.
func TestAFastCompressedBackupRestores(t *testing.T) {
	t.Parallel()
	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	if r := old.keeper(append(old.env, "BACKUP_COMPRESSION=fastest"), "backup"); r.code != 3 || !strings.Contains(r.out, "BACKUP_COMPRESSION") {
		t.Errorf("BACKUP_COMPRESSION=fastest: exit %d, want 3 naming the variable:\n%s", r.code, r.out)
	}
	if objs := old.objects(t); len(objs) != 0 {
		t.Errorf("a refused backup stored %d objects", len(objs))
	}
	// It stops backups only: the instance itself still starts.
	old.provision(append(old.env, "BACKUP_COMPRESSION=fastest")...)
	c := old.db("mastodon_production")
	if _, err := c.Exec(context.Background(), `INSERT INTO statuses (account_id, text)
		SELECT 1, 'toot ' || g || repeat(' ' || md5((g % 97)::text), 1 + g % 20) FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	want := old.fingerprint(t)
	dumpSize := func(id string) int { return len(old.read(t, "snapshots/"+id+"/db.dump.zst.age")) }
	defSize := dumpSize(old.backup(t))  // before retention prunes it
	time.Sleep(1100 * time.Millisecond) // a new backup ID
	old.env = append(old.env, "BACKUP_COMPRESSION=fast")
	fast := old.backup(t)
	fastSize := dumpSize(fast)
	t.Logf("db.dump.zst.age: %d bytes at the default level, %d with fast", defSize, fastSize)
	if fastSize <= defSize {
		t.Errorf("the fast dump (%d bytes) is not bigger than the default one (%d): was BACKUP_COMPRESSION used?", fastSize, defSize)
	}

	nu := newDevice(t, old)
	if r := nu.keeper(nu.env, "restore"); r.code != 0 || !strings.Contains(r.out, "restored backup "+fast) {
		t.Fatalf("restore exited %d, want backup %s restored:\n%s", r.code, fast, r.out)
	}
	assertSameData(t, want, nu.fingerprint(t))
}
