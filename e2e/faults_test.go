package e2e

// The fault suite: hostile input on the backup target, hostile files in the
// media volume, damaged and forged records, kills at many points, racing
// jobs, a full disk. Every test checks that nothing outside its place is
// written, that nothing is lost, and that the message says what happened.
// Every test is named TestFault... so that `-run TestFault` runs the suite.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
)

// Counters of what the suite did, logged by each test at its end.
var (
	faultsInjected atomic.Int64
	hostileInputs  atomic.Int64
)

func tally(t *testing.T) {
	t.Cleanup(func() {
		t.Logf("fault suite so far: %d faults injected, %d hostile inputs tried", faultsInjected.Load(), hostileInputs.Load())
	})
}

// --- helpers -----------------------------------------------------------------

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func blobKey(sum string) string { return "media/" + sum[:2] + "/" + sum + ".age" }

func manifestKey(id string) string { return "snapshots/" + id + "/manifest.json" }

// put stores raw bytes under key on the device's target.
func (d *backupDevice) put(t *testing.T, key string, b []byte) {
	t.Helper()
	if err := d.store(t).Put(context.Background(), key, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

func (d *backupDevice) del(t *testing.T, key string) {
	t.Helper()
	if err := d.store(t).Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

// contents maps every stored key to the SHA-256 of its bytes and its
// modification time: what "nothing was written" is compared with.
func (d *backupDevice) contents(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for key, mt := range d.objects(t) {
		out[key] = sha(d.read(t, key)) + " " + mt.UTC().Format(time.RFC3339Nano)
	}
	return out
}

func assertSameObjects(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if a, ok := after[k]; !ok {
			t.Errorf("%s: %s was deleted", what, k)
		} else if a != v {
			t.Errorf("%s: %s was rewritten", what, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s was written", what, k)
		}
	}
}

// tree maps every entry below dir to what it is: a file's SHA-256 and mode,
// a symlink's target, or "dir". Nothing is followed.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case de.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "symlink -> " + l
		case de.IsDir():
			out[rel] = "dir"
		default:
			b, _ := os.ReadFile(p)
			fi, _ := de.Info()
			out[rel] = fmt.Sprintf("file %s %v", sha(b), fi.Mode())
		}
		return nil
	})
	return out
}

// device is what a refused job must leave as it was: the keeper's volume,
// the media volume, the markers and the database.
type deviceState struct {
	state   map[string]string
	media   map[string]string
	markers []string
	fp      map[string]string
}

func (d *backupDevice) deviceState(t *testing.T) deviceState {
	t.Helper()
	s := deviceState{state: d.stateSnapshot(), media: tree(t, d.media), markers: d.markers()}
	if d.recordBytes() != nil {
		s.fp = d.fingerprint(t)
	}
	return s
}

func (d *backupDevice) assertUnchanged(t *testing.T, what string, before deviceState) {
	t.Helper()
	after := d.deviceState(t)
	for k, v := range before.state {
		if after.state[k] != v {
			t.Errorf("%s changed the keeper's volume: %s", what, k)
		}
	}
	for k := range after.state {
		if _, ok := before.state[k]; !ok {
			t.Errorf("%s wrote %s in the keeper's volume", what, k)
		}
	}
	if !reflect.DeepEqual(before.media, after.media) {
		t.Errorf("%s changed the media volume:\nbefore %v\nafter  %v", what, before.media, after.media)
	}
	if !slices.Equal(before.markers, after.markers) {
		t.Errorf("%s changed the markers: %v -> %v", what, before.markers, after.markers)
	}
	if !reflect.DeepEqual(before.fp, after.fp) {
		t.Errorf("%s changed the database", what)
	}
}

// localMedia maps every local upload of the media volume (cache/ and
// hidden entries left out, as a backup does) to its content.
func localMedia(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if !strings.Contains(rel, "/") && (rel == "cache" || strings.HasPrefix(rel, ".")) {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			out[filepath.ToSlash(rel)] = b
		}
		return nil
	})
	return out
}

func anyMap(v any) map[string]any {
	b, _ := json.Marshal(v)
	var m map[string]any
	json.Unmarshal(b, &m)
	return m
}

func blobsOf(m map[string]any) []string {
	var out []string
	for _, b := range m["media_blobs"].([]any) {
		out = append(out, b.(string))
	}
	return out
}

func mediaFilesOf(m map[string]any) int {
	n, _ := m["media_files"].(float64)
	return int(n)
}

// setObject records an object's stored size and checksum in manifest m.
func setObject(m map[string]any, name string, stored []byte) {
	for _, o := range m["objects"].([]any) {
		if o := o.(map[string]any); o["name"] == name {
			o["size"] = len(stored)
			o["sha256"] = sha(stored)
		}
	}
}

// encryptFor encrypts plaintext to the device's backup key, as the keeper
// encrypts every object (age, X25519).
func encryptFor(t *testing.T, backupKey string, plaintext []byte) []byte {
	t.Helper()
	id, err := age.ParseX25519Identity(backupKey)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plaintext)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type indexEntry struct {
	Path    string      `json:"path"`
	Size    int64       `json:"size"`
	Mode    fs.FileMode `json:"mode"`
	ModTime time.Time   `json:"mtime"`
	SHA256  string      `json:"sha256"`
}

// honestIndex is the media index a backup of the device's media makes.
func honestIndex(t *testing.T, dir string) []indexEntry {
	var out []indexEntry
	for p, b := range localMedia(t, dir) {
		out = append(out, indexEntry{Path: p, Size: int64(len(b)), Mode: 0o644, ModTime: time.Now().UTC(), SHA256: sha(b)})
	}
	slices.SortFunc(out, func(a, b indexEntry) int { return strings.Compare(a.Path, b.Path) })
	return out
}

