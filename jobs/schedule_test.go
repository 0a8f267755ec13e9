package jobs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLog() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func mustTime(t *testing.T, s string, loc *time.Location) time.Time {
	t.Helper()
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseSchedule_AcceptsCronDescriptorsAndOff(t *testing.T) {
	from := mustTime(t, "2026-11-25 10:30", time.UTC) // a Wednesday
	tests := map[string]string{
		"0 3 * * 0":        "2026-11-29 03:00",
		"0 4 1 * *":        "2026-12-01 04:00",
		"@daily":           "2026-11-26 00:00",
		"@midnight":        "2026-11-26 00:00",
		"@weekly":          "2026-11-29 00:00",
		"@monthly":         "2026-12-01 00:00",
		"@hourly":          "2026-11-25 11:00",
		"@every 6h":        "2026-11-25 16:30",
		"*/15 * * * *":     "2026-11-25 10:45",
		"30 2 * * mon-fri": "2026-11-26 02:30",
	}
	for spec, want := range tests {
		sched, off, p := parseSchedule("X_SCHEDULE", spec, "@daily", time.UTC, minInterval)
		if p != nil || off {
			t.Errorf("%q: problem %v, off %v", spec, p, off)
			continue
		}
		if got := sched.Next(from).Format("2006-01-02 15:04"); got != want {
			t.Errorf("%q: next after %s is %s; want %s", spec, from, got, want)
		}
	}
	for _, spec := range []string{"off", "OFF", "Off"} {
		if _, off, p := parseSchedule("X_SCHEDULE", spec, "@daily", time.UTC, minInterval); !off || p != nil {
			t.Errorf("%q: off %v, problem %v", spec, off, p)
		}
	}
}

func TestParseSchedule_RefusesWithTheVariableAndAnExample(t *testing.T) {
	tests := map[string]string{
		"0 3 * *":            "not a schedule",
		"0 0 3 * * 0":        "seconds are not supported",
		"@fortnightly":       "not a schedule",
		"@every banana":      "not a schedule",
		"@every 10s":         "more often than every 1m0s",
		"61 * * * *":         "not a schedule",
		"0 0 30 2 *":         "never comes",
		"CRON_TZ=UTC @daily": "set SCHEDULE_TIMEZONE instead",
		"daily":              "not a schedule",
	}
	for spec, want := range tests {
		_, off, p := parseSchedule("MEDIA_CLEANUP_SCHEDULE", spec, "0 3 * * 0", time.UTC, minInterval)
		if p == nil || off {
			t.Errorf("%q accepted", spec)
			continue
		}
		msg := p.String()
		for _, w := range []string{"MEDIA_CLEANUP_SCHEDULE", spec, want, "@daily", "off", "example: MEDIA_CLEANUP_SCHEDULE=0 3 * * 0"} {
			if !strings.Contains(msg, w) {
				t.Errorf("%q: the problem does not say %q: %s", spec, w, msg)
			}
		}
	}
}

func TestSchedules_FollowTheTimeZone(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	s, ps := NewScheduler(envMap(map[string]string{"SCHEDULE_TIMEZONE": "Europe/Paris"}), instance.Dir{Path: t.TempDir()}, slog.New(slog.DiscardHandler),
		Job{Name: "media cleanup", Var: "MEDIA_CLEANUP_SCHEDULE", Default: "0 3 * * 0", Run: func(context.Context) error { return nil }})
	if len(ps) != 0 || s.Location().String() != "Europe/Paris" {
		t.Fatalf("problems %v, location %v", ps, s.Location())
	}
	e := s.entries[0]
	// Winter: Paris is UTC+1, so Sunday 03:00 in Paris is 02:00 UTC.
	next := e.sched.Next(mustTime(t, "2026-11-25 12:00", time.UTC).In(paris))
	if got := next.UTC().Format("2006-01-02 15:04"); got != "2026-11-29 02:00" {
		t.Errorf("winter: next %s UTC; want 2026-11-29 02:00", got)
	}
	// Summer: UTC+2.
	next = e.sched.Next(mustTime(t, "2026-06-24 12:00", time.UTC).In(paris))
	if got := next.UTC().Format("2006-01-02 15:04"); got != "2026-06-28 01:00" {
		t.Errorf("summer: next %s UTC; want 2026-06-28 01:00", got)
	}
	if got := s.format(next); got != "2026-06-28 03:00 CEST" {
		t.Errorf("the log shows %q; want the local time with its zone", got)
	}
}

func TestTimezone_ComesFromTheEmbeddedDatabase(t *testing.T) {
	// The images may have no /usr/share/zoneinfo: time/tzdata is linked in.
	t.Setenv("ZONEINFO", filepath.Join(t.TempDir(), "none"))
	for _, tz := range []string{"Asia/Kolkata", "America/Sao_Paulo", "UTC", "Etc/GMT-2"} {
		if _, ps := loadTimezone(envMap(map[string]string{"SCHEDULE_TIMEZONE": tz})); len(ps) != 0 {
			t.Errorf("%s: %v", tz, ps)
		}
	}
}

func TestBadTimezone_FallsBackToUTCAndSaysSo(t *testing.T) {
	s, ps := NewScheduler(envMap(map[string]string{"SCHEDULE_TIMEZONE": "Paris"}), instance.Dir{Path: t.TempDir()}, slog.New(slog.DiscardHandler))
	if len(ps) != 1 || ps[0].Var != "SCHEDULE_TIMEZONE" || !strings.Contains(ps[0].String(), "Europe/Paris") || !strings.Contains(ps[0].String(), "UTC") {
		t.Errorf("problems %v", ps)
	}
	if s.Location() != time.UTC {
		t.Errorf("location %v", s.Location())
	}
}

func TestCheckSchedules_ListsEveryProblemAtOnce(t *testing.T) {
	ps := CheckSchedules(envMap(map[string]string{
		"SCHEDULE_TIMEZONE":        "Mars/Olympus_Mons",
		"BACKUP_SCHEDULE":          "daily",
		"MEDIA_CLEANUP_SCHEDULE":   "0 3 * * 0 *",
		"ORPHANS_CLEANUP_SCHEDULE": "@every 1s",
	}))
	var vars []string
	for _, p := range ps {
		vars = append(vars, p.Var)
		if p.Example == "" {
			t.Errorf("%s: no example", p.Var)
		}
	}
	if strings.Join(vars, ",") != "SCHEDULE_TIMEZONE,BACKUP_SCHEDULE,MEDIA_CLEANUP_SCHEDULE,ORPHANS_CLEANUP_SCHEDULE" {
		t.Errorf("problems for %v", vars)
	}
	if ps := CheckSchedules(envMap(nil)); len(ps) != 0 {
		t.Errorf("the defaults have problems: %v", ps)
	}
	if ps := CheckSchedules(envMap(map[string]string{"BACKUP_SCHEDULE": "off", "MEDIA_CLEANUP_SCHEDULE": " @weekly "})); len(ps) != 0 {
		t.Errorf("off and spaces: %v", ps)
	}
}

func TestOverdueSince(t *testing.T) {
	sched, _, _ := parseSchedule("X", "0 3 * * 0", "", time.UTC, minInterval) // Sundays 03:00
	at := func(s string) time.Time { return mustTime(t, s, time.UTC) }
	tests := []struct {
		last, now string
		want      bool
		due       string
	}{
		{"2026-11-22 03:00", "2026-11-25 10:00", false, ""},                // ran last Sunday
		{"2026-11-15 03:00", "2026-11-25 10:00", true, "2026-11-22 03:00"}, // missed last Sunday
		{"2026-10-01 12:00", "2026-11-25 10:00", true, "2026-10-04 03:00"}, // missed many: once
		{"2026-11-22 02:59", "2026-11-22 03:00", true, "2026-11-22 03:00"},
		{"2026-12-20 03:00", "2026-11-25 10:00", false, ""}, // the clock went back
	}
	for _, tc := range tests {
		due, got := overdueSince(sched, at(tc.last), at(tc.now), time.UTC)
		if got != tc.want || (got && due.Format("2006-01-02 15:04") != tc.due) {
			t.Errorf("last %s now %s: overdue %v due %s; want %v %s", tc.last, tc.now, got, due, tc.want, tc.due)
		}
	}
}

// counter is a job that counts its runs and can be slow.
type counter struct {
	runs    atomic.Int32
	delay   time.Duration
	err     error
	running *atomic.Int32 // shared between jobs: how many run at once
	maxSeen *atomic.Int32
}

func (c *counter) run(ctx context.Context) error {
	c.runs.Add(1)
	if c.running != nil {
		n := c.running.Add(1)
		defer c.running.Add(-1)
		for {
			m := c.maxSeen.Load()
			if n <= m || c.maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
	}
	select {
	case <-time.After(c.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return c.err
}

// runFor runs s for d and returns Run's error.
func runFor(t *testing.T, s *Scheduler, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Run(ctx)
}

func writeLast(t *testing.T, dir instance.Dir, job string, at time.Time) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir.Path, "schedule"), 0o700)
	if err := os.WriteFile(lastPath(dir, job), []byte(at.UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestFirstStart_RecordsABaselineAndRunsNothing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		dir := instance.Dir{Path: t.TempDir()}
		log, out := testLog()
		c := &counter{}
		now := mustTime(t, "2026-11-25 10:00", time.UTC)
		s, _ := NewScheduler(envMap(nil), dir, log, Job{Name: "media cleanup", Var: "MEDIA_CLEANUP_SCHEDULE", Default: "0 3 * * 0", Run: c.run})
		s.now = func() time.Time { return now }
		s.CatchUpDelay = 0
		runFor(t, s, 300*time.Millisecond)
		if c.runs.Load() != 0 {
			t.Errorf("a fresh instance ran the job at once")
		}
		last, ok, err := LastSuccess(dir, "media cleanup")
		if !ok || err != nil || !last.Equal(now) {
			t.Errorf("baseline %v %v %v; want %v", last, ok, err, now)
		}
		if !strings.Contains(out.String(), "next media cleanup at 2026-11-29 03:00 UTC") {
			t.Errorf("the log does not say when the job runs next:\n%s", out)
		}
	})
}

func TestAfterAPowerCut_AnOverdueJobRunsOnceAtStart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		dir := instance.Dir{Path: t.TempDir()}
		log, out := testLog()
		now := mustTime(t, "2026-11-25 10:00", time.UTC)
		// Missed three Sundays and two months: each job runs once.
		writeLast(t, dir, "media cleanup", mustTime(t, "2026-11-01 03:00", time.UTC))
		writeLast(t, dir, "orphaned media cleanup", mustTime(t, "2026-09-01 04:00", time.UTC))
		writeLast(t, dir, "backup", mustTime(t, "2026-11-25 00:00", time.UTC)) // ran today: not overdue
		media, orphans, backup := &counter{}, &counter{}, &counter{}
		s, _ := NewScheduler(envMap(nil), dir, log,
			Job{Name: "media cleanup", Var: "MEDIA_CLEANUP_SCHEDULE", Default: "0 3 * * 0", Run: media.run},
			Job{Name: "orphaned media cleanup", Var: "ORPHANS_CLEANUP_SCHEDULE", Default: "0 4 1 * *", Run: orphans.run},
			Job{Name: "backup", Var: "BACKUP_SCHEDULE", Default: "@daily", Run: backup.run})
		s.now = func() time.Time { return now }
		s.CatchUpDelay = 0
		if err := runFor(t, s, 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if media.runs.Load() != 1 || orphans.runs.Load() != 1 || backup.runs.Load() != 0 {
			t.Errorf("runs: media %d, orphans %d, backup %d; want 1, 1, 0", media.runs.Load(), orphans.runs.Load(), backup.runs.Load())
		}
		if last, _, _ := LastSuccess(dir, "media cleanup"); !last.Equal(now) {
			t.Errorf("the run was not recorded: last %v", last)
		}
		for _, want := range []string{
			"media cleanup is overdue: it was due 2026-11-08 03:00 UTC and last ran 2026-11-01 03:00 UTC",
			"media cleanup done in",
			"orphaned media cleanup done in",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("the log does not say %q:\n%s", want, out)
			}
		}

		// The next start, nothing is overdue any more.
		media2 := &counter{}
		s, _ = NewScheduler(envMap(nil), dir, log, Job{Name: "media cleanup", Var: "MEDIA_CLEANUP_SCHEDULE", Default: "0 3 * * 0", Run: media2.run})
		s.now = func() time.Time { return now.Add(time.Hour) }
		s.CatchUpDelay = 0
		runFor(t, s, 300*time.Millisecond)
		if media2.runs.Load() != 0 {
			t.Error("the job ran again at the next start")
		}
	})
}

