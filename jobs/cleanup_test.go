package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeTootctl records the tootctl commands the cleanup runs, and frees
// space on a fake disk when it removes.
type fakeTootctl struct {
	mu    sync.Mutex
	calls []string
	disk  *fakeDisk
	frees uint64
	err   error
	delay time.Duration
}

func (f *fakeTootctl) do(ctx context.Context, call string) error {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	f.mu.Unlock()
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.disk != nil {
		f.disk.free(f.frees)
	}
	return f.err
}

func (f *fakeTootctl) MediaRemove(ctx context.Context, days int) error {
	return f.do(ctx, fmt.Sprintf("media remove --days %d", days))
}

func (f *fakeTootctl) PreviewCardsRemove(ctx context.Context, days int) error {
	return f.do(ctx, fmt.Sprintf("preview_cards remove --days %d", days))
}

func (f *fakeTootctl) MediaRemoveOrphans(ctx context.Context) error {
	return f.do(ctx, "media remove-orphans")
}

func (f *fakeTootctl) Calls() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, "; ")
}

type fakeDisk struct {
	mu    sync.Mutex
	space DiskSpace
	err   error
	paths []string
}

func (d *fakeDisk) FreeSpace(path string) (DiskSpace, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paths = append(d.paths, path)
	return d.space, d.err
}

func (d *fakeDisk) free(n uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.space.Free += n
}

const gib = 1 << 30

