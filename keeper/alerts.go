package keeper

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/notify"
)

// Job names, as the scheduler calls them.
const (
	jobBackup  = "backup"
	jobVerify  = "verification"
	jobMedia   = "media cleanup"
	jobOrphans = "orphaned media cleanup"
)

// repeatEvery is how often an alert that lasts is said again.
const repeatEvery = 24 * time.Hour

// Alert is something the admin must hear about.
type Alert struct {
	Key   string    `json:"key"`
	Title string    `json:"title"` // "the last backup failed"
	Body  string    `json:"body"`  // what, since when, what to do
	Since time.Time `json:"since"`
	// Notified is when it was last said (raised or repeated).
	Notified time.Time `json:"notified,omitzero"`
}

// Alerts are the conditions that need the admin now, most urgent first.
func (k *Keeper) Alerts(now time.Time) []Alert {
	var out []Alert
	add := func(key, title, body string, since time.Time) {
		out = append(out, Alert{Key: key, Title: title, Body: body, Since: since.UTC()})
	}
	if k.S.Dir.Has(instance.MarkerRestoring) {
		add("restore-unfinished", "a restore onto this device did not finish",
			"A restore stopped midway: the database may be half-restored, and web, sidekiq and streaming stay stopped. "+
				"Finish it: run 'mastokeeper restore' in a terminal on the keeper service (with --from URL if the backups are not at BACKUP_TARGET).", now)
	}
	if !k.S.BackupsOn() {
		add("backups-off", "backups are OFF",
			"No backup is taken: BACKUP_PASSPHRASE (or BACKUP_AGE_RECIPIENT) is not set. Set it in the dashboard, and BACKUP_TARGET to a place off this device "+
				`(example: BACKUP_PASSPHRASE="four random words you keep elsewhere", BACKUP_TARGET=s3://my-bucket/mastodon). Without a backup, a dead SD card or disk is the end of the instance.`, now)
	}
	states := k.readStates()
	next := map[string]time.Time{}
	k.readState("next.json", &next)
	nextRun := func(job string) string {
		if n, ok := next[job]; ok {
			return "; the next run is at " + n.Format(time.RFC3339)
		}
		return ""
	}
	if s := states[jobBackup]; k.S.BackupsOn() && s.Failing() {
		if s.Takeover {
			add("takeover", "backups stopped: this device may not write to the backup target",
				"The takeover guard refused the backup: "+s.LastError, s.LastFailure)
		} else {
			add("job-backup", "the last backup failed",
				fmt.Sprintf("The backup of %s failed: %s%s. To try again now: 'mastokeeper backup'.", s.LastFailure.Format(time.RFC3339), s.LastError, nextRun(jobBackup)), s.LastFailure)
		}
	}
	if s := states[jobVerify]; k.S.BackupsOn() && s.Failing() {
		add("job-verification", "the newest backup failed verification",
			fmt.Sprintf("The verification of %s failed: %s%s. To check again now: 'mastokeeper backup check'.", s.LastFailure.Format(time.RFC3339), s.LastError, nextRun(jobVerify)), s.LastFailure)
	}
	for _, job := range []string{jobMedia, jobOrphans} {
		if s := states[job]; s.Failing() {
			add("job-"+strings.ReplaceAll(job, " ", "-"), "the "+job+" failed",
				fmt.Sprintf("The %s of %s failed: %s%s.", job, s.LastFailure.Format(time.RFC3339), s.LastError, nextRun(job)), s.LastFailure)
		}
	}
	if k.S.BackupsOn() {
		var b BackupsState
		k.readState("backups.json", &b)
		last := states[jobBackup].LastSuccess
		if last.IsZero() {
			last = b.OnSince
		}
		if every, on := jobs.Interval(k.S.Getenv, jobs.BackupScheduleVar, jobs.DefaultBackupSchedule, now); on && !last.IsZero() && now.Sub(last) > 2*every {
			add("backup-overdue", "no successful backup for "+Ago(now.Sub(last)),
				fmt.Sprintf("The last successful backup was at %s; backups are due every %s (%s). See 'mastokeeper status' for why.", last.Format(time.RFC3339), Ago(every), jobs.BackupScheduleVar), last)
		}
	}
	var d DiskState
	if k.readState("disk.json", &d) && d.LowAfterCleanup {
		add("disk-low", "the media volume is almost full",
			fmt.Sprintf("Only %s of %s is free on the media volume, below DISK_FREE_MIN=%s, even after the early cleanup removed other servers' media. "+
				"Mastodon fails to store uploads when it is full. Make room: store media in object storage (S3_ENABLED and the S3_* variables) or move to a larger disk.",
				jobs.FormatBytes(d.Free), jobs.FormatBytes(d.Total), d.Threshold), d.At)
	}
	return out
}

// Ago says a duration in words, for people: "3 days", "5 hours".
func Ago(d time.Duration) string {
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case d >= 48*time.Hour:
		return plural(int(d/(24*time.Hour)), "day")
	case d >= 2*time.Hour:
		return plural(int(d/time.Hour), "hour")
	case d >= 2*time.Minute:
		return plural(int(d/time.Minute), "minute")
	}
	return plural(int(d/time.Second), "second")
}

