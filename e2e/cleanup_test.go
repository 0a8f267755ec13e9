package e2e

// The media cleanup and its schedule, driven through the keeper's own code
// (jobs.Cleanup, jobs.Scheduler, mastodon.Runner) against the stand-in's
// tootctl, on a temporary media volume whose files' modification times
// stand for the records' dates. Every name here starts with "cleanup".

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/mastodon"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
)

type cleanupLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *cleanupLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *cleanupLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// cleanupDevice is a keeper's view of a device for the cleanup: its
// variables, a media volume, a state volume, and the Runner the keeper
// builds (the instance's environment, the stand-in on PATH).
type cleanupDevice struct {
	t      *testing.T
	media  string
	state  string
	vars   map[string]string
	log    *cleanupLog
	logger *slog.Logger
}

func newCleanupDevice(t *testing.T, vars ...string) *cleanupDevice {
	t.Helper()
	base := t.TempDir()
	d := &cleanupDevice{t: t, media: filepath.Join(base, "system"), state: filepath.Join(base, "keeper"), log: &cleanupLog{}}
	os.MkdirAll(d.media, 0o755)
	d.vars = map[string]string{"LOCAL_DOMAIN": "social.example.test", "MEDIA_DIR": d.media}
	for _, kv := range vars {
		k, v, _ := strings.Cut(kv, "=")
		d.vars[k] = v
	}
	d.logger = slog.New(slog.NewTextHandler(d.log, nil))
	// The keeper finds tootctl on its own PATH, as in Mastodon's image.
	t.Setenv("PATH", standinDir+":"+os.Getenv("PATH"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the keeper's log:\n%s", d.log)
		}
	})
	return d
}

func (d *cleanupDevice) getenv(k string) string { return d.vars[k] }

// runner is the mastodon.Runner the keeper would use, with extra
// variables for the stand-in.
func (d *cleanupDevice) runner(extra ...string) mastodon.Runner {
	d.t.Helper()
	cfg, err := config.Load(d.getenv)
	if err != nil {
		d.t.Fatal(err)
	}
	secrets, err := instance.GenerateSecrets(instance.RandomReader)
	if err != nil {
		d.t.Fatal(err)
	}
	rec := instance.NewRecord("social.example.test", d.getenv, secrets)
	base := append([]string{"PATH=" + standinDir + ":" + os.Getenv("PATH"), "STANDIN_MEDIA_DIR=" + d.media}, extra...)
	return mastodon.Runner{Env: mastodon.Env(base, cfg, rec, sizing.Plan{}), Log: d.logger}
}

func (d *cleanupDevice) cleanup(r mastodon.Runner) *jobs.Cleanup {
	d.t.Helper()
	c, ps := jobs.NewCleanup(d.getenv, r, d.logger)
	if len(ps) != 0 {
		d.t.Fatalf("problems: %v", ps)
	}
	return c
}

// file creates rel under the media volume, size bytes, last modified age ago.
func (d *cleanupDevice) file(rel string, size int, age time.Duration) {
	d.t.Helper()
	p := filepath.Join(d.media, filepath.FromSlash(rel))
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
		d.t.Fatal(err)
	}
	at := time.Now().Add(-age)
	if err := os.Chtimes(p, at, at); err != nil {
		d.t.Fatal(err)
	}
}

// files lists the files of the media volume, relative, sorted.
func (d *cleanupDevice) files() []string {
	var out []string
	filepath.WalkDir(d.media, func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(d.media, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	slices.Sort(out)
	return out
}

func (d *cleanupDevice) exists(rel string) bool {
	_, err := os.Stat(filepath.Join(d.media, filepath.FromSlash(rel)))
	return err == nil
}

func (d *cleanupDevice) logSays(want ...string) {
	d.t.Helper()
	out := d.log.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			d.t.Errorf("the log does not say %q", w)
		}
	}
}

const day = 24 * time.Hour