func TestParseFreeMin(t *testing.T) {
	good := map[string]FreeMin{
		"10%":     {Percent: 10},
		" 2.5 % ": {Percent: 2.5},
		"5GiB":    {Bytes: 5 * gib},
		"5 GiB":   {Bytes: 5 * gib},
		"5G":      {Bytes: 5 * gib},
		"500MB":   {Bytes: 500 << 20},
		"2gb":     {Bytes: 2 << 30},
		"1.5TiB":  {Bytes: 1.5 * (1 << 40)},
		"1048576": {Bytes: 1 << 20},
		"off":     {},
		"OFF":     {},
		"0":       {},
		"0%":      {},
	}
	for in, want := range good {
		got, err := ParseFreeMin(in)
		if err != nil || got.Percent != want.Percent || got.Bytes != want.Bytes {
			t.Errorf("%q: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"ten percent", "100%", "150%", "-1%", "5 parsecs", "-5GiB", "%", "GiB", "1e400"} {
		if got, err := ParseFreeMin(in); err == nil {
			t.Errorf("%q accepted as %+v", in, got)
		}
	}
}

func TestFreeMin_Below(t *testing.T) {
	pct, _ := ParseFreeMin("10%")
	abs, _ := ParseFreeMin("5GiB")
	tests := []struct {
		m    FreeMin
		d    DiskSpace
		want bool
	}{
		{pct, DiskSpace{Free: 9 * gib, Total: 100 * gib}, true},
		{pct, DiskSpace{Free: 10 * gib, Total: 100 * gib}, false},
		{pct, DiskSpace{Free: 0, Total: 0}, false}, // unknown size: never
		{abs, DiskSpace{Free: 4 * gib, Total: 100 * gib}, true},
		{abs, DiskSpace{Free: 6 * gib, Total: 100 * gib}, false},
		{FreeMin{}, DiskSpace{Free: 0, Total: 100 * gib}, false},
	}
	for _, tc := range tests {
		if got := tc.m.Below(tc.d); got != tc.want {
			t.Errorf("%v below %v: %v", tc.d, tc.m, got)
		}
	}
}

func TestCheckCleanup_ListsEveryProblemAtOnce(t *testing.T) {
	ps := CheckCleanup(envMap(map[string]string{
		"MEDIA_CACHE_RETENTION_DAYS":   "a week",
		"PREVIEW_CARDS_RETENTION_DAYS": "7",
		"MEDIA_DIR":                    "public/system",
		"DISK_FREE_MIN":                "lots",
		"DISK_CHECK_INTERVAL":          "10s",
	}))
	var vars []string
	for _, p := range ps {
		vars = append(vars, p.Var)
		if p.Example == "" {
			t.Errorf("%s: no example", p.Var)
		}
	}
	if strings.Join(vars, ",") != "MEDIA_CACHE_RETENTION_DAYS,PREVIEW_CARDS_RETENTION_DAYS,MEDIA_DIR,DISK_FREE_MIN,DISK_CHECK_INTERVAL" {
		t.Errorf("problems for %v", vars)
	}
	for _, p := range ps {
		if p.Var == "PREVIEW_CARDS_RETENTION_DAYS" && (!strings.Contains(p.String(), "from 14") || !strings.Contains(p.String(), "never below 14")) {
			t.Errorf("the preview card problem does not explain the 14-day floor: %s", p)
		}
	}
	if ps := CheckCleanup(envMap(nil)); len(ps) != 0 {
		t.Errorf("the defaults have problems: %v", ps)
	}
	ok := envMap(map[string]string{"MEDIA_CACHE_RETENTION_DAYS": "3", "PREVIEW_CARDS_RETENTION_DAYS": "14", "DISK_FREE_MIN": "5GiB", "DISK_CHECK_INTERVAL": "1h"})
	if ps := CheckCleanup(ok); len(ps) != 0 {
		t.Errorf("good values refused: %v", ps)
	}
}

func TestNewCleanup_Defaults(t *testing.T) {
	c, ps := NewCleanup(envMap(nil), &fakeTootctl{}, nil)
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	if c.MediaDays != 7 || c.PreviewCardDays != 180 || c.MediaDir != "/opt/mastodon/public/system" ||
		c.FreeMin.Percent != 10 || c.CheckEvery != 10*time.Minute || c.PressureGap != time.Hour || c.PressureMediaDays != 1 {
		t.Errorf("defaults %+v", c)
	}
	jobs := c.Jobs()
	if len(jobs) != 2 || jobs[0].Var != "MEDIA_CLEANUP_SCHEDULE" || jobs[0].Default != "0 3 * * 0" ||
		jobs[1].Var != "ORPHANS_CLEANUP_SCHEDULE" || jobs[1].Default != "0 4 1 * *" {
		t.Errorf("jobs %+v", jobs)
	}
}

func TestRemoveCached_RunsBothWithTheRetentionAndLogsWhatItFreed(t *testing.T) {
	log, out := testLog()
	disk := &fakeDisk{space: DiskSpace{Free: 20 * gib, Total: 100 * gib}}
	tc := &fakeTootctl{disk: disk, frees: gib}
	c, _ := NewCleanup(envMap(map[string]string{"MEDIA_CACHE_RETENTION_DAYS": "3", "PREVIEW_CARDS_RETENTION_DAYS": "30", "MEDIA_DIR": "/media"}), tc, log)
	c.FreeSpace = disk.FreeSpace
	if err := c.RemoveCached(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := tc.Calls(); got != "media remove --days 3; preview_cards remove --days 30" {
		t.Errorf("calls: %s", got)
	}
	if disk.paths[0] != "/media" {
		t.Errorf("free space read at %v", disk.paths)
	}
	if !strings.Contains(out.String(), "media cleanup freed 2.0 GiB on the media volume: 20.0 GiB free of 100.0 GiB (20%) before, 22.0 GiB free of 100.0 GiB (22%) after") {
		t.Errorf("the log does not say what was freed:\n%s", out)
	}
}

func TestRemoveCached_RefusesAShortPreviewCardRetentionButRemovesMedia(t *testing.T) {
	log, _ := testLog()
	tc := &fakeTootctl{}
	c, ps := NewCleanup(envMap(map[string]string{"PREVIEW_CARDS_RETENTION_DAYS": "7"}), tc, log)
	if len(ps) != 1 {
		t.Fatal(ps)
	}
	c.FreeSpace = (&fakeDisk{space: DiskSpace{Free: gib, Total: 2 * gib}}).FreeSpace
	err := c.RemoveCached(context.Background())
	if got := tc.Calls(); got != "media remove --days 7" {
		t.Errorf("calls: %s", got)
	}
	if err == nil || !strings.Contains(err.Error(), "preview card images not removed: PREVIEW_CARDS_RETENTION_DAYS: is \"7\"") {
		t.Errorf("error %v", err)
	}
}

func TestRemoveCached_ReportsTootctlFailures(t *testing.T) {
	log, _ := testLog()
	tc := &fakeTootctl{err: errors.New("tootctl media remove --days 7: exit status 1 (its output is in the log above)")}
	c, _ := NewCleanup(envMap(nil), tc, log)
	c.FreeSpace = (&fakeDisk{err: errors.New("no such file")}).FreeSpace
	err := c.RemoveCached(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("error %v", err)
	}
	if got := tc.Calls(); got != "media remove --days 7; preview_cards remove --days 180" {
		t.Errorf("a failed step should not keep the next from running: %s", got)
	}
}

func TestRemoveOrphans(t *testing.T) {
	log, out := testLog()
	disk := &fakeDisk{space: DiskSpace{Free: 20 * gib, Total: 100 * gib}}
	tc := &fakeTootctl{disk: disk, frees: 300 << 20}
	c, _ := NewCleanup(envMap(nil), tc, log)
	c.FreeSpace = disk.FreeSpace
	if err := c.RemoveOrphans(context.Background()); err != nil {
		t.Fatal(err)
	}
	if tc.Calls() != "media remove-orphans" || !strings.Contains(out.String(), "orphaned media cleanup freed 300.0 MiB") {
		t.Errorf("calls %s\n%s", tc.Calls(), out)
	}
}

func TestCheckDisk_CleansUpEarlyAtMostOncePerGap(t *testing.T) {
	log, out := testLog()
	disk := &fakeDisk{space: DiskSpace{Free: 5 * gib, Total: 100 * gib}}
	tc := &fakeTootctl{disk: disk, frees: 512 << 20}
	c, _ := NewCleanup(envMap(map[string]string{"DISK_FREE_MIN": "10%"}), tc, log)
	c.FreeSpace = disk.FreeSpace
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return now }

	ran, err := c.CheckDisk(context.Background())
	if !ran || err != nil {
		t.Fatalf("ran %v, err %v", ran, err)
	}
	if got := tc.Calls(); got != "media remove --days 1; preview_cards remove --days 14" {
		t.Errorf("calls: %s", got)
	}
	for _, want := range []string{
		"low disk space on the media volume: 5.0 GiB free of 100.0 GiB (5.0%), below DISK_FREE_MIN=10%",
		"keeping only 1 day of other servers' media",
		"disk-pressure cleanup freed 1.0 GiB in 0s on the media volume: 5.0 GiB free of 100.0 GiB (5.0%) before, 6.0 GiB free of 100.0 GiB (6.0%) after",
		"still below DISK_FREE_MIN=10% after the cleanup",
		"S3_ENABLED",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, out)
		}
	}

	now = now.Add(30 * time.Minute)
	if ran, _ := c.CheckDisk(context.Background()); ran {
		t.Error("cleaned up again within the hour")
	}
	now = now.Add(31 * time.Minute)
	if ran, _ := c.CheckDisk(context.Background()); !ran {
		t.Error("did not clean up again after the hour")
	}
	// Enough space: nothing runs, however long since the last cleanup.
	disk.space.Free = 50 * gib
	now = now.Add(24 * time.Hour)
	calls := tc.Calls()
	if ran, _ := c.CheckDisk(context.Background()); ran || tc.Calls() != calls {
		t.Error("cleaned up with enough space")
	}
}

