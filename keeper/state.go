package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// What the keeper records about its work, in the state directory's
// status/ folder: one file per job (written by whoever ran it, under the
// job lock), the schedule's next runs (written by the keeper service
// only), the backups' summary, the disk, the alerts and the channels.
// Each file is replaced atomically, so a reader or a kill at any instant
// sees the old record or the new one. `mastokeeper status` reads them.
const statusDir = "status"

// JobState is what the keeper recorded about one job.
type JobState struct {
	LastStart   time.Time `json:"last_start,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastFailure time.Time `json:"last_failure,omitzero"`
	// LastError is the last failure's message (never a secret).
	LastError string `json:"last_error,omitempty"`
	// Takeover: the last failure was the takeover guard refusing.
	Takeover bool `json:"takeover,omitempty"`
}

// Failing says whether the job's last outcome is a failure.
func (j JobState) Failing() bool { return j.LastFailure.After(j.LastSuccess) }

// BackupsState sums up the target after the last backup or check.
type BackupsState struct {
	Target         string       `json:"target"` // redacted
	Count          int          `json:"count"`
	Newest         *BackupBrief `json:"newest,omitempty"`
	NewestVerified *BackupBrief `json:"newest_verified,omitempty"`
	At             time.Time    `json:"at"`
	// OnSince is when the keeper first saw backups switched on: an
	// instance that never had a backup is overdue from then.
	OnSince time.Time `json:"on_since,omitzero"`
}

// BackupBrief is one backup in the summary.
type BackupBrief struct {
	ID    string    `json:"id"`
	Taken time.Time `json:"taken"`
	Size  int64     `json:"size"`
}

// DiskState is the disk-pressure guard's last look at the media volume.
type DiskState struct {
	At              time.Time `json:"at"`
	Free            uint64    `json:"free"`
	Total           uint64    `json:"total"`
	LowAfterCleanup bool      `json:"low_after_cleanup"`
	Threshold       string    `json:"threshold"`
}

var stateMu sync.Mutex // one writer per file within a process

func (k *Keeper) readState(name string, v any) bool {
	b, err := os.ReadFile(filepath.Join(k.S.Dir.Path, statusDir, name))
	if err != nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}

// writeState records v; a record that cannot be written is logged, never a
// reason for a job to fail.
func (k *Keeper) writeState(name string, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	if err := k.S.Dir.WriteAtomic(path.Join(statusDir, name), append(b, '\n'), 0o600); err != nil {
		k.logger("keeper").Warn("could not record the keeper's status: " + err.Error())
	}
}

// jobFile names a job's record: "backup" -> job-backup.json.
func jobFile(job string) string { return "job-" + strings.ReplaceAll(job, " ", "-") + ".json" }

// JobStarted records a job's start (jobs.Observer).
func (k *Keeper) JobStarted(job string, at time.Time) {
	stateMu.Lock()
	var s JobState
	k.readState(jobFile(job), &s)
	s.LastStart = at.UTC()
	k.writeState(jobFile(job), s)
	stateMu.Unlock()
	if job == jobBackup {
		k.heartbeat(func(ctx context.Context, h heartbeat) error { return h.Started(ctx) })
	}
}

// JobFinished records a job's outcome and raises or resolves the alerts it
// changes (jobs.Observer).
func (k *Keeper) JobFinished(job string, at time.Time, err error) {
	if (job == jobBackup || job == jobVerify) && !k.S.BackupsOn() {
		k.CheckAlerts(context.Background(), at) // it did nothing: backups are off
		return
	}
	if job == jobBackup && err == nil {
		k.heartbeat(func(ctx context.Context, h heartbeat) error { return h.Succeeded(ctx, "backup complete") })
	}
	stateMu.Lock()
	var s JobState
	k.readState(jobFile(job), &s)
	if err == nil {
		s.LastSuccess = at.UTC()
	} else {
		s.LastFailure, s.LastError = at.UTC(), storage.Redact(err.Error())
		s.Takeover = errors.Is(err, snapshot.ErrNotOwner) || errors.Is(err, snapshot.ErrOtherInstance)
	}
	k.writeState(jobFile(job), s)
	stateMu.Unlock()
	k.CheckAlerts(context.Background(), at)
}

// JobNext records when a job runs next (jobs.Observer); zero: never.
func (k *Keeper) JobNext(job string, next time.Time) {
	stateMu.Lock()
	defer stateMu.Unlock()
	m := map[string]time.Time{}
	k.readState("next.json", &m)
	if next.IsZero() {
		delete(m, job)
	} else {
		m[job] = next.UTC()
	}
	k.writeState("next.json", m)
}

// recordBackups sums up the target for status, after a backup.
func (k *Keeper) recordBackups(ctx context.Context, t *target) {
	rd := t.reader()
	l, err := rd.List(ctx)
	if err != nil {
		return
	}
	var s BackupsState
	k.readState("backups.json", &s)
	s.Target, s.Count, s.At, s.Newest, s.NewestVerified = t.store.String(), len(l.Snapshots), time.Now().UTC(), nil, nil
	brief := func(m *snapshot.Manifest) *BackupBrief {
		return &BackupBrief{ID: m.ID, Taken: m.CreatedAt.UTC(), Size: m.Size()}
	}
	if n := len(l.Snapshots); n > 0 {
		s.Newest = brief(l.Snapshots[n-1])
		for i := n - 1; i >= 0; i-- {
			if rd.Verified(ctx, l, l.Snapshots[i].ID) {
				s.NewestVerified = brief(l.Snapshots[i])
				break
			}
		}
	}
	stateMu.Lock()
	k.writeState("backups.json", s)
	stateMu.Unlock()
}

// recordDisk notes the disk-pressure guard's look at the media volume.
func (k *Keeper) recordDisk(sp jobs.DiskSpace, lowAfterCleanup bool, threshold string) {
	stateMu.Lock()
	var old DiskState
	k.readState("disk.json", &old)
	k.writeState("disk.json", DiskState{At: time.Now().UTC(), Free: sp.Free, Total: sp.Total, LowAfterCleanup: lowAfterCleanup, Threshold: threshold})
	stateMu.Unlock()
	if old.LowAfterCleanup != lowAfterCleanup {
		k.CheckAlerts(context.Background(), time.Now())
	}
}

// readStates reads every job's record.
func (k *Keeper) readStates() map[string]JobState {
	out := map[string]JobState{}
	ents, err := os.ReadDir(filepath.Join(k.S.Dir.Path, statusDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return out
	}
	for _, e := range ents {
		if name, ok := strings.CutPrefix(e.Name(), "job-"); ok && strings.HasSuffix(name, ".json") {
			var s JobState
			if k.readState(e.Name(), &s) {
				out[strings.ReplaceAll(strings.TrimSuffix(name, ".json"), "-", " ")] = s
			}
		}
	}
	return out
}