func TestOverdueRun_WaitsForTheCatchUpDelay(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		dir := instance.Dir{Path: t.TempDir()}
		writeLast(t, dir, "media cleanup", time.Now().Add(-30*24*time.Hour))
		c := &counter{}
		s, _ := NewScheduler(envMap(nil), dir, slog.New(slog.DiscardHandler), Job{Name: "media cleanup", Var: "MEDIA_CLEANUP_SCHEDULE", Default: "0 3 * * 0", Run: c.run})
		s.CatchUpDelay = time.Hour
		runFor(t, s, 300*time.Millisecond)
		if c.runs.Load() != 0 {
			t.Error("the overdue job ran before the catch-up delay")
		}
	})
}

func TestSameJob_NeverOverlapsItself(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		log, out := testLog()
		slow := &counter{delay: 5 * time.Second}
		s, ps := newScheduler(envMap(map[string]string{"SLOW_SCHEDULE": "@every 1s"}), instance.Dir{Path: t.TempDir()}, log, time.Second,
			Job{Name: "slow job", Var: "SLOW_SCHEDULE", Run: slow.run})
		if len(ps) != 0 {
			t.Fatal(ps)
		}
		runFor(t, s, 3700*time.Millisecond)
		if n := slow.runs.Load(); n != 1 {
			t.Errorf("%d runs; want 1 (the others skipped)", n)
		}
		if !strings.Contains(out.String(), "slow job skipped: its previous run, started") || !strings.Contains(out.String(), "is still running") {
			t.Errorf("the log does not say a run was skipped:\n%s", out)
		}
	})
}

