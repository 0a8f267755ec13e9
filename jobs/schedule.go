package jobs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	_ "time/tzdata" // the images may lack /usr/share/zoneinfo

	"github.com/robfig/cron/v3"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Schedule variables: the balena variables that say when each of the
// keeper's jobs runs, with their defaults. CheckSchedules checks them all.
const (
	TimezoneVar = "SCHEDULE_TIMEZONE"

	BackupScheduleVar         = "BACKUP_SCHEDULE"
	MediaCleanupScheduleVar   = "MEDIA_CLEANUP_SCHEDULE"
	OrphansCleanupScheduleVar = "ORPHANS_CLEANUP_SCHEDULE"
	VerifyScheduleVar         = "VERIFY_SCHEDULE"

	DefaultBackupSchedule         = "@daily"    // every day at 00:00
	DefaultMediaCleanupSchedule   = "0 3 * * 0" // Sundays at 03:00
	DefaultOrphansCleanupSchedule = "0 4 1 * *" // the 1st of each month at 04:00
	DefaultVerifySchedule         = "0 5 * * 3" // Wednesdays at 05:00
)

// Schedules lists every schedule variable the keeper reads and its default.
var Schedules = []struct{ Var, Default string }{
	{BackupScheduleVar, DefaultBackupSchedule},
	{MediaCleanupScheduleVar, DefaultMediaCleanupSchedule},
	{OrphansCleanupScheduleVar, DefaultOrphansCleanupSchedule},
	{VerifyScheduleVar, DefaultVerifySchedule},
}

// minInterval is the shortest interval a schedule may have: a cron
// expression cannot go below a minute either.
const minInterval = time.Minute

// Job is one scheduled job. Name is what the log calls it ("backup",
// "media cleanup"); the schedule is the value of the variable Var, or
// Default when Var is unset. Run must return soon after ctx is done. Its
// error should say what to do: the scheduler logs it as it is.
type Job struct {
	Name, Var, Default string
	Run                func(ctx context.Context) error
}

// Scheduler runs named jobs on schedules read from variables, one job at a
// time, in the time zone SCHEDULE_TIMEZONE.
//
//   - A bad schedule disables only its own job; the others run.
//   - A job never overlaps itself: a run that comes due while the previous
//     one is still running (or waiting for its turn) is skipped, and the
//     log says so. Jobs run one at a time - they are heavy for a Pi - so a
//     job that comes due while another runs waits for it.
//   - The start of each job's last successful run is recorded in the state
//     directory (schedule/<job>.last). At start, a job whose scheduled time
//     passed since then - the device was off - runs once, CatchUpDelay
//     after the start. On an instance's first start the time is recorded
//     as a baseline instead: nothing runs at once.
//   - A failed job is logged and runs again at its next scheduled time (or
//     at the next start, as it is then overdue).
//   - Keepers sharing the state directory (an update hand-over, a terminal)
//     never run scheduled jobs at the same time: see LockJobs.
type Scheduler struct {
	// Grace is how long Run waits, once its context is done, for running
	// jobs to return.
	Grace time.Duration
	// CatchUpDelay is how long after the start an overdue job runs, so that
	// Mastodon's own processes start first after a power cut.
	CatchUpDelay time.Duration
	// Observer, when set, hears of every run and every next time.
	Observer Observer

	log      *slog.Logger
	dir      instance.Dir
	loc      *time.Location
	entries  []*schedEntry
	problems []problem.Problem
	bg       []*bgLoop
	now      func() time.Time

	slot    chan struct{} // held by the job that runs
	mu      sync.Mutex
	current string // the job holding slot
	wg      sync.WaitGroup
}

// Observer hears what the scheduler does, to record it: a job started, a
// job finished (err nil for success; a run interrupted by the keeper
// stopping is neither), and when a job runs next (zero: never, it is off
// or its schedule is bad).
type Observer interface {
	JobStarted(job string, at time.Time)
	JobFinished(job string, at time.Time, err error)
	JobNext(job string, next time.Time)
}

type schedEntry struct {
	Job
	spec    string        // the schedule as configured
	sched   cron.Schedule // nil when off or bad
	off     bool
	slug    string
	nextMu  sync.Mutex
	next    time.Time // written by Run's loop only
	running atomic.Bool
	started atomic.Pointer[time.Time] // of the current run, nil while waiting
}

