package keeper

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/notify"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Status is what `mastokeeper status` shows: the instance, each job, the
// backups, the disks and the channels, with what needs attention first.
// It holds no secret.
type Status struct {
	// Summary is one line: "OK", or "ATTENTION: ..." naming the most
	// urgent problem.
	Summary   string          `json:"summary"`
	Attention []Alert         `json:"attention"`
	Now       time.Time       `json:"now"`
	Mastodon  string          `json:"mastodon_version"`
	Instance  *InstanceState  `json:"instance"` // nil: not provisioned yet
	Frontdoor FrontdoorStatus `json:"front_door"`
	Jobs      []JobStatus     `json:"jobs"`
	Backups   BackupsStatus   `json:"backups"`
	Restore   RestoreStatus   `json:"restore"`
	Disks     []DiskStatus    `json:"disks"`
	// Guard is the disk-pressure guard's last look (nil: it has not run).
	Guard    *DiskState    `json:"disk_guard,omitempty"`
	Channels []ChannelInfo `json:"notify_channels"`
	Problems []string      `json:"configuration_problems"`
	Warnings []string      `json:"warnings"`
	Sizing   string        `json:"sizing"`
}

// InstanceState is the instance this device holds.
type InstanceState struct {
	Domain       string    `json:"domain"`
	PublicURL    bool      `json:"balena_public_url"`
	Provisioned  time.Time `json:"provisioned"`
	SchemaSeeded bool      `json:"schema_seeded"`
	ReadyFor     []string  `json:"schema_ready_for"`
	OwnerShown   bool      `json:"owner_password_shown"`
	// Secrets says for each secret how it came to be, never its value.
	Secrets map[string]string `json:"secrets"`
}

// FrontdoorStatus is how people reach the instance.
type FrontdoorStatus struct {
	Mode     string `json:"proxy_mode"`
	Describe string `json:"description"`
	Tunnel   bool   `json:"cloudflare_tunnel"`
	Tor      bool   `json:"tor_enabled"`
	// Onion is the onion service's address, once tor made it.
	Onion string `json:"onion_address,omitempty"`
}

// JobStatus is one job's record and schedule.
type JobStatus struct {
	Name     string `json:"name"`
	Schedule string `json:"schedule"` // VAR=value
	JobState
	Next time.Time `json:"next,omitzero"`
}

// BackupsStatus is the backups as the last backup or check saw them.
type BackupsStatus struct {
	On     bool   `json:"on"`
	Target string `json:"target"` // redacted
	// OnDevice: the target is the default, on the device's own disk.
	OnDevice bool `json:"on_device"`
	BackupsState
}

// RestoreStatus says whether a restore is unfinished.
type RestoreStatus struct {
	Unfinished bool `json:"unfinished"`
}

// DiskStatus is one volume's space, measured now.
type DiskStatus struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	Free  uint64 `json:"free"`
	Total uint64 `json:"total"`
	Error string `json:"error,omitempty"`
}

// ChannelInfo is one notification channel and its last delivery.
type ChannelInfo struct {
	Name string `json:"name"`
	ChannelState
}

// DBDataDirVar names where the database volume is mounted in the keeper
// (read only), for its free space.
const DBDataDirVar = "DB_DATA_DIR"