// lockAlerts serialises the alerts' bookkeeping between the keeper service
// and a terminal.
func (k *Keeper) lockAlerts() (func(), error) {
	if err := k.S.Dir.WriteAtomic(path.Join(statusDir, ".keep"), nil, 0o600); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(k.S.Dir.Path)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.OpenFile(path.Join(statusDir, ".alerts.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// CheckAlerts compares the alerts with the ones recorded: a new one is
// raised on every channel, one that lasts is said again daily, one that
// ended is resolved. A channel that fails is logged and recorded, and
// never fails the caller.
func (k *Keeper) CheckAlerts(ctx context.Context, now time.Time) {
	log := k.logger("alerts")
	unlock, err := k.lockAlerts()
	if err != nil {
		log.Warn("alerts are not checked: " + err.Error())
		return
	}
	defer unlock()
	var b BackupsState
	k.readState("backups.json", &b)
	if on := k.S.BackupsOn(); on != !b.OnSince.IsZero() {
		b.OnSince = time.Time{}
		if on {
			b.OnSince = now.UTC()
		}
		k.writeState("backups.json", b)
	}
	recorded := map[string]Alert{}
	k.readState("alerts.json", &recorded)
	current := map[string]Alert{}
	for _, a := range k.Alerts(now) {
		current[a.Key] = a
	}
	var send []notify.Message
	domain := k.domain()
	for key, a := range current {
		old, known := recorded[key]
		switch {
		case !known:
			a.Notified = now.UTC()
			k.frame(log, "ATTENTION: "+a.Title, a.Body)
			send = append(send, notify.Message{Kind: notify.Raised, Domain: domain, Title: a.Title, Body: a.Body})
		case now.Sub(old.Notified) >= repeatEvery:
			a.Since, a.Notified = old.Since, now.UTC()
			k.frame(log, "STILL: "+a.Title+" (since "+Ago(now.Sub(old.Since))+")", a.Body)
			send = append(send, notify.Message{Kind: notify.Repeated, Domain: domain, Title: a.Title + " (since " + Ago(now.Sub(old.Since)) + ")", Body: a.Body})
		default:
			a.Since, a.Notified = old.Since, old.Notified
		}
		current[key] = a
	}
	for key, old := range recorded {
		if _, still := current[key]; !still {
			log.Info("resolved: " + old.Title)
			send = append(send, notify.Message{Kind: notify.Resolved, Domain: domain, Title: old.Title,
				Body: "Resolved at " + now.UTC().Format(time.RFC3339) + ", after " + Ago(now.Sub(old.Since)) + ". Earlier: " + old.Body})
		}
	}
	// Recorded before sending: a kill meanwhile loses a message, never
	// repeats one a hundred times.
	k.writeState("alerts.json", current)
	for _, m := range send {
		k.deliver(ctx, m)
	}
}

// AnnounceAlerts frames every lasting alert in the log, as the keeper does
// at every start: the log is where the dashboard shows it.
func (k *Keeper) AnnounceAlerts(now time.Time) {
	log := k.logger("alerts")
	for _, a := range k.Alerts(now) {
		k.frame(log, "ATTENTION: "+a.Title, a.Body)
	}
}

// frame writes a framed alert into the log, then the same as a log line.
func (k *Keeper) frame(log interface{ Error(string, ...any) }, title, body string) {
	if k.Banner != nil {
		var b bytes.Buffer
		jobs.WriteBanner(&b, title, body)
		k.Banner.Write(b.Bytes())
	}
	log.Error(title + ": " + body)
}

func (k *Keeper) domain() string {
	if rec, err := k.S.Dir.Read(); err == nil {
		return rec.LocalDomain
	}
	return k.S.Getenv("LOCAL_DOMAIN")
}

// ChannelState is a channel's last delivery.
type ChannelState struct {
	LastOK    time.Time `json:"last_ok,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	ErrorAt   time.Time `json:"error_at,omitzero"`
}

// Broken says whether the channel's last delivery failed.
func (c ChannelState) Broken() bool { return c.ErrorAt.After(c.LastOK) }

func (k *Keeper) channels() []notify.Channel {
	chans, _ := notify.FromEnv(k.S.Getenv, k.domain()) // bad variables: config check and status say so
	return chans
}

// deliver sends m on every channel and records how each went.
func (k *Keeper) deliver(ctx context.Context, m notify.Message) []error {
	var errs []error
	for _, c := range k.channels() {
		errs = append(errs, k.record(c, c.Send(ctx, m)))
	}
	return errs
}

type heartbeat = notify.Heartbeat

// heartbeat tells every monitoring service of a backup run.
func (k *Keeper) heartbeat(f func(ctx context.Context, h heartbeat) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	for _, c := range k.channels() {
		if h, ok := c.(notify.Heartbeat); ok {
			k.record(c, f(ctx, h))
		}
	}
}

// record notes a channel's delivery in status/channels.json.
func (k *Keeper) record(c notify.Channel, err error) error {
	stateMu.Lock()
	defer stateMu.Unlock()
	m := map[string]ChannelState{}
	k.readState("channels.json", &m)
	s := m[c.Name()]
	if err == nil {
		s.LastOK = time.Now().UTC()
	} else {
		s.LastError, s.ErrorAt = err.Error(), time.Now().UTC()
		k.logger("alerts").Warn("could not notify: "+err.Error(), "channel", c.Name())
	}
	m[c.Name()] = s
	k.writeState("channels.json", m)
	return err
}

// TestChannels sends a test message through every channel.
func (k *Keeper) TestChannels(ctx context.Context) (names []string, errs []error) {
	chans := k.channels()
	sort.Slice(chans, func(i, j int) bool { return chans[i].Name() < chans[j].Name() })
	for _, c := range chans {
		names = append(names, c.Name())
		errs = append(errs, k.record(c, c.Send(ctx, notify.Message{Kind: notify.Test, Domain: k.domain(), Title: "the keeper can reach you",
			Body: "This is a test from 'mastokeeper notify test'. When a backup fails, the disk fills up or backups are off, you hear it this way."})))
	}
	return names, errs
}
