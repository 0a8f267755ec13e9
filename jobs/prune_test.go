package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
	"github.com/mastodon-on-balena/mastodon-balena/storage/file"
)

func put(t *testing.T, s storage.Store, key, content string) {
	t.Helper()
	if err := s.Put(context.Background(), key, strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}

func putSnapshot(t *testing.T, s storage.Store, at time.Time, domain string, blobs ...string) string {
	t.Helper()
	m := &snapshot.Manifest{Format: snapshot.Format, ID: snapshot.NewID(at), CreatedAt: at, LocalDomain: domain, MediaBlobs: blobs}
	put(t, s, snapshot.ObjectKey(m.ID, snapshot.DBDump), "dump")
	b, _ := json.Marshal(m)
	put(t, s, snapshot.ManifestKey(m.ID), string(b))
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

func TestPruneDeletesWhatNoKeptBackupNeeds(t *testing.T) {
	s, err := file.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	put(t, s, snapshot.BlobKey(a), "A")
	put(t, s, snapshot.BlobKey(b), "B")
	old := putSnapshot(t, s, base.Add(-48*time.Hour), "social.example.org", a, b)
	newest := putSnapshot(t, s, base, "social.example.org", a)
	put(t, s, snapshot.ObjectKey("20261101T000000Z", snapshot.DBDump), "an interrupted backup")

	var logs bytes.Buffer
	// A day later than everything was written, so nothing is "still running".
	now := time.Now().Add(48 * time.Hour)
	if err := Prune(context.Background(), s, Retention{}, "social.example.org", none, slog.New(slog.NewTextHandler(&logs, nil)), now); err != nil {
		t.Fatal(err)
	}
	got := keys(t, s)
	want := []string{snapshot.BlobKey(a), snapshot.ObjectKey(newest, snapshot.DBDump), snapshot.ManifestKey(newest)}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("left %v\nwant %v", got, want)
	}
	if !strings.Contains(logs.String(), old) {
		t.Errorf("the log does not name the deleted backup:\n%s", logs.String())
	}
}

func TestPruneKeepsBlobsOfABackupStillRunning(t *testing.T) {
	s, _ := file.New(t.TempDir())
	c := strings.Repeat("c", 64)
	put(t, s, snapshot.BlobKey(c), "C") // just uploaded, manifest not yet written
	putSnapshot(t, s, base, "social.example.org")
	if err := Prune(context.Background(), s, Retention{}, "social.example.org", none, slog.New(slog.DiscardHandler), time.Now()); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(keys(t, s), snapshot.BlobKey(c)) {
		t.Error("a blob of a running backup was deleted")
	}
}

func TestPruneRefusesATargetSharedWithAnotherInstance(t *testing.T) {
	s, _ := file.New(t.TempDir())
	putSnapshot(t, s, base.Add(-time.Hour), "other.example.org")
	putSnapshot(t, s, base, "social.example.org")
	before := keys(t, s)
	err := Prune(context.Background(), s, Retention{}, "social.example.org", none, slog.New(slog.DiscardHandler), time.Now())
	if err == nil || !strings.Contains(err.Error(), "other.example.org") {
		t.Errorf("err %v", err)
	}
	if !slices.Equal(before, keys(t, s)) {
		t.Error("a refused prune deleted something")
	}
}