func (e *schedEntry) setNext(t time.Time) {
	e.nextMu.Lock()
	e.next = t
	e.nextMu.Unlock()
}

func (e *schedEntry) getNext() time.Time {
	e.nextMu.Lock()
	defer e.nextMu.Unlock()
	return e.next
}

type bgLoop struct {
	name    string
	loop    func(ctx context.Context)
	running atomic.Bool
}

// NewScheduler reads the schedules of jobs and the time zone. The problems
// (also logged by Run) name each bad variable; the jobs they concern do not
// run, the others do. A bad time zone falls back to UTC.
func NewScheduler(getenv func(string) string, dir instance.Dir, log *slog.Logger, jobs ...Job) (*Scheduler, []problem.Problem) {
	return newScheduler(getenv, dir, log, minInterval, jobs...)
}

func newScheduler(getenv func(string) string, dir instance.Dir, log *slog.Logger, minEvery time.Duration, jobs ...Job) (*Scheduler, []problem.Problem) {
	s := &Scheduler{
		Grace:        40 * time.Second,
		CatchUpDelay: 2 * time.Minute,
		log:          log,
		dir:          dir,
		now:          time.Now,
		slot:         make(chan struct{}, 1),
	}
	var ps []problem.Problem
	s.loc, ps = loadTimezone(getenv)
	seen := map[string]bool{}
	for _, j := range jobs {
		e := &schedEntry{Job: j, slug: jobSlug(j.Name)}
		if j.Name == "" || j.Var == "" || j.Run == nil || seen[e.slug] {
			panic(fmt.Sprintf("jobs: job %q: it needs a unique name, a variable and a Run", j.Name))
		}
		seen[e.slug] = true
		e.spec = strings.TrimSpace(getenv(j.Var))
		if e.spec == "" {
			e.spec = j.Default
		}
		sched, off, p := parseSchedule(j.Var, e.spec, j.Default, s.loc, minEvery)
		if p != nil {
			p.What += fmt.Sprintf("; the %s job does not run until this is fixed (the other jobs run as scheduled)", j.Name)
			ps = append(ps, *p)
		}
		e.sched, e.off = sched, off
		s.entries = append(s.entries, e)
	}
	s.problems = ps
	return s, ps
}

// CheckSchedules reports every bad schedule variable and a bad time zone,
// for `mastokeeper config check`.
func CheckSchedules(getenv func(string) string) []problem.Problem {
	loc, ps := loadTimezone(getenv)
	for _, v := range Schedules {
		spec := strings.TrimSpace(getenv(v.Var))
		if spec == "" {
			spec = v.Default
		}
		if _, _, p := parseSchedule(v.Var, spec, v.Default, loc, minInterval); p != nil {
			ps = append(ps, *p)
		}
	}
	return ps
}

// Interval is the longest gap between two runs of the job whose schedule
// variable is name (default def) over the next few runs, as of now; false
// when the job is off or its schedule is bad.
func Interval(getenv func(string) string, name, def string, now time.Time) (time.Duration, bool) {
	loc, _ := loadTimezone(getenv)
	spec := strings.TrimSpace(getenv(name))
	if spec == "" {
		spec = def
	}
	sched, off, p := parseSchedule(name, spec, def, loc, minInterval)
	if off || p != nil {
		return 0, false
	}
	var longest time.Duration
	t := sched.Next(now.In(loc))
	for range 8 {
		n := sched.Next(t)
		longest = max(longest, n.Sub(t))
		t = n
	}
	return longest, true
}

func loadTimezone(getenv func(string) string) (*time.Location, []problem.Problem) {
	name := strings.TrimSpace(getenv(TimezoneVar))
	if name == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil || name == "Local" {
		return time.UTC, []problem.Problem{{Var: TimezoneVar,
			What: fmt.Sprintf("is %q, which is not a time zone name; use an IANA name such as Europe/Paris or America/New_York "+
				"(list: https://en.wikipedia.org/wiki/List_of_tz_database_time_zones). Until it is fixed the schedules use UTC", name),
			Example: "Europe/Berlin"}}
	}
	return loc, nil
}