func TestCheckDisk_AbsoluteThresholdAndShortRetentions(t *testing.T) {
	log, _ := testLog()
	disk := &fakeDisk{space: DiskSpace{Free: 4 * gib, Total: 1000 * gib}}
	tc := &fakeTootctl{}
	// Retention already shorter than the pressure's: kept.
	c, _ := NewCleanup(envMap(map[string]string{"DISK_FREE_MIN": "5GiB", "PREVIEW_CARDS_RETENTION_DAYS": "14"}), tc, log)
	c.FreeSpace = disk.FreeSpace
	if ran, _ := c.CheckDisk(context.Background()); !ran {
		t.Fatal("4 GiB free is below 5GiB")
	}
	if got := tc.Calls(); got != "media remove --days 1; preview_cards remove --days 14" {
		t.Errorf("calls: %s", got)
	}
}

func TestCheckDisk_DoesNotRunBesideAnotherCleanup(t *testing.T) {
	log, out := testLog()
	disk := &fakeDisk{space: DiskSpace{Free: 1 * gib, Total: 100 * gib}}
	tc := &fakeTootctl{delay: 500 * time.Millisecond}
	c, _ := NewCleanup(envMap(nil), tc, log)
	c.FreeSpace = disk.FreeSpace
	done := make(chan struct{})
	go func() { c.RemoveOrphans(context.Background()); close(done) }()
	time.Sleep(100 * time.Millisecond)
	if ran, _ := c.CheckDisk(context.Background()); ran {
		t.Error("the early cleanup ran beside the orphans cleanup")
	}
	<-done
	if !strings.Contains(out.String(), "but a cleanup is running already") {
		t.Errorf("%s", out)
	}
	// Not counted as a cleanup: the next check runs it.
	if ran, _ := c.CheckDisk(context.Background()); !ran {
		t.Error("the next check did not clean up")
	}
}