func backupIDs(out string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`backup (`+idPattern+`) complete`).FindAllStringSubmatch(out, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func (d *backupDevice) verify(t *testing.T, id string) {
	t.Helper()
	if r := d.keeper(d.env, "backup", "verify", id); r.code != 0 || !strings.Contains(r.out, "backup "+id+" verified") {
		t.Errorf("backup verify %s exited %d:\n%s", id, r.code, r.out)
	}
}

// usable are the IDs `backup list` shows as backups, not as unusable.
func usable(t *testing.T, d *backupDevice) []string {
	t.Helper()
	r := d.keeper(d.env, "backup", "list")
	if r.code != 0 {
		t.Fatalf("backup list exited %d:\n%s", r.code, r.out)
	}
	var ids []string
	for _, m := range regexp.MustCompile(`(?m)^(`+idPattern+`)\s+(.*)$`).FindAllStringSubmatch(r.out, -1) {
		if !strings.HasPrefix(m[2], "unusable") {
			ids = append(ids, m[1])
		}
	}
	return ids
}

func fileRoot(d *backupDevice) string { return strings.TrimPrefix(d.target(), "file://") }

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// --- 1. hostile manifests ------------------------------------------------------

// Whoever can write to the bucket can write a manifest, but without the
// backup key only an old, unauthenticated one: it is never restored unless
// a person says the target is theirs alone, and even then every name in it
// is checked. A manifest moved to another backup's place, or one changed
// and re-signed by someone holding the key, is refused before the database
// is touched. A forged owner record stops backups and is left alone.
func TestFaultHostileManifests(t *testing.T) {
	t.Parallel()
	tally(t)
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		if _, err := d.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'hostile ' || g FROM generate_series(1, 300) g`); err != nil {
			t.Fatal(err)
		}
		want := d.fingerprint(t)
		id := d.backup(t)
		mkey := manifestKey(id)
		orig := d.read(t, mkey)
		origIndex := d.read(t, "snapshots/"+id+"/media-index.json.age")
		owner := d.read(t, "owner.json")
		m := d.manifest(t, id)
		putBack := func(t *testing.T) {
			d.put(t, mkey, orig)
			d.put(t, "snapshots/"+id+"/media-index.json.age", origIndex)
			d.put(t, "owner.json", owner)
		}
		// Outside the media volume, where a path in a backup must never lead.
		outside := filepath.Join(d.base, "x")

		t.Run("an old-format manifest is not restored by default", func(t *testing.T) {
			defer putBack(t)
			hostileInputs.Add(1)
			d.putManifest(t, id, anyMap(m), false)
			if r := d.keeper(d.env, "backup", "list"); r.code != 0 || !strings.Contains(r.out, "old format") || !strings.Contains(r.out, "--trust-old-format") {
				t.Errorf("backup list does not show the unauthenticated backup as such (exit %d):\n%s", r.code, r.out)
			}
			before := d.deviceState(t)
			r := d.keeper(d.env, "restore", "--force")
			if r.code != 3 || !strings.Contains(r.out, "--trust-old-format") || !strings.Contains(r.out, "old format") {
				t.Errorf("restore of an old-format manifest: exit %d, want 3 naming --trust-old-format:\n%s", r.code, r.out)
			}
			r = d.keeper(d.env, "restore", "--force", "--backup", id)
			if r.code != 3 || !strings.Contains(r.out, "--trust-old-format") {
				t.Errorf("restore --backup of an old-format manifest: exit %d, want 3 naming --trust-old-format:\n%s", r.code, r.out)
			}
			d.assertUnchanged(t, "a refused restore of an old-format manifest", before)

			// Nor at a new device's first boot with RESTORE_FROM.
			nu := newDevice(t, d)
			p := nu.keeper(append(nu.env, "RESTORE_FROM="+d.target(), unset("LOCAL_DOMAIN")), "provision")
			if p.code != 3 || !strings.Contains(p.out, "--trust-old-format") {
				t.Errorf("first boot with RESTORE_FROM and only an old-format backup: exit %d, want 3 naming --trust-old-format:\n%s", p.code, p.out)
			}
			if nu.recordBytes() != nil {
				t.Error("the refused first boot provisioned or restored an instance")
			}
			// A person who knows no one else writes there restores it.
			r = nu.keeper(nu.env, "restore", "--trust-old-format")
			if r.code != 0 || !strings.Contains(r.out, "restored backup "+id) {
				t.Fatalf("restore --trust-old-format exited %d:\n%s", r.code, r.out)
			}
			assertSameData(t, want, nu.fingerprint(t))
			for rel, b := range localMedia(t, d.media) {
				if got, err := os.ReadFile(filepath.Join(nu.media, rel)); err != nil || !bytes.Equal(got, b) {
					t.Errorf("%s was not restored byte for byte", rel)
				}
			}
		})

		t.Run("names in an old-format manifest are still checked", func(t *testing.T) {
			defer putBack(t)
			for _, bad := range []string{"../../x", "ab", "../../keeper/instance.json", strings.Repeat("A", 64), "/etc/passwd", ""} {
				hostileInputs.Add(1)
				mm := anyMap(m)
				mm["media_blobs"] = append(blobsOf(m), bad)
				d.putManifest(t, id, mm, false)
				before := d.deviceState(t)
				r := d.keeper(d.env, "restore", "--force", "--trust-old-format", "--backup", id)
				if r.code == 0 || !strings.Contains(r.out, "damaged") {
					t.Errorf("media blob %q: exit %d, want a refusal saying the backup is damaged:\n%s", bad, r.code, r.out)
				}
				d.assertUnchanged(t, fmt.Sprintf("a restore of a manifest listing blob %q", bad), before)
				if exists(outside) || exists(filepath.Join(d.base, "etc")) {
					t.Errorf("media blob %q: something was written outside the media volume", bad)
				}
			}
		})

		// The media index is encrypted to the backup key and its checksum is in
		// the manifest: only someone holding the key can change it. Then too,
		// and with an old-format manifest, every path is checked before anything
		// is written.
		t.Run("hostile paths in the media index", func(t *testing.T) {
			defer putBack(t)
			key := d.backupKey(t)
			honest := honestIndex(t, d.media)
			sum := honest[0].SHA256
			instanceJSON := d.recordBytes()
			for _, tc := range []struct {
				name  string
				entry indexEntry
			}{
				{"dot-dot", indexEntry{Path: "../../keeper/instance.json", Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"dot-dot inside", indexEntry{Path: "media_attachments/../../../x", Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"absolute", indexEntry{Path: filepath.Join(d.stateDir, "instance.json"), Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"staging", indexEntry{Path: ".mastokeeper-restore/" + sum, Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"hidden", indexEntry{Path: ".ssh/authorized_keys", Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"backslash", indexEntry{Path: `..\..\x`, Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"symlink mode", indexEntry{Path: "media_attachments/evil", Size: honest[0].Size, Mode: fs.ModeSymlink | 0o777, SHA256: sum}},
				{"setuid mode", indexEntry{Path: "media_attachments/suid", Size: honest[0].Size, Mode: fs.ModeSetuid | 0o755, SHA256: sum}},
				{"listed twice", indexEntry{Path: honest[0].Path, Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"file and directory", indexEntry{Path: honest[0].Path + "/inner", Size: honest[0].Size, Mode: 0o644, SHA256: sum}},
				{"unlisted blob", indexEntry{Path: "media_attachments/other.png", Size: 1, Mode: 0o644, SHA256: strings.Repeat("0", 64)}},
			} {
				for _, signed := range []bool{true, false} {
					if !signed && tc.name != "dot-dot" && tc.name != "absolute" {
						continue // the checks are the same; two are enough
					}
					t.Run(fmt.Sprintf("%s signed=%v", tc.name, signed), func(t *testing.T) {
						hostileInputs.Add(1)
						index := append(slices.Clone(honest), tc.entry)
						plain, _ := json.Marshal(index)
						stored := encryptFor(t, key, plain)
						d.put(t, "snapshots/"+id+"/media-index.json.age", stored)
						mm := anyMap(m)
						setObject(mm, "media-index.json.age", stored)
						mm["media_files"] = len(index)
						d.putManifest(t, id, mm, signed)
						before := d.deviceState(t)
						args := []string{"restore", "--force", "--backup", id}
						if !signed {
							args = append(args, "--trust-old-format")
						}
						r := d.keeper(d.env, args...)
						if r.code == 0 || !strings.Contains(r.out, "damaged") {
							t.Errorf("exit %d, want a refusal saying the backup is damaged:\n%s", r.code, r.out)
						}
						d.assertUnchanged(t, "a restore of a hostile media index", before)
						if !bytes.Equal(d.recordBytes(), instanceJSON) || exists(outside) || exists(filepath.Join(d.media, ".ssh")) {
							t.Error("something was written outside its place")
						}
						if entries, _ := os.ReadDir(filepath.Join(d.media, ".mastokeeper-restore")); len(entries) > 0 {
							t.Errorf("the refused restore left %d staged files", len(entries))
						}
					})
				}
			}
		})

		t.Run("a manifest moved to another backup's place", func(t *testing.T) {
			defer putBack(t)
			hostileInputs.Add(1)
			at, _ := time.Parse("20060102T150405.000Z", id)
			other := at.Add(time.Second).Format("20060102T150405.000Z")
			for _, name := range []string{"db.dump.zst.age", "secrets.json.age", "media-index.json.age", "manifest.json", "verified.json"} {
				d.put(t, "snapshots/"+other+"/"+name, d.read(t, "snapshots/"+id+"/"+name))
			}
			defer func() {
				for key := range d.objects(t) {
					if strings.HasPrefix(key, "snapshots/"+other+"/") {
						d.del(t, key)
					}
				}
			}()
			l := d.keeper(d.env, "backup", "list")
			if l.code != 0 || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(other)+`\s+unusable:.*not authenticated`).MatchString(l.out) ||
				!regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(id)+`\s.*verified`).MatchString(l.out) {
				t.Errorf("backup list does not show the moved manifest as unusable beside the real backup (exit %d):\n%s", l.code, l.out)
			}
			before := d.deviceState(t)
			r := d.keeper(d.env, "restore", "--force", "--backup", other)
			if r.code != 3 || !strings.Contains(r.out, "not authenticated") {
				t.Errorf("restore of a moved manifest: exit %d, want 3 saying it is not authenticated:\n%s", r.code, r.out)
			}
			d.assertUnchanged(t, "a refused restore of a moved manifest", before)
		})

		t.Run("a re-signed manifest missing a media blob", func(t *testing.T) {
			defer putBack(t)
			hostileInputs.Add(1)
			mm := anyMap(m)
			mm["media_blobs"] = blobsOf(m)[1:]
			d.putManifest(t, id, mm, true)
			before := d.deviceState(t)
			r := d.keeper(d.env, "restore", "--force")
			if r.code == 0 || !strings.Contains(r.out, "damaged") || !strings.Contains(r.out, "does not list") {
				t.Errorf("exit %d, want a refusal saying the backup is damaged:\n%s", r.code, r.out)
			}
			if strings.Contains(r.out, "failed midway") {
				t.Errorf("the refusal came after the restore had begun:\n%s", r.out)
			}
			d.assertUnchanged(t, "a restore of a manifest missing a blob", before)
			if slices.Contains(d.markers(), "restore-incomplete") {
				t.Error("the refused restore marked the device as half-restored")
			}
		})

		t.Run("a forged owner record", func(t *testing.T) {
			defer putBack(t)
			for _, tc := range []struct {
				forged string
				// plausible: an owner record as releases before authentication
				// wrote it, which a refusal may take at its word.
				plausible bool
			}{
				{`{"hello":"world"}`, false},
				{`{"format":1,"device":"someone-else","local_domain":"social.example.test","since":"2026-01-01T00:00:00Z"}`, true},
				{`{"format":1,"device":"someone-else","local_domain":"evil.example","since":"2026-01-01T00:00:00Z"}`, true},
				{`{"format":2,"kind":"owner","body":"e30=","hmac":"00"}`, false},
				{`{"format":2,"kind":"manifest","body":"e30=","hmac":"zz"}`, false},
				{`{"format":3}`, false},
				{"\x00\xff not json at all", false},
				{`[]`, false},
			} {
				hostileInputs.Add(1)
				d.put(t, "owner.json", []byte(tc.forged))
				before := d.contents(t)
				r := d.keeper(d.env, "backup")
				if r.code != 3 {
					t.Errorf("owner.json %q: backup exit %d, want 3:\n%s", tc.forged, r.code, r.out)
				}
				// A record that is no owner record at all is damage to name,
				// with its remedy - not another instance to move away from.
				if !tc.plausible && !strings.Contains(r.out, "owner.json") {
					t.Errorf("owner.json %q: the refusal does not say owner.json is the problem:\n%s", tc.forged, r.out)
				}
				if strings.Contains(r.out, "backups of ,") || strings.Contains(r.out, "device ,") || strings.Contains(r.out, "device .") {
					t.Errorf("owner.json %q: the refusal quotes the empty fields of the forged record:\n%s", tc.forged, r.out)
				}
				assertSameObjects(t, fmt.Sprintf("a backup refused by owner.json %q", tc.forged), before, d.contents(t))
			}
			putBack(t)
			d.backup(t) // the real record back, backups go on
		})
	})
}

// --- 2. the restore staging area ------------------------------------------------

// The media staging area of a restore sits in the media volume: a backup
// never stores what is there (it removes it), and a restore empties it
// before it stages anything - whatever was planted there, symlinks too.
func TestFaultRestoreStagingIsNeverBackedUpAndEmptiedFirst(t *testing.T) {
	t.Parallel()
	tally(t)
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		staging := filepath.Join(d.media, ".mastokeeper-restore")
		aPNG := filepath.Join(d.media, "media_attachments/files/109/000/001/original/a.png")
		a, _ := os.ReadFile(aPNG)
		planted := filepath.Join(staging, strings.Repeat("c", 64))
		writeRandom(t, planted, 100_000)
		writeRandom(t, filepath.Join(staging, "nested/deep/x.bin"), 10_000)
		writeRandom(t, filepath.Join(d.media, ".other-hidden/y.bin"), 10_000)
		faultsInjected.Add(3)

		r := d.keeper(d.env, "backup")
		if r.code != 0 {
			t.Fatalf("backup exited %d:\n%s", r.code, r.out)
		}
		id := backupIDs(r.out)[0]
		if !strings.Contains(r.out, "removed what an interrupted restore left") {
			t.Errorf("the backup does not say it removed the staging area:\n%s", r.out)
		}
		if exists(staging) {
			t.Error("the staging area is still there after a backup")
		}
		if n := mediaFilesOf(d.manifest(t, id)); n != 3 {
			t.Errorf("the backup stored %d media files, want the 3 uploads only", n)
		}
		if l := d.keeper(d.env, "backup", "list"); !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(id) + `\s.*\s3\s+verified`).MatchString(l.out) {
			t.Errorf("backup list does not show 3 media files:\n%s", l.out)
		}
		for key := range d.objects(t) {
			if strings.Contains(key, strings.Repeat("c", 64)) {
				t.Errorf("the planted staging file was stored as %s", key)
			}
		}

		// A restore empties the staging area first: a planted file under the
		// name of a blob it needs does not become that upload.
		writeRandom(t, filepath.Join(staging, sha(a)), len(a))
		outsideDir := t.TempDir()
		writeRandom(t, filepath.Join(outsideDir, "keep.bin"), 1000)
		os.Symlink(outsideDir, filepath.Join(staging, "link"))
		faultsInjected.Add(2)
		outsideBefore := tree(t, outsideDir)
		if r := d.keeper(d.env, "restore", "--force"); r.code != 0 {
			t.Fatalf("restore exited %d:\n%s", r.code, r.out)
		}
		if got, _ := os.ReadFile(aPNG); !bytes.Equal(got, a) {
			t.Error("a.png was restored from what was planted in the staging area")
		}
		if exists(staging) {
			t.Error("the staging area is still there after the restore")
		}
		if !reflect.DeepEqual(outsideBefore, tree(t, outsideDir)) {
			t.Error("emptying the staging area changed a directory outside it, through a symlink")
		}

		// The staging area itself a symlink to a directory outside: removed as
		// a link by the backup and by the restore, never followed.
		for _, job := range [][]string{{"backup"}, {"restore", "--force"}} {
			os.RemoveAll(staging)
			if err := os.Symlink(outsideDir, staging); err != nil {
				t.Fatal(err)
			}
			faultsInjected.Add(1)
			if r := d.keeper(d.env, job...); r.code != 0 {
				t.Fatalf("%v with the staging area a symlink exited %d:\n%s", job, r.code, r.out)
			}
			if !reflect.DeepEqual(outsideBefore, tree(t, outsideDir)) {
				t.Errorf("%v wrote or deleted through the staging area's symlink: %v", job, tree(t, outsideDir))
			}
			if fi, err := os.Lstat(staging); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				t.Errorf("%v left the symlinked staging area in place", job)
			}
		}
	})
}

// --- 3. symlinks planted in the media volume -----------------------------------

// A symlink in the media volume is never followed: a backup does not store
// what it points to, and a restore replaces it by the restored file (or a
// real directory), leaving what it pointed to untouched.
func TestFaultSymlinksInTheMediaVolume(t *testing.T) {
	t.Parallel()
	tally(t)
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	uploads := localMedia(t, d.media)

	// Before the backup: links to a directory and files outside the volume.
	outsideDir := t.TempDir()
	writeRandom(t, filepath.Join(outsideDir, "secret.bin"), 20_000)
	writeRandom(t, filepath.Join(outsideDir, "files/109/000/001/original/a.png"), 30_000)
	outsideFile := filepath.Join(t.TempDir(), "outside.jpg")
	writeRandom(t, outsideFile, 40_000)
	for link, to := range map[string]string{
		"accounts/headers": outsideDir,
		"media_attachments/files/109/000/004/original/link.png": outsideFile,
		"media_attachments/rel.json":                            "../../keeper/instance.json",
		"site_uploads":                                          "/",
	} {
		p := filepath.Join(d.media, link)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(to, p); err != nil {
			t.Fatal(err)
		}
		hostileInputs.Add(1)
	}
	id := d.backup(t)
	if n := mediaFilesOf(d.manifest(t, id)); n != len(uploads) {
		t.Errorf("the backup stored %d media files, want the %d uploads (no symlink followed)", n, len(uploads))
	}
	objs := d.objects(t)
	for _, p := range []string{filepath.Join(outsideDir, "secret.bin"), filepath.Join(outsideDir, "files/109/000/001/original/a.png"), outsideFile, filepath.Join(d.stateDir, "instance.json")} {
		b, _ := os.ReadFile(p)
		if _, ok := objs[blobKey(sha(b))]; ok {
			t.Errorf("the backup stored %s, reached through a symlink", p)
		}
	}

	// Before the restore: a directory on the way and a file of the backup
	// replaced by symlinks to the outside.
	os.RemoveAll(filepath.Join(d.media, "media_attachments"))
	outsideDir2 := t.TempDir()
	writeRandom(t, filepath.Join(outsideDir2, "files/109/000/001/original/a.png"), 1000)
	writeRandom(t, filepath.Join(outsideDir2, "files/109/000/002/original/b.mp4"), 1000)
	if err := os.Symlink(outsideDir2, filepath.Join(d.media, "media_attachments")); err != nil {
		t.Fatal(err)
	}
	me := filepath.Join(d.media, "accounts/avatars/000/000/001/original/me.jpg")
	os.Remove(me)
	if err := os.Symlink(outsideFile, me); err != nil {
		t.Fatal(err)
	}
	faultsInjected.Add(2)
	outside := map[string]map[string]string{outsideDir: tree(t, outsideDir), outsideDir2: tree(t, outsideDir2), filepath.Dir(outsideFile): tree(t, filepath.Dir(outsideFile))}
	if r := d.keeper(d.env, "restore", "--force"); r.code != 0 {
		t.Fatalf("restore --force exited %d:\n%s", r.code, r.out)
	}
	for dir, before := range outside {
		if after := tree(t, dir); !reflect.DeepEqual(before, after) {
			t.Errorf("the restore changed %s, outside the media volume:\nbefore %v\nafter  %v", dir, before, after)
		}
	}
	for rel, want := range uploads {
		p := filepath.Join(d.media, rel)
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s is not a regular file after the restore (%v)", rel, err)
			continue
		}
		for dir := filepath.Dir(p); dir != d.media; dir = filepath.Dir(dir) {
			if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
				t.Errorf("%s is not a real directory after the restore", dir)
			}
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, want) {
			t.Errorf("%s was not restored byte for byte", rel)
		}
	}
	if !exists(filepath.Join(d.stateDir, "instance.json")) {
		t.Error("the instance record is gone")
	}
}

// --- 4. a damaged sealed key ----------------------------------------------------

// The sealed backup key is what a new device needs: damaged or deleted on
// the target, it is sealed again by the next backup, which says so, and a
// new device holding only the passphrase restores.
func TestFaultDamagedSealedKeyIsSealedAgain(t *testing.T) {
	t.Parallel()
	tally(t)
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		old := newBackupDevice(t, target)
		if _, err := old.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) VALUES (1, 'sealed again')`); err != nil {
			t.Fatal(err)
		}
		want := old.fingerprint(t)
		id := old.backup(t)
		damages := []string{"flipped", "deleted"}
		if target.name == "file" { // the same code path on every target
			damages = append(damages, "truncated")
		}
		for _, damage := range damages {
			switch damage {
			case "flipped":
				old.flip(t, "keys/backup-key.age", func(n int) int { return n / 2 })
			case "deleted":
				old.del(t, "keys/backup-key.age")
			case "truncated":
				old.put(t, "keys/backup-key.age", old.read(t, "keys/backup-key.age")[:40])
			}
			faultsInjected.Add(1)
			if r := old.keeper(old.env, "backup", "verify", id); r.code == 0 || !strings.Contains(r.out, "sealed key") {
				t.Errorf("%s: verify passed with a damaged sealed key (exit %d):\n%s", damage, r.code, r.out)
			}
			time.Sleep(10 * time.Millisecond)
			r := old.keeper(old.env, "backup")
			if r.code != 0 || !strings.Contains(r.out, "sealing it again") {
				t.Errorf("%s: the next backup (exit %d) did not say it sealed the key again:\n%s", damage, r.code, r.out)
			}
			if ids := backupIDs(r.out); len(ids) == 1 {
				id = ids[0]
			}
			old.verify(t, id)
		}
		nu := newDevice(t, old)
		r := nu.keeper(nu.env, "restore")
		if r.code != 0 || !strings.Contains(r.out, "restored backup "+id) {
			t.Fatalf("a new device with the passphrase could not restore after the key was sealed again (exit %d):\n%s", r.code, r.out)
		}
		assertSameData(t, want, nu.fingerprint(t))
	})
}

