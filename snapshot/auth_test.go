package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

func TestAManifestIsUsedOnlyWhenThisInstancesKeyAuthenticatesIt(t *testing.T) {
	s, k := newTarget(t)
	ctx := context.Background()
	r := &Reader{Store: s, Key: k}
	id := putSnapshot(t, s, k, base, "social.example.org")
	m, err := r.ReadManifest(ctx, id)
	if err != nil || !m.Authenticated || m.LocalDomain != "social.example.org" {
		t.Fatalf("an authentic manifest: %+v, %v", m, err)
	}

	// Moved to another ID's place: the HMAC covers where it is stored.
	raw := readAll(t, s, ManifestKey(id))
	other := NewID(base.Add(time.Hour))
	put(t, s, ManifestKey(other), string(raw))
	if _, err := r.ReadManifest(ctx, other); !errors.Is(err, ErrUnauthentic) {
		t.Errorf("a manifest replayed under another ID: %v; want ErrUnauthentic", err)
	}
	// Written by another instance's key.
	stranger, _ := NewKey()
	sid := putSnapshot(t, s, stranger, base.Add(2*time.Hour), "social.example.org")
	if _, err := r.ReadManifest(ctx, sid); !errors.Is(err, ErrUnauthentic) {
		t.Errorf("another instance's manifest: %v; want ErrUnauthentic", err)
	}
	// One changed field in the body.
	var e envelope
	json.Unmarshal(raw, &e)
	e.Body = e.Body[:len(e.Body)-8] + "AAAAAAA="
	put(t, s, ManifestKey(id), string(marshal(e)))
	if _, err := r.ReadManifest(ctx, id); !errors.Is(err, ErrUnauthentic) {
		t.Errorf("a changed manifest: %v; want ErrUnauthentic", err)
	}
}

func TestAnOldFormatManifestNeedsTrustAndItsNamesAreCheckedAllTheSame(t *testing.T) {
	s, k := newTarget(t)
	ctx := context.Background()
	id := putSnapshot(t, s, nil, base, "social.example.org")
	if _, err := (&Reader{Store: s, Key: k}).ReadManifest(ctx, id); err == nil || !strings.Contains(err.Error(), "--trust-old-format") {
		t.Errorf("an old-format manifest without trust: %v; want a refusal naming --trust-old-format", err)
	}
	m, err := (&Reader{Store: s, Key: k, TrustOldFormat: true}).ReadManifest(ctx, id)
	if err != nil || m.Authenticated {
		t.Errorf("trusted: %+v, %v", m, err)
	}

	// Hostile names in an old-format manifest are refused even when trusted.
	for name, edit := range map[string]func(m *Manifest){
		"a short blob":           func(m *Manifest) { m.MediaBlobs = []string{"ab"} },
		"a traversing blob":      func(m *Manifest) { m.MediaBlobs = []string{"../../keeper/instance.json"} },
		"an unknown object":      func(m *Manifest) { m.Objects[0].Name = "../../etc/passwd" },
		"a missing object":       func(m *Manifest) { m.Objects = m.Objects[1:] },
		"an object without sum":  func(m *Manifest) { m.Objects[0].SHA256 = "x" },
		"another snapshot's ID":  func(m *Manifest) { m.ID = NewID(base.Add(time.Hour)) },
		"a path for a domain":    func(m *Manifest) { m.LocalDomain = "../x" },
		"a negative media count": func(m *Manifest) { m.MediaFiles = -1 },
	} {
		m := testManifest(base, "social.example.org")
		m.Format = formatOld
		edit(m)
		b, _ := json.Marshal(m)
		put(t, s, ManifestKey(NewID(base)), string(b))
		_, err := (&Reader{Store: s, Key: k, TrustOldFormat: true}).ReadManifest(ctx, NewID(base))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v; want ErrCorrupt", name, err)
		}
	}
}

func TestListReportsUnusableManifestsAndGoesOn(t *testing.T) {
	s, k := newTarget(t)
	ctx := context.Background()
	good := putSnapshot(t, s, k, base, "social.example.org")
	put(t, s, ManifestKey(NewID(base.Add(time.Hour))), "\x00garbage")
	stranger, _ := NewKey()
	putSnapshot(t, s, stranger, base.Add(2*time.Hour), "social.example.org")
	old := putSnapshot(t, s, nil, base.Add(-time.Hour), "social.example.org")
	l, err := (&Reader{Store: s, Key: k}).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Snapshots) != 1 || l.Snapshots[0].ID != good {
		t.Errorf("snapshots %v; want only %s", l.Snapshots, good)
	}
	if len(l.Old) != 1 || l.Old[0].ID != old {
		t.Errorf("old %v; want %s", l.Old, old)
	}
	if len(l.Unreadable) != 2 {
		t.Errorf("unreadable %v; want the garbage and the stranger's", l.Unreadable)
	}
}