func TestJobs_RunOneAtATime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		log, out := testLog()
		var running, maxSeen atomic.Int32
		a := &counter{delay: 1200 * time.Millisecond, running: &running, maxSeen: &maxSeen}
		b := &counter{delay: 1200 * time.Millisecond, running: &running, maxSeen: &maxSeen}
		env := envMap(map[string]string{"A_SCHEDULE": "@every 1s", "B_SCHEDULE": "@every 1s"})
		s, _ := newScheduler(env, instance.Dir{Path: t.TempDir()}, log, time.Second,
			Job{Name: "job a", Var: "A_SCHEDULE", Run: a.run}, Job{Name: "job b", Var: "B_SCHEDULE", Run: b.run})
		runFor(t, s, 3500*time.Millisecond)
		if maxSeen.Load() != 1 {
			t.Errorf("%d jobs ran at once", maxSeen.Load())
		}
		if a.runs.Load() == 0 || b.runs.Load() == 0 {
			t.Errorf("runs a %d, b %d: both should have run", a.runs.Load(), b.runs.Load())
		}
		if !strings.Contains(out.String(), "waits for job") {
			t.Errorf("the log does not say a job waited:\n%s", out)
		}
	})
}

func TestBadSchedule_DoesNotStopTheOthers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		log, out := testLog()
		good := &counter{}
		bad := &counter{}
		env := envMap(map[string]string{"GOOD_SCHEDULE": "@every 1s", "BAD_SCHEDULE": "every day"})
		s, ps := newScheduler(env, instance.Dir{Path: t.TempDir()}, log, time.Second,
			Job{Name: "bad job", Var: "BAD_SCHEDULE", Default: "@daily", Run: bad.run},
			Job{Name: "good job", Var: "GOOD_SCHEDULE", Run: good.run})
		if len(ps) != 1 || ps[0].Var != "BAD_SCHEDULE" {
			t.Fatalf("problems %v", ps)
		}
		if err := runFor(t, s, 2500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if good.runs.Load() == 0 {
			t.Error("the good job did not run")
		}
		if bad.runs.Load() != 0 {
			t.Error("the job with a bad schedule ran")
		}
		log1 := out.String()
		for _, want := range []string{`level=ERROR msg="BAD_SCHEDULE: is \"every day\"`, "the bad job job does not run until this is fixed", "example: BAD_SCHEDULE=@daily", "good job done in"} {
			if !strings.Contains(log1, want) {
				t.Errorf("the log does not say %q:\n%s", want, log1)
			}
		}
	})
}