const scheduleHelp = "use five cron fields - minute hour day-of-month month day-of-week, e.g. \"0 3 * * 0\" for Sundays at 03:00 - " +
	"or @hourly, @daily, @weekly, @monthly, @every 12h, or off to disable the job"

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parseSchedule parses a schedule variable's value: a 5-field cron
// expression, a descriptor, or "off".
func parseSchedule(name, spec, example string, loc *time.Location, min time.Duration) (cron.Schedule, bool, *problem.Problem) {
	bad := func(format string, args ...any) (cron.Schedule, bool, *problem.Problem) {
		return nil, false, &problem.Problem{Var: name, What: fmt.Sprintf("is %q, ", spec) + fmt.Sprintf(format, args...), Example: example}
	}
	if strings.EqualFold(spec, "off") {
		return nil, true, nil
	}
	if fields := strings.Fields(spec); len(fields) == 6 && !strings.HasPrefix(spec, "@") {
		return bad("which has 6 fields; seconds are not supported: %s", scheduleHelp)
	}
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		return bad("which names its own time zone; set %s instead and %s", TimezoneVar, scheduleHelp)
	}
	sched, err := cronParser.Parse(spec)
	if err != nil {
		return bad("which is not a schedule (%v); %s", err, scheduleHelp)
	}
	if every, ok := sched.(cron.ConstantDelaySchedule); ok && every.Delay < min {
		return bad("which is more often than every %s; %s", min, scheduleHelp)
	}
	if sched.Next(time.Now().In(loc)).IsZero() {
		return bad("which never comes (a date that does not exist?); %s", scheduleHelp)
	}
	return sched, false, nil
}

// slug turns a job's name into a file name.
func jobSlug(name string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, name), "-")
}

// Background registers a loop Run starts beside the jobs (the disk-pressure
// guard); it must return once ctx is done. Call it before Run.
func (s *Scheduler) Background(name string, loop func(ctx context.Context)) {
	s.bg = append(s.bg, &bgLoop{name: name, loop: loop})
}

// Location is the time zone the schedules are read in.
func (s *Scheduler) Location() *time.Location { return s.loc }

// Run runs the jobs until ctx is done, then waits up to Grace for running
// jobs to return. It returns an error only when some did not. Call it once.
func (s *Scheduler) Run(ctx context.Context) error {
	for _, p := range s.problems {
		s.log.Error(p.String(), "variable", p.Var)
	}
	s.log.Info("job schedules are in time zone "+s.loc.String(), "variable", TimezoneVar)
	now := s.now()
	var bgWG sync.WaitGroup
	for _, b := range s.bg {
		bgWG.Add(1)
		b.running.Store(true)
		go func() {
			defer bgWG.Done()
			defer b.running.Store(false)
			b.loop(ctx)
		}()
	}
	var active []*schedEntry
	for _, e := range s.entries {
		switch {
		case e.off:
			s.log.Info(fmt.Sprintf("%s is off (%s=off)", e.Name, e.Var), "job", e.Name)
			s.observe(func(o Observer) { o.JobNext(e.Name, time.Time{}) })
			continue
		case e.sched == nil:
			s.observe(func(o Observer) { o.JobNext(e.Name, time.Time{}) })
			continue // a problem logged above
		}
		active = append(active, e)
		e.setNext(e.sched.Next(now.In(s.loc)))
		s.catchUp(ctx, e, now)
		s.logNext(e)
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		now := s.now()
		wait := time.Minute // wake up at least every minute: the wall clock may jump
		for _, e := range active {
			if n := e.sched.Next(now.In(s.loc)); n.Before(e.next) {
				e.setNext(n) // the clock went back
			}
			if !now.Before(e.next) {
				due := e.next
				e.setNext(e.sched.Next(now.In(s.loc)))
				s.trigger(ctx, e, due, "scheduled")
			}
			wait = min(wait, e.next.Sub(now))
		}
		timer.Reset(max(wait, 10*time.Millisecond))
		select {
		case <-ctx.Done():
			return s.stop(&bgWG)
		case <-timer.C:
		}
	}
}