// The remote media cache and preview cards of a small instance, with local
// uploads and avatars that the media cleanup must not touch.
func (d *cleanupDevice) populate() {
	d.file("cache/media_attachments/files/000/000/001/original/a.jpg", 2048, 10*day) // remote, old
	d.file("cache/media_attachments/files/000/000/001/small/a.jpg", 1024, 10*day)    // remote, old
	d.file("cache/media_attachments/files/000/000/002/original/b.jpg", 4096, 3*day)  // remote, recent
	d.file("cache/media_attachments/files/000/000/007/original/c.jpg", 512, 36*time.Hour)
	d.file("media_attachments/files/000/000/003/original/local.jpg", 4096, 400*day) // a local upload
	d.file("cache/accounts/avatars/000/000/004/original/av.png", 1024, 30*day)      // a remote avatar
	d.file("preview_cards/images/000/000/005/original/old.png", 3072, 200*day)
	d.file("preview_cards/images/000/000/006/original/mid.png", 1024, 20*day)
	d.file("preview_cards/images/000/000/008/original/new.png", 1024, 2*day)
}

func TestCleanup_RemovesCachedMediaAndPreviewCardsOlderThanTheirRetention(t *testing.T) {
	d := newCleanupDevice(t)
	d.populate()
	c := d.cleanup(d.runner())
	if err := c.RemoveCached(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"cache/accounts/avatars/000/000/004/original/av.png",
		"cache/media_attachments/files/000/000/002/original/b.jpg",
		"cache/media_attachments/files/000/000/007/original/c.jpg",
		"media_attachments/files/000/000/003/original/local.jpg",
		"preview_cards/images/000/000/006/original/mid.png",
		"preview_cards/images/000/000/008/original/new.png",
	}
	if got := d.files(); !slices.Equal(got, want) {
		t.Errorf("files left:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d.exists("cache/media_attachments/files/000/000/001") {
		t.Error("the emptied directory of attachment 1 is still there")
	}
	d.logSays(
		"removing cached media of other servers older than 7 days (tootctl media remove)",
		`msg="Removed 1 media attachments (approx. 3 KB)" command="tootctl media remove --days 7"`,
		"removing preview card images older than 180 days",
		`msg="Removed 1 preview cards (approx. 3 KB)" command="tootctl preview_cards remove --days 180"`,
		"media cleanup freed ",
	)
}

func TestCleanup_RetentionComesFromTheVariables(t *testing.T) {
	d := newCleanupDevice(t, "MEDIA_CACHE_RETENTION_DAYS=1", "PREVIEW_CARDS_RETENTION_DAYS=14")
	d.populate()
	if err := d.cleanup(d.runner()).RemoveCached(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"cache/media_attachments/files/000/000/002/original/b.jpg", "cache/media_attachments/files/000/000/007/original/c.jpg", "preview_cards/images/000/000/006/original/mid.png"} {
		if d.exists(gone) {
			t.Errorf("%s is still there", gone)
		}
	}
	if !d.exists("preview_cards/images/000/000/008/original/new.png") || !d.exists("media_attachments/files/000/000/003/original/local.jpg") {
		t.Error("removed too much")
	}
	d.logSays(`command="tootctl media remove --days 1"`, `command="tootctl preview_cards remove --days 14"`)
}

func TestCleanup_RefusesPreviewCardRetentionBelow14Days(t *testing.T) {
	d := newCleanupDevice(t, "PREVIEW_CARDS_RETENTION_DAYS=3")
	d.populate()
	c, ps := jobs.NewCleanup(d.getenv, d.runner(), d.logger)
	if len(ps) != 1 || ps[0].Var != "PREVIEW_CARDS_RETENTION_DAYS" {
		t.Fatalf("problems %v", ps)
	}
	err := c.RemoveCached(context.Background())
	if err == nil || !strings.Contains(err.Error(), "PREVIEW_CARDS_RETENTION_DAYS: is \"3\"") {
		t.Errorf("error %v", err)
	}
	if !d.exists("preview_cards/images/000/000/008/original/new.png") || d.exists("cache/media_attachments/files/000/000/001/original/a.jpg") {
		t.Error("media should be cleaned and preview cards left alone")
	}
}

func TestCleanup_RemoveOrphansKeepsWhatTheDatabaseKnows(t *testing.T) {
	d := newCleanupDevice(t)
	d.file("media_attachments/files/000/000/001/original/known.jpg", 100, day)
	d.file("media_attachments/files/000/000/002/original/orphan.jpg", 2000, day)
	d.file("cache/media_attachments/files/000/000/003/original/orphan.jpg", 3000, day)
	d.file("accounts/avatars/000/000/004/original/known.png", 100, day)
	os.WriteFile(filepath.Join(d.media, ".known"), []byte("media_attachments/files/000/000/001/original/known.jpg\naccounts/avatars/000/000/004/original/known.png\n"), 0o644)
	if err := d.cleanup(d.runner()).RemoveOrphans(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{".known", "accounts/avatars/000/000/004/original/known.png", "media_attachments/files/000/000/001/original/known.jpg"}
	if got := d.files(); !slices.Equal(got, want) {
		t.Errorf("files left: %v", got)
	}
	d.logSays(
		"removing media files that belong to nothing in the database (tootctl media remove-orphans)",
		"Found and removed orphan: media_attachments/files/000/000/002/original/orphan.jpg",
		`msg="Removed 2 orphans (approx. 4.88 KB)" command="tootctl media remove-orphans"`,
		"orphaned media cleanup freed ",
	)
}

func TestCleanup_DiskPressureRunsEarlyWithAShortRetention(t *testing.T) {
	probe := t.TempDir()
	actual, err := jobs.StatFS(probe)
	if err != nil {
		t.Fatal(err)
	}
	// A threshold above the real free space: the volume is "full".
	threshold := fmt.Sprintf("%dGiB", actual.Free>>30+100)
	d := newCleanupDevice(t, "DISK_FREE_MIN="+threshold)
	d.populate()
	c := d.cleanup(d.runner())
	ran, err := c.CheckDisk(context.Background())
	if !ran || err != nil {
		t.Fatalf("ran %v, err %v", ran, err)
	}
	// Media older than 1 day and preview cards older than 14 days went.
	want := []string{
		"cache/accounts/avatars/000/000/004/original/av.png",
		"media_attachments/files/000/000/003/original/local.jpg",
		"preview_cards/images/000/000/008/original/new.png",
	}
	if got := d.files(); !slices.Equal(got, want) {
		t.Errorf("files left:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	d.logSays(
		"low disk space on the media volume: ",
		"below DISK_FREE_MIN="+threshold+". Cleaning up now, ahead of schedule, keeping only 1 day of other servers' media",
		`command="tootctl media remove --days 1"`,
		`command="tootctl preview_cards remove --days 14"`,
		"disk-pressure cleanup freed ",
		"still below DISK_FREE_MIN="+threshold+" after the cleanup",
	)
	// Not again within the hour.
	d.file("cache/media_attachments/files/000/000/009/original/d.jpg", 100, 3*day)
	if ran, _ := c.CheckDisk(context.Background()); ran || !d.exists("cache/media_attachments/files/000/000/009/original/d.jpg") {
		t.Error("a second early cleanup ran within the hour")
	}
}

func TestCleanup_DiskPressureGuardIgnoresAVolumeWithRoom(t *testing.T) {
	d := newCleanupDevice(t, "DISK_FREE_MIN=1B")
	d.populate()
	before := d.files()
	c := d.cleanup(d.runner())
	if ran, err := c.CheckDisk(context.Background()); ran || err != nil {
		t.Errorf("ran %v, err %v", ran, err)
	}
	// The injected free space decides, not the real one.
	c.FreeSpace = func(path string) (jobs.DiskSpace, error) {
		if path != d.media {
			t.Errorf("free space read at %s", path)
		}
		return jobs.DiskSpace{Free: 0, Total: 1 << 40}, nil
	}
	if ran, err := c.CheckDisk(context.Background()); !ran || err != nil {
		t.Errorf("with a full volume: ran %v, err %v", ran, err)
	}
	if slices.Equal(before, d.files()) {
		t.Error("nothing was removed")
	}
}

func TestCleanup_ScheduledJobOverdueAfterAPowerCutRunsOnceAtStart(t *testing.T) {
	d := newCleanupDevice(t)
	d.populate()
	d.file("orphan.txt", 10, day) // an orphan: the orphans job must not run
	os.WriteFile(filepath.Join(d.media, ".known"), nil, 0o644)
	dir := instance.Dir{Path: d.state}
	os.MkdirAll(filepath.Join(d.state, "schedule"), 0o700)
	// The last media cleanup was 3 weeks ago; the orphans job never ran.
	os.WriteFile(filepath.Join(d.state, "schedule", "media-cleanup.last"), []byte(time.Now().Add(-21*day).UTC().Format(time.RFC3339)+"\n"), 0o644)

	c := d.cleanup(d.runner())
	s, ps := jobs.NewScheduler(d.getenv, dir, d.logger, c.Jobs()...)
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	s.CatchUpDelay = 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	start := time.Now()
	go func() { done <- s.Run(ctx) }()
	for !strings.Contains(d.log.String(), "media cleanup done in") && time.Since(start) < 30*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d.exists("cache/media_attachments/files/000/000/001/original/a.jpg") {
		t.Error("the overdue media cleanup did not run")
	}
	if !d.exists("orphan.txt") {
		t.Error("the orphans job ran at the first start")
	}
	last, ok, err := jobs.LastSuccess(dir, "media cleanup")
	if !ok || err != nil || last.Before(start.Add(-time.Second)) {
		t.Errorf("media cleanup's last run %v %v %v", last, ok, err)
	}
	if _, ok, _ := jobs.LastSuccess(dir, "orphaned media cleanup"); !ok {
		t.Error("no baseline for the orphans job")
	}
	d.logSays(
		"job schedules are in time zone UTC",
		"media cleanup is overdue: it was due ",
		"media cleanup started",
		`msg="Removed 1 media attachments (approx. 3 KB)"`,
		"media cleanup done in ",
		"next media cleanup at ",
		"next orphaned media cleanup at ",
		":00 UTC",
	)
}

func TestCleanup_TootctlFailureIsReportedWithItsOutput(t *testing.T) {
	d := newCleanupDevice(t)
	d.populate()
	before := d.files()
	r := d.runner()
	// A Mastodon that cannot boot: tootctl fails before it removes anything.
	r.Env = slices.DeleteFunc(r.Env, func(kv string) bool { return strings.HasPrefix(kv, "SECRET_KEY_BASE=") })
	err := d.cleanup(r).RemoveCached(context.Background())
	if err == nil || !strings.Contains(err.Error(), "tootctl media remove --days 7: exit status 1 (its output is in the log above)") {
		t.Errorf("error %v", err)
	}
	d.logSays("SECRET_KEY_BASE is missing or unusable")
	if !slices.Equal(before, d.files()) {
		t.Error("files were removed")
	}
}

func TestCleanup_StoppingTheKeeperInterruptsTootctl(t *testing.T) {
	d := newCleanupDevice(t)
	d.populate()
	before := d.files()
	c := d.cleanup(d.runner("STANDIN_MEDIA_DELAY=60s"))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.RemoveCached(ctx)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("tootctl took %s to stop; SIGINT should stop it at once", took)
	}
	if err == nil {
		t.Error("an interrupted cleanup reported success")
	}
	d.logSays(`msg="Interrupt (interrupt)"`)
	if !slices.Equal(before, d.files()) {
		t.Error("files were removed")
	}
}