func TestOff_DisablesAJob(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		log, out := testLog()
		c := &counter{}
		s, ps := newScheduler(envMap(map[string]string{"X_SCHEDULE": "off"}), instance.Dir{Path: t.TempDir()}, log, time.Second,
			Job{Name: "backup", Var: "X_SCHEDULE", Default: "@every 1s", Run: c.run})
		if len(ps) != 0 {
			t.Fatal(ps)
		}
		runFor(t, s, 1500*time.Millisecond)
		if c.runs.Load() != 0 || !strings.Contains(out.String(), "backup is off (X_SCHEDULE=off)") {
			t.Errorf("runs %d\n%s", c.runs.Load(), out)
		}
	})
}

func TestFailedJob_IsLoggedAndRetriedAtItsNextTime(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		dir := instance.Dir{Path: t.TempDir()}
		log, out := testLog()
		c := &counter{err: errors.New("the target is unreachable; check BACKUP_TARGET")}
		s, _ := newScheduler(envMap(map[string]string{"X_SCHEDULE": "@every 1s"}), dir, log, time.Second,
			Job{Name: "backup", Var: "X_SCHEDULE", Run: c.run})
		baseline := time.Now().Truncate(time.Second)
		writeLast(t, dir, "backup", baseline)
		runFor(t, s, 2600*time.Millisecond)
		if c.runs.Load() < 2 {
			t.Errorf("%d runs; a failed job runs again at its next time", c.runs.Load())
		}
		for _, want := range []string{"backup failed after", "the target is unreachable; check BACKUP_TARGET", "runs again at its next scheduled time", "restart the keeper service"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("the log does not say %q:\n%s", want, out)
			}
		}
		// Failures are not successes: the next start finds the job overdue.
		if last, _, _ := LastSuccess(dir, "backup"); !last.Equal(baseline) {
			t.Errorf("a failed run was recorded as the last success (%v)", last)
		}
	})
}

