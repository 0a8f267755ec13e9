package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/bytesize"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Cleanup variables and their defaults.
const (
	MediaRetentionVar       = "MEDIA_CACHE_RETENTION_DAYS"
	PreviewCardRetentionVar = "PREVIEW_CARDS_RETENTION_DAYS"
	MediaDirVar             = "MEDIA_DIR"
	DiskFreeMinVar          = "DISK_FREE_MIN"
	DiskCheckIntervalVar    = "DISK_CHECK_INTERVAL"

	DefaultMediaRetentionDays       = 7
	DefaultPreviewCardRetentionDays = 180
	DefaultMediaDir                 = "/opt/mastodon/public/system"
	DefaultDiskFreeMin              = "10%"
	DefaultDiskCheckInterval        = 10 * time.Minute

	// MinPreviewCardRetentionDays is Mastodon's advice: a link reposted
	// within two weeks reuses its card, whose image is never fetched again.
	MinPreviewCardRetentionDays = 14
)

// Tootctl is what the cleanup runs; mastodon.Runner provides it.
type Tootctl interface {
	MediaRemove(ctx context.Context, days int) error
	PreviewCardsRemove(ctx context.Context, days int) error
	MediaRemoveOrphans(ctx context.Context) error
}

// DiskSpace is the space of a file system, in bytes; Free is what an
// unprivileged process (Mastodon) may still use.
type DiskSpace struct{ Free, Total uint64 }

// StatFS reads the space of the file system holding path.
func StatFS(path string) (DiskSpace, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return DiskSpace{}, fmt.Errorf("free space of %s: %w", path, err)
	}
	return DiskSpace{Free: st.Bavail * uint64(st.Bsize), Total: st.Blocks * uint64(st.Bsize)}, nil
}

func (d DiskSpace) String() string {
	if d.Total == 0 {
		return FormatBytes(d.Free) + " free"
	}
	return fmt.Sprintf("%s free of %s (%s)", FormatBytes(d.Free), FormatBytes(d.Total), sharePercent(d.Free, d.Total))
}

func sharePercent(part, whole uint64) string {
	p := 100 * float64(part) / float64(whole)
	if p < 10 {
		return strconv.FormatFloat(p, 'f', 1, 64) + "%"
	}
	return strconv.FormatFloat(p, 'f', 0, 64) + "%"
}

// FreeMin is the least free space the disk-pressure guard tolerates:
// a share of the file system, or a number of bytes. The zero value is off.
type FreeMin struct {
	Percent float64
	Bytes   uint64
	text    string
}

// Off reports whether the guard is off.
func (m FreeMin) Off() bool { return m.Percent == 0 && m.Bytes == 0 }

// Below reports whether d has less free space than m.
func (m FreeMin) Below(d DiskSpace) bool {
	switch {
	case m.Percent > 0:
		return d.Total > 0 && float64(d.Free) < m.Percent/100*float64(d.Total)
	case m.Bytes > 0:
		return d.Free < m.Bytes
	}
	return false
}

func (m FreeMin) String() string {
	if m.Off() {
		return "off"
	}
	return m.text
}

// ParseFreeMin reads DISK_FREE_MIN: "10%", "5GiB", "500MB", or off / 0.
func ParseFreeMin(v string) (FreeMin, error) {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "off") || v == "0" || v == "0%" {
		return FreeMin{}, nil
	}
	if num, ok := strings.CutSuffix(v, "%"); ok {
		p, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || p <= 0 || p >= 100 || math.IsNaN(p) {
			return FreeMin{}, errors.New("is not a percentage between 0 and 100")
		}
		return FreeMin{Percent: p, text: v}, nil
	}
	n, err := bytesize.Parse(v)
	if err != nil || n <= 0 {
		return FreeMin{}, errors.New("is neither a percentage (10%) nor a size (5GiB, 500MB)")
	}
	return FreeMin{Bytes: uint64(n), text: v}, nil
}