// --- 5. purge and provision anew -------------------------------------------------

// Purging the device's data and provisioning again with the same domain on
// the same device makes a new instance, with a new backup key, pointed at
// the old instance's backups: it must not write there - not the owner
// record, not the sealed key, not a backup, not a deletion - and must say
// how to take the old instance back or to get a place of its own.
func TestFaultPurgedAndProvisionedAnewDoesNotTouchTheOldBackups(t *testing.T) {
	t.Parallel()
	tally(t)
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		const uuid = "BALENA_DEVICE_UUID=0123456789abcdef0123456789abcdef"
		old := newBackupDevice(t, target)
		old.env = append(old.env, uuid)
		if _, err := old.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) VALUES (1, 'before the purge')`); err != nil {
			t.Fatal(err)
		}
		want := old.fingerprint(t)
		oldRecord := old.record()
		id := old.backup(t)

		// The purge: the same device, a new volume.
		faultsInjected.Add(1)
		nu := newDevice(t, old)
		nu.provision()
		if nu.record().InstanceID == oldRecord.InstanceID {
			t.Fatal("the new instance has the old one's ID")
		}
		before := old.contents(t)
		r := nu.keeper(nu.env, "backup")
		if r.code != 3 || !strings.Contains(r.out, "'mastokeeper restore --force'") || !strings.Contains(r.out, "prefix") {
			t.Errorf("the new instance's backup: exit %d, want 3 naming 'mastokeeper restore --force' and another prefix:\n%s", r.code, r.out)
		}
		assertSameObjects(t, "the new instance's refused backup", before, old.contents(t))
		if l := nu.keeper(nu.env, "backup", "verify", id); l.code == 0 {
			t.Errorf("the new instance verified the old one's backup:\n%s", l.out)
		}
		assertSameObjects(t, "the new instance's refused verify", before, old.contents(t))

		// Without the owner record (as its message allows, for a damaged
		// one) the backups themselves decide: still the old instance's.
		ownerBytes := old.read(t, "owner.json")
		old.del(t, "owner.json")
		faultsInjected.Add(1)
		before = old.contents(t)
		r = nu.keeper(nu.env, "backup")
		if r.code != 3 || !strings.Contains(r.out, "'mastokeeper restore --force'") {
			t.Errorf("without owner.json: exit %d, want 3:\n%s", r.code, r.out)
		}
		assertSameObjects(t, "the new instance's refused backup without owner.json", before, old.contents(t))
		old.put(t, "owner.json", ownerBytes)

		// The old instance is taken back, as the message says (the same
		// on every target: once is enough).
		if target.name != "file" {
			return
		}
		if r := nu.keeper(nu.env, "restore", "--force"); r.code != 0 || !strings.Contains(r.out, "restored backup "+id) {
			t.Fatalf("restore --force on the purged device exited %d:\n%s", r.code, r.out)
		}
		assertSameData(t, want, nu.fingerprint(t))
		if nu.record().InstanceID != oldRecord.InstanceID {
			t.Error("the restored instance has another ID")
		}
		second := nu.backup(t)
		nu.verify(t, second)
	})
}

// --- 6. backups at once ------------------------------------------------------------

// Two backups started at the same moment: one waits for the other's job
// lock, both succeed with their own IDs, and what is kept verifies.
func TestFaultTwoBackupsAtOnce(t *testing.T) {
	t.Parallel()
	tally(t)
	// The job lock is local; the free-ID check asks the target.
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		faultsInjected.Add(1)
		a := d.start(d.env, "backup")
		b := d.start(d.env, "backup")
		ca, cb := a.wait(t, 3*time.Minute), b.wait(t, 3*time.Minute)
		logs := d.allLogs()
		if ca != 0 || cb != 0 {
			t.Fatalf("concurrent backups exited %d and %d:\n%s", ca, cb, logs)
		}
		if !strings.Contains(logs, "waiting for the job that is running") {
			t.Errorf("neither backup waited for the other's job lock")
		}
		ids := backupIDs(logs)
		if len(ids) != 2 || ids[0] == ids[1] {
			t.Fatalf("backup IDs %v; want two distinct", ids)
		}
		slices.Sort(ids)
		// One backup a day is kept: the second prunes the first, whole.
		d.verify(t, ids[1])
		listed := d.list(t)
		if len(listed) == 2 {
			d.verify(t, ids[0])
		} else {
			if len(listed) != 1 || !strings.HasPrefix(listed[0], ids[1]) || !strings.Contains(logs, "deleted a backup the retention policy does not keep") {
				t.Errorf("listed %q; want both, or the newest with the other pruned by retention", listed)
			}
			for key := range d.objects(t) {
				if strings.HasPrefix(key, "snapshots/"+ids[0]+"/") {
					t.Errorf("%s of the pruned backup is left", key)
				}
			}
		}
	})
}

// --- 7. media changing during a backup --------------------------------------------

// Thousands of uploads, half deleted and others appended to while the
// backup walks them, and one file growing throughout: the backup succeeds,
// verifies, and restores every file as some content it really had - never a
// torn mix.
func TestFaultMediaChangingDuringTheBackup(t *testing.T) {
	t.Parallel()
	tally(t)
	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	const n = 2000
	bulk := func(i int) string { return fmt.Sprintf("media_attachments/files/bulk/%02d/%04d.bin", i%20, i) }
	orig := map[string][]byte{}
	for i := range n {
		b := make([]byte, 512+i%1024)
		rand.Read(b)
		p := filepath.Join(old.media, bulk(i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		orig[bulk(i)] = b
	}
	untouched := localMedia(t, old.media)
	growing := filepath.Join(old.media, "media_attachments/files/growing.bin")
	writeRandom(t, growing, 100_000)
	suffix := []byte("appended while the backup ran")

	k := old.start(old.env, "backup")
	if !k.waitFor("database dumped", 90*time.Second) {
		t.Fatalf("the backup never reached its media:\n%s", old.allLogs())
	}
	walkStart := time.Now()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		// The walk goes through bulk/00 to bulk/19; the changes go the
		// other way, paced, so that they cross the walk: files ahead of it
		// vanish or grow before it reads them, files behind it after, and
		// some while it reads them. bulk/18 goes as a whole directory.
		defer wg.Done()
		for dir := 19; dir >= 0; dir-- {
			if dir == 18 {
				os.RemoveAll(filepath.Join(old.media, filepath.Dir(bulk(18))))
				continue
			}
			for i := dir; i < n; i += 20 {
				if i%2 == 0 {
					os.Remove(filepath.Join(old.media, bulk(i)))
				} else if i%3 == 0 {
					if f, err := os.OpenFile(filepath.Join(old.media, bulk(i)), os.O_APPEND|os.O_WRONLY, 0); err == nil {
						f.Write(suffix)
						f.Close()
					}
				}
				time.Sleep(3 * time.Millisecond)
			}
		}
	}()
	go func() { // a file that never stops growing
		defer wg.Done()
		chunk := make([]byte, 8192)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			f, err := os.OpenFile(growing, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return
			}
			rand.Read(chunk)
			f.Write(chunk)
			f.Close()
		}
	}()
	code := k.wait(t, 5*time.Minute)
	t.Logf("the media walk and upload took %s", time.Since(walkStart).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	faultsInjected.Add(3) // deletions, appends, a growing file
	logs := old.allLogs()
	ids := backupIDs(logs)
	if code != 0 || len(ids) != 1 {
		t.Fatalf("the backup of changing media exited %d:\n%s", code, logs)
	}
	id := ids[0]
	if m := regexp.MustCompile(`media backed up.*`).FindString(logs); m != "" {
		t.Logf("%s", m)
	}
	old.verify(t, id)

	nu := newDevice(t, old)
	if r := nu.keeper(nu.env, "restore"); r.code != 0 {
		t.Fatalf("restore exited %d:\n%s", r.code, r.out)
	}
	restored := localMedia(t, nu.media)
	for rel, b := range untouched {
		if strings.Contains(rel, "/bulk/") {
			continue
		}
		if !bytes.Equal(restored[rel], b) {
			t.Errorf("%s, never changed, was not restored byte for byte", rel)
		}
	}
	kept, deleted, deletedKept, appended := 0, 0, 0, 0
	for i := range n {
		rel := bulk(i)
		got, ok := restored[rel]
		switch {
		case !ok && (i%2 == 0):
			deleted++ // deleted before the walk reached it
		case !ok:
			t.Errorf("%s was never deleted but is not restored", rel)
		case bytes.Equal(got, orig[rel]):
			kept++
			if i%2 == 0 {
				deletedKept++ // read before it was deleted
			}
		case i%3 == 0 && i%2 == 1 && bytes.Equal(got, append(slices.Clone(orig[rel]), suffix...)):
			kept++
			appended++
		default:
			t.Errorf("%s was restored as %d bytes that the file never held", rel, len(got))
		}
	}
	t.Logf("bulk files: %d restored (%d of them deleted after the walk read them, %d with what was appended), %d deleted before the walk reached them",
		kept, deletedKept, appended, deleted)
	if deletedKept == 0 || deleted == 0 {
		t.Logf("the changes did not cross the walk this time: the race was not exercised")
	}
	final, _ := os.ReadFile(growing)
	if got, ok := restored["media_attachments/files/growing.bin"]; ok && !bytes.HasPrefix(final, got) {
		t.Errorf("the growing file was restored as %d bytes that it never held", len(got))
	} else if !ok && !strings.Contains(logs, "kept changing") {
		t.Error("the growing file was left out without a word")
	}
	// What the new device restored is what the backup says: its own
	// backup of it verifies, and so does the old one.
	nu.provision(nu.env...)
	nu.verify(t, nu.backup(t))
}

// --- 8. an unreadable manifest ---------------------------------------------------

// Garbage where a manifest should be - older or newer than the real
// backups - is listed as unusable and never stops listing, backing up,
// restoring or pruning the others; retention never deletes it, nor the
// objects beside it, nor media while it is there.
func TestFaultAnUnreadableManifestStopsNothing(t *testing.T) {
	t.Parallel()
	tally(t)
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	d.env = append(d.env, "BACKUP_KEEP_DAILY=0", "BACKUP_KEEP_WEEKLY=0")
	first := d.backup(t)
	const oldID, newID = "20200101T000000.000Z", "20991231T235959.000Z"
	garbage := make([]byte, 3000)
	rand.Read(garbage)
	d.put(t, manifestKey(oldID), garbage)
	d.put(t, "snapshots/"+oldID+"/db.dump.zst.age", garbage[:100])
	d.put(t, manifestKey(newID), []byte(`{"format":2,"kind":"manifest","body":"!!","hmac":"zz"}`))
	orphan := blobKey(strings.Repeat("0", 64))
	d.put(t, orphan, garbage[:50])
	root := fileRoot(d)
	past := time.Now().Add(-72 * time.Hour)
	for _, key := range []string{"snapshots/" + oldID + "/db.dump.zst.age", manifestKey(oldID), manifestKey(newID), orphan} {
		os.Chtimes(filepath.Join(root, key), past, past)
	}
	faultsInjected.Add(4)

	l := d.keeper(d.env, "backup", "list")
	for _, re := range []string{`(?m)^` + first + `\s.*verified`, `(?m)^` + oldID + `\s+unusable:`, `(?m)^` + newID + `\s+unusable:`} {
		if !regexp.MustCompile(re).MatchString(l.out) {
			t.Errorf("backup list (exit %d) lacks %s:\n%s", l.code, re, l.out)
		}
	}
	time.Sleep(10 * time.Millisecond)
	r := d.keeper(d.env, "backup")
	ids := backupIDs(r.out)
	if r.code != 0 || len(ids) != 1 {
		t.Fatalf("backup beside unreadable manifests exited %d:\n%s", r.code, r.out)
	}
	second := ids[0]
	if !strings.Contains(r.out, "cannot be used; it is kept") {
		t.Errorf("the backup does not warn about the unusable manifests:\n%s", r.out)
	}
	objs := d.objects(t)
	for _, key := range []string{manifestKey(oldID), manifestKey(newID), "snapshots/" + oldID + "/db.dump.zst.age", orphan} {
		if _, ok := objs[key]; !ok {
			t.Errorf("retention deleted %s while an unreadable manifest is there", key)
		}
	}
	if _, ok := objs[manifestKey(first)]; ok {
		t.Errorf("retention (0 days, 0 weeks) kept %s beside the newest", first)
	}
	if got := usable(t, d); !slices.Equal(got, []string{second}) {
		t.Errorf("usable backups listed: %q; want only %s", got, second)
	}
	r = d.keeper(d.env, "restore", "--force")
	if r.code != 0 || !strings.Contains(r.out, "restored backup "+second) {
		t.Errorf("the default restore beside unreadable manifests exited %d:\n%s", r.code, r.out)
	}

	// Once the garbage is removed by hand, retention frees the orphan blob:
	// it was kept for the unreadable manifests' sake only.
	for key := range d.objects(t) {
		if strings.HasPrefix(key, "snapshots/"+oldID+"/") || strings.HasPrefix(key, "snapshots/"+newID+"/") {
			d.del(t, key)
		}
	}
	d.backup(t)
	if _, ok := d.objects(t)[orphan]; ok {
		t.Error("without unreadable manifests, retention still keeps a blob no backup needs")
	}
}

// --- 9. kill -9 ------------------------------------------------------------------

// A backup killed at any point leaves nothing that looks complete but is
// not, and the next backup (and a restore of it) works.
func TestFaultBackupKilledAtManyPoints(t *testing.T) {
	t.Parallel()
	tally(t)
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	d.env = append(d.env, "BACKUP_KEEP_DAILY=0", "BACKUP_KEEP_WEEKLY=0")
	if _, err := d.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'killed ' || g FROM generate_series(1, 500) g`); err != nil {
		t.Fatal(err)
	}
	want := d.fingerprint(t)
	// Killed while sealing the key (the first backup's scrypt).
	k := d.start(d.env, "backup")
	time.Sleep(400 * time.Millisecond)
	k.kill()
	faultsInjected.Add(1)
	d.backup(t)
	// ("backup started", "database dumped" and "media backed up" are
	// TestBackupKilledMidwayNeverLooksComplete's, on every target.)
	for _, at := range []string{"media backed up", "backup complete", "deleted a backup the retention policy does not keep"} {
		time.Sleep(10 * time.Millisecond)
		k := d.start(d.env, "backup")
		if !k.waitFor(at, 90*time.Second) {
			t.Fatalf("the backup never logged %q:\n%s", at, d.allLogs())
		}
		k.kill()
		faultsInjected.Add(1)
		for _, line := range d.list(t) {
			id, _, _ := strings.Cut(line, " ")
			if r := d.keeper(d.env, "backup", "verify", id); r.code != 0 {
				t.Errorf("killed at %q: listed backup %s does not verify:\n%s", at, id, r.out)
			}
		}
		time.Sleep(10 * time.Millisecond)
		d.verify(t, d.backup(t))
	}
	nu := newDevice(t, d)
	if r := nu.keeper(nu.env, "restore"); r.code != 0 {
		t.Fatalf("restore after the kills exited %d:\n%s", r.code, r.out)
	}
	assertSameData(t, want, nu.fingerprint(t))
}