func TestTheNewestVerifiedBackupIsTheDefault(t *testing.T) {
	s, k := newTarget(t)
	ctx := context.Background()
	r := &Reader{Store: s, Key: k}
	a := putSnapshot(t, s, k, base, "social.example.org")
	b := putSnapshot(t, s, k, base.Add(time.Hour), "social.example.org")
	l, _ := r.List(ctx)
	if m, why, _ := r.Newest(ctx, l); m.ID != b || !strings.Contains(why, "none was ever verified") {
		t.Errorf("nothing verified: %s (%s); want the newest, saying so", m.ID, why)
	}
	MarkVerified(ctx, s, k, &Manifest{ID: a}, false, base)
	// A verification record copied to the newer backup does not count.
	put(t, s, VerifiedKey(b), string(readAll(t, s, VerifiedKey(a))))
	l, _ = r.List(ctx)
	m, why, _ := r.Newest(ctx, l)
	if m.ID != a || !strings.Contains(why, "never verified") || !strings.Contains(why, b) {
		t.Errorf("got %s (%s); want %s, naming the unverified %s", m.ID, why, a, b)
	}
}

func TestNamesFromATargetNeverBecomePathsOrPanics(t *testing.T) {
	for _, sum := range []string{"", "ab", strings.Repeat("A", 64), "../" + strings.Repeat("a", 61)} {
		if IsSum(sum) {
			t.Errorf("IsSum(%q)", sum)
		}
		if k := BlobKey(sum); !strings.HasPrefix(k, "media/invalid/") || strings.Contains(k, "..") {
			t.Errorf("BlobKey(%q) = %q", sum, k)
		}
	}
	for _, p := range []string{"", ".", "/etc/passwd", "../keeper/instance.json", "a/../../b", "a//b", "a/./b", "a\x00b", ".mastokeeper-restore/x", "a\\b"} {
		if err := CheckMediaPath(p); err == nil {
			t.Errorf("CheckMediaPath(%q) passed", p)
		}
	}
	for _, p := range []string{"media_attachments/files/000/000/001/original/a.png", "accounts/avatars/x.jpg"} {
		if err := CheckMediaPath(p); err != nil {
			t.Errorf("CheckMediaPath(%q): %v", p, err)
		}
	}
}

func TestAPurgedInstanceWithTheSameDomainAndDeviceNeverClaimsTheOldTarget(t *testing.T) {
	s, oldKey := newTarget(t)
	ctx := context.Background()
	old := Owner{InstanceID: "old", Device: "uuid-1", LocalDomain: "uuid-1.balena-devices.com", Since: base}
	if err := Claim(ctx, s, oldKey, old); err != nil {
		t.Fatal(err)
	}
	putSnapshot(t, s, oldKey, base, old.LocalDomain)
	before := readAll(t, s, OwnerKey)

	purged, _ := NewKey()
	me := Owner{InstanceID: "new", Device: "uuid-1", LocalDomain: old.LocalDomain, Since: base.Add(time.Hour)}
	err := Claim(ctx, s, purged, me)
	var refused *problem.Refused
	if !errors.As(err, &refused) || !errors.Is(err, ErrOtherInstance) || !strings.Contains(err.Error(), "mastokeeper restore --force") {
		t.Fatalf("claim by the purged device's new instance: %v; want a refusal saying what to do", err)
	}
	if string(readAll(t, s, OwnerKey)) != string(before) {
		t.Error("the refused claim rewrote the owner record")
	}
	// With the owner record deleted, the backups themselves decide.
	s.Delete(ctx, OwnerKey)
	if err := Claim(ctx, s, purged, me); !errors.Is(err, ErrOtherInstance) {
		t.Errorf("no owner record, another instance's backups: %v; want ErrOtherInstance", err)
	}
	if err := Claim(ctx, s, oldKey, old); err != nil {
		t.Errorf("no owner record, the instance's own backups: %v", err)
	}
	if _, err := ReadOwner(ctx, s, oldKey); err != nil {
		t.Errorf("the owner record was not written back: %v", err)
	}
}

func TestAnOldFormatOwnerIsUpgradedOnlyByTheInstanceWhoseBackupsAreThere(t *testing.T) {
	s, k := newTarget(t)
	ctx := context.Background()
	put(t, s, OwnerKey, `{"device":"uuid-1","local_domain":"social.example.org","since":"2026-11-01T00:00:00Z"}`)
	id := putSnapshot(t, s, nil, base, "social.example.org")
	stranger, _ := NewKey()
	me := Owner{InstanceID: "i1", Device: "uuid-1", LocalDomain: "social.example.org", Since: base}
	// The old snapshot's record was encrypted to k: only k's instance is its.
	encryptTo(t, s, k, ObjectKey(id, Secrets), "{}")
	if err := Claim(ctx, s, stranger, me); !errors.Is(err, ErrOtherInstance) {
		t.Errorf("a stranger with the same domain and device: %v; want ErrOtherInstance", err)
	}
	if err := Claim(ctx, s, k, me); err != nil {
		t.Fatalf("the instance itself: %v", err)
	}
	if o, err := ReadOwner(ctx, s, k); err != nil || o.InstanceID != "i1" {
		t.Errorf("owner after the upgrade: %+v, %v", o, err)
	}
}

func readAll(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key)
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

func encryptTo(t *testing.T, s storage.Store, k *Key, key, text string) {
	t.Helper()
	var b strings.Builder
	w, _ := k.Encrypt(&b)
	w.Write([]byte(text))
	w.Close()
	put(t, s, key, b.String())
}
