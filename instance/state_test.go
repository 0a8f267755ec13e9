package instance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleRecord() *Record {
	return &Record{
		LocalDomain: "social.example.org",
		CreatedAt:   time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Adopted:     []string{SecretKeyBase},
		Secrets: Secrets{
			SecretKeyBase: strings.Repeat("ab", 64),
			DBPassword:    "Abcdefgh12345678Abcdefgh12345678",
		},
	}
}

func TestDirRead_EmptyDirectoryIsNotProvisioned(t *testing.T) {
	_, err := Dir{Path: t.TempDir()}.Read()
	if !errors.Is(err, ErrNotProvisioned) {
		t.Errorf("Read = %v; want ErrNotProvisioned", err)
	}
}

func TestDirRead_MissingDirectoryIsNotProvisioned(t *testing.T) {
	_, err := Dir{Path: filepath.Join(t.TempDir(), "nope")}.Read()
	if !errors.Is(err, ErrNotProvisioned) {
		t.Errorf("Read = %v; want ErrNotProvisioned", err)
	}
}

func TestDirCreate_ThenReadRoundTrips(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	want := sampleRecord()
	if err := d.Create(want); err != nil {
		t.Fatal(err)
	}
	got, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got.LocalDomain != want.LocalDomain || !got.CreatedAt.Equal(want.CreatedAt) ||
		!slices.Equal(got.Adopted, want.Adopted) || len(got.Secrets) != len(want.Secrets) {
		t.Errorf("Read = %+v; want %+v", got, want)
	}
	for k, v := range want.Secrets {
		if got.Secrets[k] != v {
			t.Errorf("secret %s = %q; want %q", k, got.Secrets[k], v)
		}
	}
}

func TestDirCreate_RecordIsPrivateToItsOwner(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if err := d.Create(sampleRecord()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.RecordPath())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode = %v; want 0600 (it holds secrets)", fi.Mode().Perm())
	}
}