// holdBlob replaces a media blob on a file target by a FIFO: whoever opens
// it waits there, until release puts the blob back.
func holdBlob(t *testing.T, d *backupDevice, sum string) (release func()) {
	t.Helper()
	p := filepath.Join(fileRoot(d), blobKey(sum))
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		os.Remove(p)
		if err := os.WriteFile(p, orig, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// waitStaged waits until the restore staging area of the media volume has
// n entries.
func waitStaged(t *testing.T, d *backupDevice, n int) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if e, _ := os.ReadDir(filepath.Join(d.media, ".mastokeeper-restore")); len(e) >= n {
			time.Sleep(200 * time.Millisecond)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restore never staged %d media blobs:\n%s", n, d.allLogs())
		}
	}
}

// A restore killed at any point - before it changed anything, while it
// stages media, while pg_restore runs - is finished by the next restore,
// without --force. A restore killed while staging media on a running
// instance leaves staged files that the next backup removes and never
// stores.
func TestFaultRestoreKilledAtManyPoints(t *testing.T) {
	t.Parallel()
	tally(t)
	old, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) SELECT 1, 'kill me ' || g FROM generate_series(1, 2000) g`)
	id := strings.Fields(old.list(t)[0])[0]
	blobs := blobsOf(old.manifest(t, id))
	uploads := localMedia(t, old.media)

	t.Run("while staging media, then a backup", func(t *testing.T) {
		release := holdBlob(t, old, blobs[len(blobs)-1])
		k := old.start(old.env, "restore", "--force", "--no-safety-backup")
		waitStaged(t, old, len(blobs))
		k.kill()
		release()
		faultsInjected.Add(1)
		if slices.Contains(old.markers(), "restore-incomplete") {
			t.Fatal("a restore killed while staging marked the device half-restored")
		}
		if !reflect.DeepEqual(want, old.fingerprint(t)) {
			t.Error("a restore killed while staging changed the database")
		}
		r := old.keeper(old.env, "backup")
		ids := backupIDs(r.out)
		if r.code != 0 || len(ids) != 1 {
			t.Fatalf("the backup after a killed restore exited %d:\n%s", r.code, r.out)
		}
		if n := mediaFilesOf(old.manifest(t, ids[0])); n != len(uploads) {
			t.Errorf("the backup after a killed restore stored %d media files, want the %d uploads", n, len(uploads))
		}
		if exists(filepath.Join(old.media, ".mastokeeper-restore")) {
			t.Error("the backup left the killed restore's staged files")
		}
		if r := old.keeper(old.env, "restore", "--force", "--no-safety-backup"); r.code != 0 {
			t.Fatalf("the next restore exited %d:\n%s", r.code, r.out)
		}
		assertSameData(t, want, old.fingerprint(t))
	})

	t.Run("onto a new device", func(t *testing.T) {
		id := strings.Fields(old.list(t)[0])[0] // the subtest above took a newer one
		nu := newDevice(t, old)
		path, held := holdPgRestore(t)
		for _, at := range []string{"restoring", "staging media", "backup downloaded and verified", "pg_restore", "staging media again", "pg_restore again"} {
			switch {
			case strings.HasPrefix(at, "pg_restore"):
				nu.killWhenHeld(t, path, held, "restore")
				if !slices.Contains(nu.markers(), "restore-incomplete") {
					t.Errorf("killed in pg_restore: markers %v, want restore-incomplete", nu.markers())
				}
			case strings.HasPrefix(at, "staging media"):
				release := holdBlob(t, old, blobs[len(blobs)-1])
				k := nu.start(nu.env, "restore")
				waitStaged(t, nu, len(blobs))
				k.kill()
				release()
			default:
				k := nu.start(nu.env, "restore")
				if !k.waitFor(at, 90*time.Second) {
					t.Fatalf("the restore never logged %q:\n%s", at, nu.allLogs())
				}
				k.kill()
			}
			faultsInjected.Add(1)
			if at == "restoring" || at == "staging media" {
				if nu.recordBytes() != nil {
					t.Errorf("killed at %q, before it changed anything: the device has an instance record", at)
				}
			}
			for _, l := range readyMarkers(nu.stack) {
				t.Errorf("killed at %q: the device is marked %s", at, l)
			}
		}
		r := nu.keeper(nu.env, "restore")
		if r.code != 0 || !strings.Contains(r.out, "restored backup "+id) {
			t.Fatalf("the restore after the kills exited %d:\n%s", r.code, r.out)
		}
		assertSameData(t, want, nu.fingerprint(t))
		if slices.Contains(nu.markers(), "restore-incomplete") {
			t.Error("still marked half-restored")
		}
		for rel, b := range uploads {
			if got, _ := os.ReadFile(filepath.Join(nu.media, rel)); !bytes.Equal(got, b) {
				t.Errorf("%s was not restored byte for byte", rel)
			}
		}
		if exists(filepath.Join(nu.media, ".mastokeeper-restore")) || exists(filepath.Join(nu.stateDir, "restore-staging")) {
			t.Error("the finished restore left its staging areas")
		}
	})
}

// readyMarkers are the ready-VERSION markers: a device with one serves.
func readyMarkers(s *stack) []string {
	var out []string
	for _, m := range s.markers() {
		if strings.HasPrefix(m, "ready-") {
			out = append(out, m)
		}
	}
	return out
}

// A device running its own instance - other secrets, another PostgreSQL
// superuser password - takes another device's instance over; the restore
// is killed while pg_restore runs (after the server got the new password,
// before the record that holds it was written). Running the same restore
// again finishes it.
func TestFaultKilledRestoreOverAnotherInstanceIsFinishedByTheSameCommand(t *testing.T) {
	t.Parallel()
	tally(t)
	a, want := backedUpWith(t, `INSERT INTO statuses (account_id, text) SELECT 1, 'from A ' || g FROM generate_series(1, 1000) g`)
	b := newBackupDevice(t, backupTarget{"file", fileTarget})
	if b.record().Secrets["POSTGRES_PASSWORD"] == a.record().Secrets["POSTGRES_PASSWORD"] {
		t.Fatal("the two instances share secrets")
	}
	args := []string{"restore", "--force", "--from", a.target()}
	path, held := holdPgRestore(t)
	b.killWhenHeld(t, path, held, args...)
	faultsInjected.Add(1)
	if !slices.Contains(b.markers(), "restore-incomplete") {
		t.Errorf("markers %v, want restore-incomplete", b.markers())
	}
	if p := b.keeper(b.env, "provision"); p.code != 3 {
		t.Errorf("the keeper provisioned a half-restored device (exit %d):\n%s", p.code, p.out)
	}
	r := b.keeper(b.env, args...)
	if r.code != 0 {
		t.Fatalf("the same restore, run again, exited %d:\n%s", r.code, r.out)
	}
	if !reflect.DeepEqual(a.record(), b.record()) {
		t.Error("the finished restore did not give the device A's instance record")
	}
	assertSameData(t, want, b.fingerprint(t))
	b.provision(b.env...)
}

// --- 10. a full disk ---------------------------------------------------------------

// The media volume fills up while the restore stages media: it stops,
// says so in words, leaves nothing behind, and succeeds once there is room.
func TestFaultFullDiskWhileStaging(t *testing.T) {
	t.Parallel()
	tally(t)
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	for i := range 4 {
		writeRandom(t, filepath.Join(old.media, fmt.Sprintf("media_attachments/files/big/%d.bin", i)), 8_000_000)
	}
	old.backup(t)
	nu := newDevice(t, old)
	os.MkdirAll(nu.media, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", nu.media).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if out, err := exec.Command("umount", nu.media).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", nu.media, err, out)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	faultsInjected.Add(1)
	r := nu.keeper(nu.env, "restore")
	if r.code == 0 || !strings.Contains(r.out, "ran out of space") || !strings.Contains(r.out, "nothing was changed") {
		t.Errorf("restore onto a full media volume: exit %d, want a failure saying it ran out of space:\n%s", r.code, r.out)
	}
	if nu.recordBytes() != nil {
		t.Error("the failed restore wrote an instance record")
	}
	if e, _ := os.ReadDir(nu.media); len(e) != 0 {
		t.Errorf("the failed restore left %d entries on the media volume", len(e))
	}
	unmount()
	if r := nu.keeper(nu.env, "restore"); r.code != 0 {
		t.Fatalf("the restore with room exited %d:\n%s", r.code, r.out)
	}
}

// decryptWith opens an object encrypted to the device's backup key.
func decryptWith(t *testing.T, backupKey string, stored []byte) []byte {
	t.Helper()
	id, err := age.ParseX25519Identity(backupKey)
	if err != nil {
		t.Fatal(err)
	}
	r, err := age.Decrypt(bytes.NewReader(stored), id)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A backup made by a release before instance IDs (format 1), restored with
// --trust-old-format, gives the instance a new ID but keeps its backup key:
// the newer, authenticated backups of the same key then carry another
// instance ID. Retention must not take them for leftovers of interrupted
// backups: whole, verified backups are never deleted as "stale".
func TestFaultRetentionKeepsWholeBackupsOfTheSameKeyUnderAnotherInstanceID(t *testing.T) {
	t.Parallel()
	tally(t)
	old := newBackupDevice(t, backupTarget{"file", fileTarget})
	newer := old.backup(t)
	key := old.backupKey(t)

	// The same data as a backup of an old release, an hour earlier: format
	// 1, no instance ID in its manifest nor in its instance record.
	at, _ := time.Parse("20060102T150405.000Z", newer)
	older := at.Add(-time.Hour).Format("20060102T150405.000Z")
	var rec map[string]any
	json.Unmarshal(decryptWith(t, key, old.read(t, "snapshots/"+newer+"/secrets.json.age")), &rec)
	delete(rec, "instance_id")
	plain, _ := json.Marshal(rec)
	secrets := encryptFor(t, key, plain)
	old.put(t, "snapshots/"+older+"/secrets.json.age", secrets)
	for _, name := range []string{"db.dump.zst.age", "media-index.json.age"} {
		old.put(t, "snapshots/"+older+"/"+name, old.read(t, "snapshots/"+newer+"/"+name))
	}
	m := old.manifest(t, newer)
	m["id"], m["created_at"] = older, at.Add(-time.Hour).Format(time.RFC3339Nano)
	delete(m, "instance_id")
	setObject(m, "secrets.json.age", secrets)
	old.putManifest(t, older, m, false)

	nu := newDevice(t, old)
	if r := nu.keeper(nu.env, "restore", "--trust-old-format", "--backup", older); r.code != 0 {
		t.Fatalf("restore --trust-old-format of the old-release backup exited %d:\n%s", r.code, r.out)
	}
	if nu.record().InstanceID == old.record().InstanceID || nu.backupKey(t) != key {
		t.Fatal("the restored instance should have a new ID and the same backup key")
	}
	// Days pass.
	past := time.Now().Add(-72 * time.Hour)
	root := fileRoot(old)
	for k := range old.objects(t) {
		os.Chtimes(filepath.Join(root, k), past, past)
	}
	faultsInjected.Add(1)
	before := old.objects(t)
	nu.provision(nu.env...)
	r := nu.keeper(nu.env, "backup")
	if r.code != 0 {
		t.Fatalf("backup after the restore exited %d:\n%s", r.code, r.out)
	}
	after := old.objects(t)
	for k := range before {
		if strings.HasPrefix(k, "snapshots/"+newer+"/") {
			if _, ok := after[k]; !ok {
				t.Errorf("retention deleted %s, of a whole, verified backup authenticated by this key, as if it were a leftover", k)
			}
		}
	}
	if !strings.Contains(nu.keeper(nu.env, "backup", "list").out, newer) {
		t.Errorf("backup %s is gone from the list", newer)
	}
}

// --- 6b. a restore, a backup and an upgrade's backup at once ----------------------

// A restore, a backup typed in a terminal and the backup an upgrade takes
// before migrating, all started together, take turns on the job lock: each
// finishes, no backup catches the restore halfway (every backup listed
// verifies), and the device ends with the data of the restored backup or
// of a backup taken after it.
func TestFaultRestoreBackupAndUpgradeBackupAtOnce(t *testing.T) {
	t.Parallel()
	tally(t)
	forEachTarget(t, func(t *testing.T, target backupTarget) {
		d := newBackupDevice(t, target)
		if _, err := d.db("mastodon_production").Exec(context.Background(), `INSERT INTO statuses (account_id, text) SELECT 1, 'race ' || g FROM generate_series(1, 200) g`); err != nil {
			t.Fatal(err)
		}
		want := d.fingerprint(t)
		first := d.backup(t)
		faultsInjected.Add(3)
		// The newest: the backup may prune the first (one a day is kept).
		d.verify(t, first)
		restore := d.start(d.env, "restore", "--force")
		backup := d.start(d.env, "backup")
		upgrade := d.start(append(d.env, "MASTOKEEPER_MASTODON_VERSION=v4.7.1"), "provision")
		codes := []int{restore.wait(t, 3*time.Minute), backup.wait(t, 3*time.Minute), upgrade.wait(t, 3*time.Minute)}
		logs := d.allLogs()
		if codes[0] != 0 || codes[1] != 0 || codes[2] != 0 {
			t.Fatalf("restore, backup and upgrade exited %v:\n%s", codes, logs)
		}
		if !strings.Contains(logs, "waiting for the job that is running") {
			t.Error("no job waited for another's lock")
		}
		if slices.Contains(d.markers(), "restore-incomplete") {
			t.Error("the device is left marked half-restored")
		}
		ids := usable(t, d)
		if len(ids) == 0 {
			t.Fatal("no backup is left")
		}
		for _, id := range ids {
			d.verify(t, id)
		}
		// The upgrade's migration, before or after the restore, may add
		// its own row: the instance's data is what must be the same.
		got := d.fingerprint(t)
		delete(want, "table schema_migrations")
		delete(got, "table schema_migrations")
		assertSameData(t, want, got)
	})
}

// A backup refused for its configuration (no passphrase, one too short)
// writes nothing at all to the target: no owner record, no key.
func TestFaultARefusedBackupWritesNothingToTheTarget(t *testing.T) {
	t.Parallel()
	tally(t)
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	for _, bad := range []string{"BACKUP_PASSPHRASE=", "BACKUP_PASSPHRASE=hunter2"} {
		hostileInputs.Add(1)
		r := d.keeper(append(d.env, bad), "backup")
		if r.code != 3 || !strings.Contains(r.out, "BACKUP_PASSPHRASE") {
			t.Errorf("%s: exit %d; want 3 naming the variable:\n%s", bad, r.code, r.out)
		}
		if objs := d.objects(t); len(objs) != 0 {
			t.Errorf("%s: the refused backup wrote %v", bad, objs)
		}
	}
}