// Cleanup removes what Mastodon can fetch again - other servers' media,
// link preview images - and files no record points to, on schedules and
// when the media volume runs low on space. One of its runs at a time.
type Cleanup struct {
	Tootctl Tootctl
	Log     *slog.Logger

	// Retention in days; 0 when the variable is bad (that step is refused).
	MediaDays, PreviewCardDays int
	// Under disk pressure: media older than PressureMediaDays, preview
	// cards older than PressurePreviewCardDays (when retention is longer).
	PressureMediaDays, PressurePreviewCardDays int

	MediaDir   string // the media volume, whose free space the guard watches
	FreeMin    FreeMin
	CheckEvery time.Duration
	// PressureGap is the least time between two early cleanups.
	PressureGap time.Duration
	// GuardOff, when set, says why the guard does not run (media on S3).
	GuardOff string

	// FreeSpace reads the media volume's space: StatFS unless replaced.
	FreeSpace func(path string) (DiskSpace, error)
	// OnDisk, when set, hears the guard's every look at the volume: its
	// space, and whether it is below DISK_FREE_MIN even though an early
	// cleanup ran.
	OnDisk func(space DiskSpace, lowAfterCleanup bool)

	problems     []problem.Problem
	now          func() time.Time
	busy         chan struct{}
	mu           sync.Mutex
	lastPressure time.Time
}

// NewCleanup reads the cleanup's variables. With a bad one, the step it
// concerns refuses to run, and says so, while the rest runs.
func NewCleanup(getenv func(string) string, t Tootctl, log *slog.Logger) (*Cleanup, []problem.Problem) {
	c := &Cleanup{
		Tootctl: t, Log: log,
		PressureMediaDays: 1, PressurePreviewCardDays: MinPreviewCardRetentionDays,
		PressureGap: time.Hour,
		FreeSpace:   StatFS,
		now:         time.Now,
		busy:        make(chan struct{}, 1),
	}
	var s cleanupSettings
	s, c.problems = readCleanup(getenv)
	c.MediaDays, c.PreviewCardDays, c.MediaDir, c.FreeMin, c.CheckEvery = s.mediaDays, s.previewDays, s.mediaDir, s.freeMin, s.every
	if strings.EqualFold(strings.TrimSpace(getenv("S3_ENABLED")), "true") {
		c.GuardOff = "Mastodon stores media in object storage (S3_ENABLED=true), not on this device"
	}
	return c, c.problems
}

// CheckCleanup reports every bad cleanup variable, for `mastokeeper config
// check`.
func CheckCleanup(getenv func(string) string) []problem.Problem {
	_, ps := readCleanup(getenv)
	return ps
}

type cleanupSettings struct {
	mediaDays, previewDays int
	mediaDir               string
	freeMin                FreeMin
	every                  time.Duration
}

func readCleanup(getenv func(string) string) (cleanupSettings, []problem.Problem) {
	var ps []problem.Problem
	add := func(name, what, example string) {
		ps = append(ps, problem.Problem{Var: name, What: what, Example: example})
	}
	days := func(name string, def, lo, hi int, why string) int {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			add(name, fmt.Sprintf("is %q; it must be a whole number of days from %d to %d%s", v, lo, hi, why), strconv.Itoa(def))
			return 0
		}
		return n
	}
	s := cleanupSettings{
		mediaDays: days(MediaRetentionVar, DefaultMediaRetentionDays, 1, 3650, ""),
		previewDays: days(PreviewCardRetentionVar, DefaultPreviewCardRetentionDays, MinPreviewCardRetentionDays, 36500,
			" (Mastodon advises never below 14: a link posted again within two weeks reuses its preview card, whose image is then never fetched again)"),
		mediaDir: DefaultMediaDir,
		every:    DefaultDiskCheckInterval,
	}
	if v := strings.TrimSpace(getenv(MediaDirVar)); v != "" {
		if !filepath.IsAbs(v) {
			add(MediaDirVar, fmt.Sprintf("is %q; it must be an absolute path (where the keeper mounts the system volume)", v), DefaultMediaDir)
		} else {
			s.mediaDir = v
		}
	}
	fm := getenv(DiskFreeMinVar)
	if strings.TrimSpace(fm) == "" {
		fm = DefaultDiskFreeMin
	}
	var err error
	if s.freeMin, err = ParseFreeMin(fm); err != nil {
		add(DiskFreeMinVar, fmt.Sprintf("is %q, which %v; or off to disable the disk-pressure guard. Until it is fixed the guard uses %s", fm, err, DefaultDiskFreeMin), "10%")
		s.freeMin, _ = ParseFreeMin(DefaultDiskFreeMin)
	}
	if v := strings.TrimSpace(getenv(DiskCheckIntervalVar)); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute || d > 24*time.Hour {
			add(DiskCheckIntervalVar, fmt.Sprintf("is %q; it must be a duration from 1m to 24h, like 10m or 1h. Until it is fixed the guard checks every %s", v, DefaultDiskCheckInterval), "10m")
		} else {
			s.every = d
		}
	}
	return s, ps
}