func TestDirCreate_RefusesToReplaceAnExistingRecord(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if err := d.Create(sampleRecord()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(d.RecordPath())
	other := sampleRecord()
	other.LocalDomain = "other.example.org"
	other.Secrets[SecretKeyBase] = strings.Repeat("cd", 64)
	err := d.Create(other)
	if err == nil {
		t.Fatal("Create replaced an existing record")
	}
	if !strings.Contains(err.Error(), d.RecordPath()) {
		t.Errorf("error %q does not name the record's path", err)
	}
	after, _ := os.ReadFile(d.RecordPath())
	if string(before) != string(after) {
		t.Errorf("record changed from\n%s\nto\n%s", before, after)
	}
}

func TestDirRead_DamagedRecordNamesThePath(t *testing.T) {
	for name, content := range map[string]string{
		"not json":   `{"local_domain": "social.exa`,
		"no domain":  `{"secrets": {"SECRET_KEY_BASE": "x"}}`,
		"no secrets": `{"local_domain": "social.example.org", "secrets": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			d := Dir{Path: t.TempDir()}
			if err := os.WriteFile(d.RecordPath(), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			rec, err := d.Read()
			if err == nil {
				t.Fatalf("Read = %+v; want an error", rec)
			}
			if errors.Is(err, ErrNotProvisioned) {
				t.Errorf("a damaged record must not read as not provisioned (that would provision anew)")
			}
			if !strings.Contains(err.Error(), d.RecordPath()) {
				t.Errorf("error %q does not name %s", err, d.RecordPath())
			}
		})
	}
}

func TestDirRecordPath(t *testing.T) {
	if got := (Dir{Path: "/var/lib/mastokeeper"}).RecordPath(); got != "/var/lib/mastokeeper/instance.json" {
		t.Errorf("RecordPath = %q", got)
	}
}

func TestMarkers_MarkThenHas(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if d.Has(MarkerSeeded) {
		t.Fatal("Has(seeded) before Mark")
	}
	if err := d.Mark(MarkerSeeded); err != nil {
		t.Fatal(err)
	}
	if !d.Has(MarkerSeeded) {
		t.Error("Has(seeded) = false after Mark")
	}
	if d.Has(MarkerOwnerAnnounced) {
		t.Error("Has(owner-announced) = true; only seeded was marked")
	}
}

func TestUnmark_RemovesOnlyThatMarkerAndToleratesAbsence(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if err := d.Unmark(MarkerRestoring); err != nil {
		t.Fatalf("Unmark of an absent marker: %v", err)
	}
	d.Mark(MarkerRestoring)
	d.Mark(MarkerSeeded)
	if err := d.Unmark(MarkerRestoring); err != nil {
		t.Fatal(err)
	}
	if d.Has(MarkerRestoring) || !d.Has(MarkerSeeded) {
		t.Errorf("after Unmark(restore-incomplete): restoring %v, seeded %v; want false, true", d.Has(MarkerRestoring), d.Has(MarkerSeeded))
	}
}

func TestMark_IsIdempotentAndHoldsATimestamp(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	for range 2 {
		if err := d.Mark(MarkerSeeded); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(d.Path, "markers", MarkerSeeded))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("marker holds %q; want an RFC 3339 time: %v", b, err)
	}
	if d := time.Since(ts); d < -time.Minute || d > time.Minute {
		t.Errorf("marker time %v is not now", ts)
	}
}

func TestMarkers_ListsMarkersButNotTemporaryFiles(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if names, err := d.Markers(); err != nil || len(names) != 0 {
		t.Fatalf("Markers before any = %v, %v; want none, nil", names, err)
	}
	for _, m := range []string{MarkerSeeded, ReadyMarker("4.3.0"), MarkerOwnerAnnounced} {
		if err := d.Mark(m); err != nil {
			t.Fatal(err)
		}
	}
	// A crash mid-write leaves a dot-file behind.
	if err := os.WriteFile(filepath.Join(d.Path, "markers", ".ready-4.4.0.tmp-123"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	names, err := d.Markers()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	want := []string{MarkerOwnerAnnounced, "ready-4.3.0", MarkerSeeded}
	if !slices.Equal(names, want) {
		t.Errorf("Markers = %v; want %v", names, want)
	}
}

func TestReadyMarker(t *testing.T) {
	tests := map[string]string{
		"4.3.0":          "ready-4.3.0",
		"v4.4.0-beta.1":  "ready-v4.4.0-beta.1",
		"4.3.0_nightly":  "ready-4.3.0_nightly",
		"../../etc/x":    "ready-.._.._etc_x",
		"4.3 0":          "ready-4.3_0",
		"4.3.0+build/7":  "ready-4.3.0_build_7",
		"versión\n\x00!": "ready-versi_n___",
	}
	for in, want := range tests {
		if got := ReadyMarker(in); got != want {
			t.Errorf("ReadyMarker(%q) = %q; want %q", in, got, want)
		}
		if strings.ContainsRune(ReadyMarker(in), filepath.Separator) {
			t.Errorf("ReadyMarker(%q) contains a path separator", in)
		}
	}
}

func TestReadyMarker_OddVersionStaysInsideTheMarkersDirectory(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if err := d.Mark(ReadyMarker("../../escape")); err != nil {
		t.Fatal(err)
	}
	if !d.Has(ReadyMarker("../../escape")) {
		t.Error("marker for an odd version is not found again")
	}
	if names, _ := d.Markers(); len(names) != 1 {
		t.Errorf("Markers = %v; want the one marker", names)
	}
}

func TestReadyVersionsAndClearReady(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if vs := d.ReadyVersions(); len(vs) != 0 {
		t.Fatalf("ReadyVersions on a fresh dir = %v", vs)
	}
	if err := d.ClearReady(); err != nil {
		t.Fatalf("ClearReady with no markers: %v", err)
	}
	for _, m := range []string{MarkerSeeded, ReadyMarker("4.3.0"), ReadyMarker("4.4.0"), MarkerOwnerAnnounced} {
		if err := d.Mark(m); err != nil {
			t.Fatal(err)
		}
	}
	vs := d.ReadyVersions()
	slices.Sort(vs)
	if !slices.Equal(vs, []string{"4.3.0", "4.4.0"}) {
		t.Errorf("ReadyVersions = %v; want [4.3.0 4.4.0]", vs)
	}
	if err := d.ClearReady(); err != nil {
		t.Fatal(err)
	}
	if vs := d.ReadyVersions(); len(vs) != 0 {
		t.Errorf("ReadyVersions after ClearReady = %v; want none", vs)
	}
	if !d.Has(MarkerSeeded) || !d.Has(MarkerOwnerAnnounced) {
		t.Error("ClearReady removed markers other than ready ones")
	}
}

func TestReadyVersions_ReportsSanitisedVersions(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if err := d.Mark(ReadyMarker("4.3.0+local")); err != nil {
		t.Fatal(err)
	}
	if vs := d.ReadyVersions(); !slices.Equal(vs, []string{"4.3.0_local"}) {
		t.Errorf("ReadyVersions = %v", vs)
	}
	if err := d.ClearReady(); err != nil {
		t.Fatal(err)
	}
	if d.Has(ReadyMarker("4.3.0+local")) {
		t.Error("ClearReady left the marker of a version with odd characters")
	}
}

func TestLock_ExcludesASecondLockerUntilUnlock(t *testing.T) {
	d := Dir{Path: filepath.Join(t.TempDir(), "state")} // Lock creates it
	unlock, err := d.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if u2, err := d.Lock(ctx); err == nil {
		u2()
		t.Fatal("a second locker got the lock while the first held it")
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("second Lock = %v; want it to wrap context.DeadlineExceeded", err)
	}

	got := make(chan error, 1)
	go func() {
		u, err := d.Lock(context.Background())
		if err == nil {
			u()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("waiting locker returned %v before unlock", err)
	case <-time.After(250 * time.Millisecond):
	}
	unlock()
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("waiting locker: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("waiting locker did not get the lock after unlock")
	}
}

func TestLock_HonoursCancellation(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	unlock, err := d.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	start := time.Now()
	_, err = d.Lock(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Lock = %v; want it to wrap context.Canceled", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("Lock took %v to notice the cancellation", time.Since(start))
	}
}