// Status gathers the status, reading only.
func (k *Keeper) Status(now time.Time) *Status {
	// Empty lists, not null, for machines reading --json.
	s := &Status{Now: now.UTC(), Mastodon: k.S.Config.MastodonVersion, Warnings: append([]string{}, k.S.Warnings...), Sizing: k.S.Plan.String(),
		Attention: []Alert{}, Problems: []string{}, Channels: []ChannelInfo{}}
	if rec, err := k.S.Dir.Read(); err == nil {
		in := &InstanceState{Domain: rec.LocalDomain, PublicURL: instance.IsPublicURLHost(rec.LocalDomain), Provisioned: rec.CreatedAt,
			SchemaSeeded: k.S.Dir.Has(instance.MarkerSeeded), ReadyFor: k.S.Dir.ReadyVersions(), OwnerShown: k.S.Dir.Has(instance.MarkerOwnerAnnounced),
			Secrets: map[string]string{}}
		for _, name := range instance.SecretNames {
			how := "missing"
			if rec.Secrets[name] != "" {
				how = "set, generated"
				for _, a := range rec.Adopted {
					if a == name {
						how = "set, adopted from a variable"
					}
				}
			}
			in.Secrets[name] = how
		}
		s.Instance = in
		if rec.Onion != nil && k.S.Door.Tor {
			s.Frontdoor.Onion = rec.Onion.Hostname
		}
	} else if !errors.Is(err, instance.ErrNotProvisioned) {
		s.Problems = append(s.Problems, "the instance record is unreadable: "+err.Error())
	}
	s.Frontdoor.Mode, s.Frontdoor.Describe = string(k.S.Door.Mode), describeFrontdoor(k.S.Door)
	s.Frontdoor.Tunnel, s.Frontdoor.Tor = k.S.Door.Tunnel, k.S.Door.Tor
	for _, p := range k.S.Problems() {
		s.Problems = append(s.Problems, p.String())
	}
	_, ps := notify.FromEnv(k.S.Getenv, k.domain())
	for _, p := range ps {
		s.Problems = append(s.Problems, p.String())
	}

	states := k.readStates()
	next := map[string]time.Time{}
	k.readState("next.json", &next)
	for _, j := range []struct{ name, v, def string }{
		{jobBackup, jobs.BackupScheduleVar, jobs.DefaultBackupSchedule},
		{jobVerify, jobs.VerifyScheduleVar, jobs.DefaultVerifySchedule},
		{jobMedia, jobs.MediaCleanupScheduleVar, jobs.DefaultMediaCleanupSchedule},
		{jobOrphans, jobs.OrphansCleanupScheduleVar, jobs.DefaultOrphansCleanupSchedule},
	} {
		spec := k.S.Getenv(j.v)
		if spec == "" {
			spec = j.def
		}
		s.Jobs = append(s.Jobs, JobStatus{Name: j.name, Schedule: j.v + "=" + spec, JobState: states[j.name], Next: next[j.name]})
	}
	s.Backups = BackupsStatus{On: k.S.BackupsOn(), OnDevice: k.S.TargetDefault}
	k.readState("backups.json", &s.Backups.BackupsState)
	s.Backups.Target = storage.RedactURL(k.S.Target)
	s.Restore.Unfinished = k.S.Dir.Has(instance.MarkerRestoring)

	disk := func(name, path string) {
		d := DiskStatus{Name: name, Path: path}
		if sp, err := jobs.StatFS(path); err != nil {
			d.Error = err.Error()
		} else {
			d.Free, d.Total = sp.Free, sp.Total
		}
		s.Disks = append(s.Disks, d)
	}
	disk("media", k.S.MediaDir)
	dbDir := k.S.Getenv(DBDataDirVar)
	if dbDir == "" {
		dbDir = "/var/lib/postgresql/data"
	}
	if _, err := os.Stat(dbDir); err == nil {
		disk("database", dbDir)
	}

	var guard DiskState
	if k.readState("disk.json", &guard) {
		s.Guard = &guard
	}

	chans := map[string]ChannelState{}
	k.readState("channels.json", &chans)
	for _, c := range k.channels() {
		s.Channels = append(s.Channels, ChannelInfo{Name: c.Name(), ChannelState: chans[c.Name()]})
	}

	// What needs attention: the alerts (with the time they were first
	// raised), a configuration problem, a channel that does not deliver.
	recorded := map[string]Alert{}
	k.readState("alerts.json", &recorded)
	for _, a := range k.Alerts(now) {
		if r, ok := recorded[a.Key]; ok {
			a.Since, a.Notified = r.Since, r.Notified
		}
		s.Attention = append(s.Attention, a)
	}
	if len(s.Problems) > 0 {
		s.Attention = append(s.Attention, Alert{Key: "configuration", Title: "a variable is wrong",
			Body: strings.Join(s.Problems, "; ") + ". 'mastokeeper config check' lists them.", Since: now.UTC()})
	}
	for _, c := range s.Channels {
		if c.Broken() {
			s.Attention = append(s.Attention, Alert{Key: "channel", Title: "alerts do not get through: " + c.Name,
				Body: c.LastError + ". 'mastokeeper notify test' tries every channel.", Since: c.ErrorAt})
		}
	}
	s.Summary = "OK"
	if len(s.Attention) > 0 {
		a := s.Attention[0]
		s.Summary = "ATTENTION: " + a.Title
		if d := now.Sub(a.Since); d >= time.Minute {
			s.Summary += " " + Ago(d) + " ago"
		}
		s.Summary += ": " + firstSentence(a.Body)
		if n := len(s.Attention) - 1; n > 0 {
			s.Summary += fmt.Sprintf(" (and %d more below)", n)
		}
	}
	return s
}

// firstSentence cuts text after its first sentence.
func firstSentence(text string) string {
	if i := strings.Index(text, ". "); i > 0 {
		return text[:i+1]
	}
	return text
}