// Jobs are the cleanup's scheduled jobs: the weekly media cleanup and the
// monthly orphaned-files cleanup.
func (c *Cleanup) Jobs() []Job {
	return []Job{
		{Name: "media cleanup", Var: MediaCleanupScheduleVar, Default: DefaultMediaCleanupSchedule, Run: c.RemoveCached},
		{Name: "orphaned media cleanup", Var: OrphansCleanupScheduleVar, Default: DefaultOrphansCleanupSchedule, Run: c.RemoveOrphans},
	}
}

// lock makes cleanups run one at a time; false if ctx ended first.
func (c *Cleanup) lock(ctx context.Context) bool {
	select {
	case c.busy <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (c *Cleanup) unlock() { <-c.busy }

func (c *Cleanup) problemFor(name string) error {
	for _, p := range c.problems {
		if p.Var == name {
			return errors.New(p.String())
		}
	}
	return fmt.Errorf("%s is not set right", name)
}

// RemoveCached is the scheduled media cleanup: other servers' media older
// than MEDIA_CACHE_RETENTION_DAYS, then preview card images older than
// PREVIEW_CARDS_RETENTION_DAYS.
func (c *Cleanup) RemoveCached(ctx context.Context) error {
	if !c.lock(ctx) {
		return ctx.Err()
	}
	defer c.unlock()
	before, berr := c.space()
	err := c.removeCached(ctx, c.MediaDays, c.PreviewCardDays)
	if berr == nil {
		c.logFreed("media cleanup", "", before)
	}
	return err
}

func (c *Cleanup) removeCached(ctx context.Context, mediaDays, previewDays int) error {
	var errs []error
	if mediaDays > 0 {
		c.Log.Info(fmt.Sprintf("removing cached media of other servers older than %s (tootctl media remove)", nDays(mediaDays)), "days", mediaDays)
		if err := c.Tootctl.MediaRemove(ctx, mediaDays); err != nil {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, fmt.Errorf("cached media not removed: %w", c.problemFor(MediaRetentionVar)))
	}
	if ctx.Err() == nil {
		if previewDays > 0 {
			c.Log.Info(fmt.Sprintf("removing preview card images older than %s (tootctl preview_cards remove)", nDays(previewDays)), "days", previewDays)
			if err := c.Tootctl.PreviewCardsRemove(ctx, previewDays); err != nil {
				errs = append(errs, err)
			}
		} else {
			errs = append(errs, fmt.Errorf("preview card images not removed: %w", c.problemFor(PreviewCardRetentionVar)))
		}
	}
	return joinErrors(errs)
}

// stepErrors are the failures of a cleanup's steps, on one line for the log.
type stepErrors []error

func (e stepErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e stepErrors) Unwrap() []error { return e }

func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return stepErrors(errs)
}

// RemoveOrphans is the scheduled orphaned-files cleanup.
func (c *Cleanup) RemoveOrphans(ctx context.Context) error {
	if !c.lock(ctx) {
		return ctx.Err()
	}
	defer c.unlock()
	before, berr := c.space()
	c.Log.Info("removing media files that belong to nothing in the database (tootctl media remove-orphans); it visits every file, so it takes long")
	err := c.Tootctl.MediaRemoveOrphans(ctx)
	if berr == nil {
		c.logFreed("orphaned media cleanup", "", before)
	}
	return err
}

func (c *Cleanup) space() (DiskSpace, error) {
	if c.GuardOff != "" {
		return DiskSpace{}, errors.New(c.GuardOff)
	}
	return c.FreeSpace(c.MediaDir)
}

// logFreed logs what a cleanup freed on the media volume. Mastodon writes
// meanwhile, so it is approximate.
func (c *Cleanup) logFreed(what, took string, before DiskSpace) DiskSpace {
	after, err := c.space()
	if err != nil {
		return before
	}
	var freed uint64
	if after.Free > before.Free {
		freed = after.Free - before.Free
	}
	if took != "" {
		took = " in " + took
	}
	c.Log.Info(fmt.Sprintf("%s freed %s%s on the media volume: %s before, %s after", what, FormatBytes(freed), took, before, after),
		"freed_bytes", freed, "free_before_bytes", before.Free, "free_after_bytes", after.Free, "media_dir", c.MediaDir)
	return after
}

// Guard watches the media volume's free space every CheckEvery until ctx
// is done; see CheckDisk.
func (c *Cleanup) Guard(ctx context.Context) {
	switch {
	case c.FreeMin.Off():
		c.Log.Info("the disk-pressure guard is off (" + DiskFreeMinVar + "=off)")
		return
	case c.GuardOff != "":
		c.Log.Info("the disk-pressure guard is off: " + c.GuardOff)
		return
	}
	sp, err := c.FreeSpace(c.MediaDir)
	if err != nil {
		c.Log.Warn(fmt.Sprintf("the disk-pressure guard is off: %v. Is the system volume mounted at %s (%s)?", err, c.MediaDir, MediaDirVar))
		return
	}
	c.Log.Info(fmt.Sprintf("watching free space on the media volume every %s: cleanup runs early when less than %s is free (now %s)",
		shortDuration(c.CheckEvery), c.FreeMin, sp), "media_dir", c.MediaDir)
	if c.FreeMin.Bytes > 0 && c.FreeMin.Bytes >= sp.Total {
		c.Log.Warn(fmt.Sprintf("%s=%s is more than the media volume's whole size (%s): the early cleanup will run every %s. Use a percentage such as 10%%",
			DiskFreeMinVar, c.FreeMin, FormatBytes(sp.Total), shortDuration(c.PressureGap)))
	}
	c.report()
	t := time.NewTicker(c.CheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := c.CheckDisk(ctx); err != nil && ctx.Err() == nil {
			c.Log.Error("disk-pressure cleanup: " + err.Error())
		}
		c.report()
	}
}

// report tells OnDisk how the volume stands.
func (c *Cleanup) report() {
	if c.OnDisk == nil {
		return
	}
	sp, err := c.FreeSpace(c.MediaDir)
	if err != nil {
		return
	}
	c.mu.Lock()
	cleaned := !c.lastPressure.IsZero()
	c.mu.Unlock()
	c.OnDisk(sp, cleaned && c.FreeMin.Below(sp))
}

// CheckDisk checks the media volume once. Below DISK_FREE_MIN it runs the
// cleanup at once with a short retention - at most once per PressureGap,
// and not while another cleanup runs - and logs what that freed. It
// reports whether it ran the cleanup.
func (c *Cleanup) CheckDisk(ctx context.Context) (bool, error) {
	if c.FreeMin.Off() || c.GuardOff != "" {
		return false, nil
	}
	before, err := c.FreeSpace(c.MediaDir)
	if err != nil {
		return false, err
	}
	if !c.FreeMin.Below(before) {
		return false, nil
	}
	now := c.now()
	c.mu.Lock()
	recent := !c.lastPressure.IsZero() && now.Sub(c.lastPressure) < c.PressureGap
	c.mu.Unlock()
	if recent {
		c.Log.Debug("low disk space on the media volume; the last early cleanup was less than " + shortDuration(c.PressureGap) + " ago")
		return false, nil
	}
	select {
	case c.busy <- struct{}{}:
	default:
		c.Log.Info(fmt.Sprintf("low disk space on the media volume (%s), but a cleanup is running already", before))
		return false, nil
	}
	defer c.unlock()
	c.mu.Lock()
	c.lastPressure = now
	c.mu.Unlock()

	mediaDays := c.PressureMediaDays
	if c.MediaDays > 0 {
		mediaDays = min(mediaDays, c.MediaDays)
	}
	previewDays := c.PreviewCardDays
	if previewDays > 0 {
		previewDays = min(previewDays, max(c.PressurePreviewCardDays, MinPreviewCardRetentionDays))
	}
	c.Log.Warn(fmt.Sprintf("low disk space on the media volume: %s, below %s=%s. Cleaning up now, ahead of schedule, keeping only %s of other servers' media",
		before, DiskFreeMinVar, c.FreeMin, nDays(mediaDays)), "media_dir", c.MediaDir)
	start := c.now()
	err = c.removeCached(ctx, mediaDays, previewDays)
	if ctx.Err() != nil {
		return true, ctx.Err()
	}
	if after := c.logFreed("disk-pressure cleanup", jobDuration(c.now().Sub(start)), before); c.FreeMin.Below(after) {
		c.Log.Warn(fmt.Sprintf("the media volume is still below %s=%s after the cleanup (%s); Mastodon fails to store uploads and fetched media when it is full. "+
			"What remains is your users' own media, other servers' avatars and headers, and - on the same disk on balena - the database. "+
			"To make room, store media in object storage (S3_ENABLED and the S3_* variables) or move to a larger disk. "+
			"The next early cleanup runs in %s at the earliest", DiskFreeMinVar, c.FreeMin, after, shortDuration(c.PressureGap)))
	}
	return true, err
}

// shortDuration writes 1h rather than 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func nDays(n int) string {
	if n == 1 {
		return "1 day"
	}
	return strconv.Itoa(n) + " days"
}

// FormatBytes renders a byte count for people: 1.5 GiB.
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