func TestGuard_OffWithS3OrOffOrAMissingVolume(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"S3":             {"S3_ENABLED": "true"},
		"off":            {"DISK_FREE_MIN": "off"},
		"missing volume": {"MEDIA_DIR": "/nonexistent/public/system"},
	} {
		t.Run(name, func(t *testing.T) {
			log, out := testLog()
			tc := &fakeTootctl{}
			c, _ := NewCleanup(envMap(env), tc, log)
			done := make(chan struct{})
			go func() { c.Guard(context.Background()); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				t.Fatal("the guard did not return")
			}
			if !strings.Contains(out.String(), "the disk-pressure guard is off") {
				t.Errorf("%s", out)
			}
			if ran, _ := c.CheckDisk(context.Background()); ran && name != "missing volume" {
				t.Error("CheckDisk ran with the guard off")
			}
		})
	}
}

func TestGuard_ChecksEveryIntervalUntilStopped(t *testing.T) {
	log, out := testLog()
	disk := &fakeDisk{space: DiskSpace{Free: 1 * gib, Total: 100 * gib}}
	tc := &fakeTootctl{}
	c, _ := NewCleanup(envMap(nil), tc, log)
	c.FreeSpace = disk.FreeSpace
	c.CheckEvery = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	c.Guard(ctx)
	if got := tc.Calls(); got != "media remove --days 1; preview_cards remove --days 14" {
		t.Errorf("calls (once: the gap is an hour): %s", got)
	}
	disk.mu.Lock()
	checks := len(disk.paths)
	disk.mu.Unlock()
	if checks < 4 {
		t.Errorf("%d free-space reads", checks)
	}
	if !strings.Contains(out.String(), "watching free space on the media volume every 50ms: cleanup runs early when less than 10% is free") {
		t.Errorf("%s", out)
	}
}

func TestBytesIEC(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 * gib: "5.0 GiB", 3 << 40: "3.0 TiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("%d: %q; want %q", n, got, want)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{time.Hour: "1h", 10 * time.Minute: "10m", 90 * time.Minute: "1h30m", 50 * time.Millisecond: "50ms", 61 * time.Second: "1m1s"} {
		if got := shortDuration(d); got != want {
			t.Errorf("%v: %q; want %q", d, got, want)
		}
	}
}