func (s *Scheduler) stop(bgWG *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		bgWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(s.Grace):
		var names []string
		for _, e := range s.entries {
			if e.running.Load() {
				names = append(names, e.Name)
			}
		}
		for _, b := range s.bg {
			if b.running.Load() {
				names = append(names, b.name)
			}
		}
		return fmt.Errorf("stopping: %s did not stop within %s", strings.Join(names, ", "), s.Grace)
	}
}

// catchUp decides, at start, whether e missed a run while the keeper was
// not running, and runs it once if so.
func (s *Scheduler) catchUp(ctx context.Context, e *schedEntry, now time.Time) {
	last, ok, err := s.lastSuccess(e)
	if err != nil {
		s.log.Warn(err.Error()+"; counting from now", "job", e.Name)
	}
	if !ok {
		// A fresh instance (or a new job): count from now rather than run
		// everything at the first boot.
		if err := s.recordSuccess(e, now); err != nil {
			s.log.Warn(err.Error(), "job", e.Name)
		}
		return
	}
	due, overdue := overdueSince(e.sched, last, now, s.loc)
	if !overdue {
		return
	}
	at := now.Add(s.CatchUpDelay)
	s.log.Info(fmt.Sprintf("%s is overdue: it was due %s and last ran %s (the keeper was not running); it runs once at %s",
		e.Name, s.format(due), s.format(last), s.format(at)), "job", e.Name)
	if !e.running.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer e.running.Store(false)
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.CatchUpDelay):
		}
		s.execute(ctx, e, due, "overdue")
	}()
}

// overdue reports whether a run of sched fell between the last successful
// run and now, and the first such time. A last run in the future (the clock
// went back) is not overdue.
func overdueSince(sched cron.Schedule, last, now time.Time, loc *time.Location) (time.Time, bool) {
	if last.After(now) {
		return time.Time{}, false
	}
	due := sched.Next(last.In(loc))
	return due, !due.IsZero() && !due.After(now)
}

// trigger starts a run of e unless the previous one is still going.
func (s *Scheduler) trigger(ctx context.Context, e *schedEntry, due time.Time, reason string) {
	if !e.running.CompareAndSwap(false, true) {
		msg := fmt.Sprintf("%s skipped: its previous run has not started yet (it waits for its turn)", e.Name)
		if st := e.started.Load(); st != nil {
			msg = fmt.Sprintf("%s skipped: its previous run, started %s, is still running", e.Name, s.format(*st))
		}
		s.log.Warn(msg+"; next at "+s.format(e.getNext()), "job", e.Name)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer e.running.Store(false)
		s.execute(ctx, e, due, reason)
	}()
}

// execute runs e once: one job at a time, in this keeper and across the
// keepers sharing the state directory.
func (s *Scheduler) execute(ctx context.Context, e *schedEntry, due time.Time, reason string) {
	select {
	case s.slot <- struct{}{}:
	default:
		s.mu.Lock()
		other := s.current
		s.mu.Unlock()
		s.log.Info(fmt.Sprintf("%s waits for %s to finish (jobs run one at a time)", e.Name, other), "job", e.Name)
		select {
		case s.slot <- struct{}{}:
		case <-ctx.Done():
			return
		}
	}
	s.mu.Lock()
	s.current = e.Name
	s.mu.Unlock()
	defer func() { <-s.slot }()

	unlock, err := lockJobs(ctx, s.dir, func() {
		s.log.Info(fmt.Sprintf("%s waits for a job of another keeper process (an update hand-over or a terminal) to finish", e.Name), "job", e.Name)
	})
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error(fmt.Sprintf("%s not run: %v", e.Name, err), "job", e.Name)
		}
		return
	}
	defer unlock()
	if last, ok, _ := s.lastSuccess(e); ok && !last.Before(due) {
		s.log.Info(fmt.Sprintf("%s already ran at %s (another keeper process ran it)", e.Name, s.format(last)), "job", e.Name)
		return
	}

	start := s.now()
	e.started.Store(&start)
	defer e.started.Store(nil)
	s.log.Info(e.Name+" started", "job", e.Name, "reason", reason)
	s.observe(func(o Observer) { o.JobStarted(e.Name, start) })
	err = safeRun(ctx, e.Run)
	took := jobDuration(s.now().Sub(start))
	if ctx.Err() == nil {
		s.observe(func(o Observer) {
			o.JobFinished(e.Name, s.now(), err)
			o.JobNext(e.Name, e.getNext())
		})
	}
	switch {
	case err == nil:
		if err := s.recordSuccess(e, start); err != nil {
			s.log.Warn(err.Error(), "job", e.Name)
		}
		s.log.Info(fmt.Sprintf("%s done in %s", e.Name, took), "job", e.Name)
		s.logNext(e)
	case ctx.Err() != nil:
		s.log.Warn(fmt.Sprintf("%s interrupted after %s by the keeper stopping; it runs at the next start if it is overdue then", e.Name, took), "job", e.Name)
	default:
		s.log.Error(fmt.Sprintf("%s failed after %s: %v", e.Name, took, err), "job", e.Name)
		s.log.Error(fmt.Sprintf("%s runs again at its next scheduled time, %s; to retry now, restart the keeper service (a job that missed its time runs at start)",
			e.Name, s.format(e.getNext())), "job", e.Name)
	}
}