func TestPanickingJob_IsAFailureNotACrash(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		log, out := testLog()
		s, _ := newScheduler(envMap(map[string]string{"X_SCHEDULE": "@every 1s"}), instance.Dir{Path: t.TempDir()}, log, time.Second,
			Job{Name: "backup", Var: "X_SCHEDULE", Run: func(context.Context) error { panic("boom") }})
		if err := runFor(t, s, 1500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "backup failed after") || !strings.Contains(out.String(), "boom") {
			t.Errorf("%s", out)
		}
	})
}

func TestStop_WaitsForRunningJobsWithinTheGrace(t *testing.T) {
	t.Parallel()
	t.Run("a job that stops when asked", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			log, out := testLog()
			started := make(chan struct{}, 1)
			s, _ := newScheduler(envMap(map[string]string{"X_SCHEDULE": "@every 1s"}), instance.Dir{Path: t.TempDir()}, log, time.Second,
				Job{Name: "backup", Var: "X_SCHEDULE", Run: func(ctx context.Context) error {
					started <- struct{}{}
					<-ctx.Done()
					time.Sleep(200 * time.Millisecond) // cleaning up
					return ctx.Err()
				}})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- s.Run(ctx) }()
			<-started
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			if !strings.Contains(out.String(), "backup interrupted after") {
				t.Errorf("%s", out)
			}
		})
	})
	t.Run("a job that does not", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			started := make(chan struct{}, 1)
			release := make(chan struct{})
			s, _ := newScheduler(envMap(map[string]string{"X_SCHEDULE": "@every 1s"}), instance.Dir{Path: t.TempDir()}, slog.New(slog.DiscardHandler), time.Second,
				Job{Name: "stubborn job", Var: "X_SCHEDULE", Run: func(ctx context.Context) error {
					started <- struct{}{}
					<-release
					return nil
				}})
			s.Grace = 300 * time.Millisecond
			t.Cleanup(func() { close(release); s.wg.Wait() }) // before the TempDir goes
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- s.Run(ctx) }()
			<-started
			cancel()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), "stubborn job did not stop within 300ms") {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(3 * time.Second):
				t.Error("Run did not return after its grace")
			}
		})
	})
}

