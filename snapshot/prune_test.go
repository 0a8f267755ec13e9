package snapshot

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/file"
)

func put(t *testing.T, s storage.Store, key, content string) {
	t.Helper()
	if err := s.Put(context.Background(), key, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}

// testManifest is a manifest with every object named and valid sums.
func testManifest(at time.Time, domain string, blobs ...string) *Manifest {
	m := &Manifest{Format: Format, ID: NewID(at), CreatedAt: at, InstanceID: "i1", LocalDomain: domain, MediaBlobs: blobs}
	for name := range objectNames {
		m.Objects = append(m.Objects, Object{Name: name, Size: 4, SHA256: strings.Repeat("0", 64)})
	}
	return m
}

// putSnapshot stores a snapshot authenticated by k (a format 1 one when k
// is nil) with a dump object, and returns its ID.
func putSnapshot(t *testing.T, s storage.Store, k *Key, at time.Time, domain string, blobs ...string) string {
	t.Helper()
	m := testManifest(at, domain, blobs...)
	put(t, s, ObjectKey(m.ID, DBDump), "dump")
	if k == nil {
		m.Format = formatOld
		b, _ := json.Marshal(m)
		put(t, s, ManifestKey(m.ID), string(b))
	} else {
		put(t, s, ManifestKey(m.ID), string(k.seal("manifest", ManifestKey(m.ID), m)))
	}
	return m.ID
}

func keys(t *testing.T, s storage.Store) []string {
	objs, err := s.List(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Key)
	}
	return ks
}

func newTarget(t testing.TB) (storage.Store, *Key) {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k, _ := NewKey()
	return s, k
}

func TestPruneDeletesWhatNoKeptBackupNeeds(t *testing.T) {
	s, k := newTarget(t)
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	put(t, s, BlobKey(a), "A")
	put(t, s, BlobKey(b), "B")
	old := putSnapshot(t, s, k, base.Add(-48*time.Hour), "social.example.org", a, b)
	newest := putSnapshot(t, s, k, base, "social.example.org", a)
	put(t, s, ObjectKey("20261101T000000Z", DBDump), "an interrupted backup")

	var logs bytes.Buffer
	// A day later than everything was written, so nothing is "still running".
	now := time.Now().Add(48 * time.Hour)
	if err := Prune(context.Background(), s, k, Retention{}, "i1", slog.New(slog.NewTextHandler(&logs, nil)), now); err != nil {
		t.Fatal(err)
	}
	got := keys(t, s)
	want := []string{BlobKey(a), ObjectKey(newest, DBDump), ManifestKey(newest)}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("left %v\nwant %v", got, want)
	}
	if !strings.Contains(logs.String(), old) {
		t.Errorf("the log does not name the deleted backup:\n%s", logs.String())
	}
}

func TestPruneKeepsBlobsOfABackupStillRunning(t *testing.T) {
	s, k := newTarget(t)
	c := strings.Repeat("c", 64)
	put(t, s, BlobKey(c), "C") // just uploaded, manifest not yet written
	putSnapshot(t, s, k, base, "social.example.org")
	if err := Prune(context.Background(), s, k, Retention{}, "i1", slog.New(slog.DiscardHandler), time.Now()); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(keys(t, s), BlobKey(c)) {
		t.Error("a blob of a running backup was deleted")
	}
}

func TestPruneNeverDeletesForAForgedOrForeignManifest(t *testing.T) {
	s, k := newTarget(t)
	other, _ := NewKey()
	a := strings.Repeat("a", 64)
	put(t, s, BlobKey(a), "A")
	mine := putSnapshot(t, s, k, base.Add(-72*time.Hour), "social.example.org", a)
	// Newer "backups" that would take every slot if they counted: one of
	// another instance, one forged in the old format, one of garbage.
	putSnapshot(t, s, other, base, "social.example.org")
	putSnapshot(t, s, nil, base.Add(time.Hour), "social.example.org")
	put(t, s, ManifestKey(NewID(base.Add(2*time.Hour))), "{not json")
	before := len(keys(t, s))
	var logs bytes.Buffer
	if err := Prune(context.Background(), s, k, Retention{Daily: 1}, "i1", slog.New(slog.NewTextHandler(&logs, nil)), time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := keys(t, s)
	if !slices.Contains(got, ManifestKey(mine)) || !slices.Contains(got, BlobKey(a)) {
		t.Errorf("this instance's only backup lost something: %v", got)
	}
	if len(got) != before {
		t.Errorf("deleted %d objects; want none (foreign, old and unreadable ones are left alone)", before-len(got))
	}
	if !strings.Contains(logs.String(), "cannot be used") {
		t.Errorf("the unreadable manifests are not reported:\n%s", logs.String())
	}
}

func TestPruneRemovesOldFormatBackupsOnceNewOnesCoverThePolicy(t *testing.T) {
	s, k := newTarget(t)
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	put(t, s, BlobKey(a), "A")
	put(t, s, BlobKey(b), "B")
	old := putSnapshot(t, s, nil, base.Add(-30*24*time.Hour), "social.example.org", a)
	first := putSnapshot(t, s, k, base.Add(-8*24*time.Hour), "social.example.org", b)
	newest := putSnapshot(t, s, k, base, "social.example.org", b)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	policy := Retention{Daily: 7}
	if err := Prune(ctx, s, k, policy, "i1", log, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(keys(t, s), ManifestKey(old)) || !slices.Contains(keys(t, s), BlobKey(a)) {
		t.Fatal("an old-format backup was deleted while no new backup was verified")
	}
	if err := MarkVerified(ctx, s, k, &Manifest{ID: newest}, false, base); err != nil {
		t.Fatal(err)
	}
	if err := Prune(ctx, s, k, policy, "i1", log, time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := keys(t, s)
	if slices.Contains(got, ManifestKey(old)) || slices.Contains(got, BlobKey(a)) {
		t.Errorf("the old-format backup outlived new ones covering %v: %v", policy, got)
	}
	if !slices.Contains(got, ManifestKey(first)) && !slices.Contains(got, ManifestKey(newest)) {
		t.Errorf("new backups deleted: %v", got)
	}
}

func TestPruneLeavesAnotherInstanceIDsBackupsWhole(t *testing.T) {
	s, k := newTarget(t)
	a := strings.Repeat("a", 64)
	put(t, s, BlobKey(a), "A")
	// Same key, another instance ID: restored elsewhere from an older backup.
	m := testManifest(base.Add(-72*time.Hour), "social.example.org", a)
	m.InstanceID = "fork"
	put(t, s, ObjectKey(m.ID, DBDump), "dump")
	put(t, s, ManifestKey(m.ID), string(k.seal("manifest", ManifestKey(m.ID), m)))
	mine := putSnapshot(t, s, k, base, "social.example.org")
	before := keys(t, s)
	if err := Prune(context.Background(), s, k, Retention{}, "i1", slog.New(slog.DiscardHandler), time.Now().Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, s); !slices.Equal(got, before) || !slices.Contains(got, ManifestKey(mine)) {
		t.Errorf("left %v\nwant all of %v", got, before)
	}
}