func safeRun(ctx context.Context, run func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error (panic): %v", r)
		}
	}()
	return run(ctx)
}

func (s *Scheduler) observe(f func(o Observer)) {
	if s.Observer != nil {
		f(s.Observer)
	}
}

func (s *Scheduler) logNext(e *schedEntry) {
	next := e.getNext()
	s.observe(func(o Observer) { o.JobNext(e.Name, next) })
	if next.IsZero() {
		return
	}
	s.log.Info(fmt.Sprintf("next %s at %s", e.Name, s.format(next)), "job", e.Name, "schedule", e.Var+"="+e.spec)
}

func (s *Scheduler) format(t time.Time) string {
	t = t.In(s.loc)
	if t.Second() != 0 {
		return t.Format("2006-01-02 15:04:05 MST")
	}
	return t.Format("2006-01-02 15:04 MST")
}

func jobDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// Last successful runs are kept as one small file per job in the state
// directory, written atomically, holding an RFC 3339 time.
func lastPath(dir instance.Dir, jobName string) string {
	return filepath.Join(dir.Path, "schedule", jobSlug(jobName)+".last")
}

// LastSuccess returns when the job named jobName last started a run that
// succeeded (or when it was first scheduled), for `mastokeeper status`.
func LastSuccess(dir instance.Dir, jobName string) (time.Time, bool, error) {
	b, err := os.ReadFile(lastPath(dir, jobName))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the last run of %s: %w", jobName, err)
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the last run of %s: %s is damaged (%v)", jobName, lastPath(dir, jobName), err)
	}
	return t, true, nil
}

func (s *Scheduler) lastSuccess(e *schedEntry) (time.Time, bool, error) {
	return LastSuccess(s.dir, e.Name)
}

func (s *Scheduler) recordSuccess(e *schedEntry, t time.Time) error {
	if err := s.dir.WriteAtomic("schedule/"+jobSlug(e.Name)+".last", []byte(t.UTC().Format(time.RFC3339Nano)+"\n"), 0o644); err != nil {
		return fmt.Errorf("record the last run of %s: %w", e.Name, err)
	}
	return nil
}

// LockJobs waits until no other process sharing the state directory runs a
// scheduled job, and keeps them from starting one until unlock. A command
// that runs a job by hand (`mastokeeper backup`) takes it too.
func LockJobs(ctx context.Context, dir instance.Dir) (unlock func(), err error) {
	return lockJobs(ctx, dir, func() {})
}

// LockJobsWaiting is LockJobs, calling waiting once when it has to wait.
func LockJobsWaiting(ctx context.Context, dir instance.Dir, waiting func()) (unlock func(), err error) {
	return lockJobs(ctx, dir, waiting)
}

func lockJobs(ctx context.Context, dir instance.Dir, waiting func()) (func(), error) {
	d := filepath.Join(dir.Path, "schedule")
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("lock the job schedule: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(d, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock the job schedule: %w", err)
	}
	for said := false; ; said = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock the job schedule: %w", err)
		}
		if !said {
			waiting()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