func TestBackgroundLoops_RunBesideTheJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := NewScheduler(envMap(nil), instance.Dir{Path: t.TempDir()}, slog.New(slog.DiscardHandler))
		var ran, stopped atomic.Bool
		s.Background("guard", func(ctx context.Context) {
			ran.Store(true)
			<-ctx.Done()
			stopped.Store(true)
		})
		if err := runFor(t, s, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if !ran.Load() || !stopped.Load() {
			t.Errorf("ran %v, stopped %v", ran.Load(), stopped.Load())
		}
	})
}

func TestAnotherKeeper_IsWaitedForAndNotRepeated(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		dir := instance.Dir{Path: t.TempDir()}
		log, out := testLog()
		unlock, err := LockJobs(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		c := &counter{}
		s, _ := newScheduler(envMap(map[string]string{"X_SCHEDULE": "@every 1s"}), dir, log, time.Second,
			Job{Name: "backup", Var: "X_SCHEDULE", Run: c.run})
		go func() {
			time.Sleep(1500 * time.Millisecond)
			// The other keeper ran the job meanwhile, then lets go.
			writeLast(t, dir, "backup", time.Now().Add(10*time.Second))
			unlock()
		}()
		runFor(t, s, 2600*time.Millisecond)
		if c.runs.Load() != 0 {
			t.Errorf("the job ran %d times although another keeper had just run it", c.runs.Load())
		}
		for _, want := range []string{"waits for a job of another keeper process", "backup already ran at"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("the log does not say %q:\n%s", want, out)
			}
		}
	})
}

func TestLastSuccess_IsWrittenAtomicallyAndDamageIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := instance.Dir{Path: t.TempDir()}
		if _, ok, err := LastSuccess(dir, "backup"); ok || err != nil {
			t.Errorf("no record: ok %v err %v", ok, err)
		}
		os.MkdirAll(filepath.Join(dir.Path, "schedule"), 0o700)
		os.WriteFile(lastPath(dir, "backup"), []byte("garbage"), 0o644)
		if _, ok, err := LastSuccess(dir, "backup"); ok || err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("damaged record: ok %v err %v", ok, err)
		}
		// A damaged record is replaced by a baseline, and the job is not run.
		c := &counter{}
		log, out := testLog()
		s, _ := NewScheduler(envMap(nil), dir, log, Job{Name: "backup", Var: "BACKUP_SCHEDULE", Default: "@daily", Run: c.run})
		s.CatchUpDelay = 0
		runFor(t, s, 200*time.Millisecond)
		if _, ok, err := LastSuccess(dir, "backup"); !ok || err != nil {
			t.Errorf("after start: ok %v err %v\n%s", ok, err, out)
		}
		if lastPath(dir, "Orphaned media cleanup") != filepath.Join(dir.Path, "schedule", "orphaned-media-cleanup.last") {
			t.Errorf("path %s", lastPath(dir, "Orphaned media cleanup"))
		}
	})
}
