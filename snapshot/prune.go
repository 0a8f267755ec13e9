package snapshot

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Retention says which backups to keep: the newest of each of the last
// Daily days and of the last Weekly ISO weeks that have backups.
type Retention struct {
	Daily, Weekly int
}

// Keep decides, for snapshots taken at the given times (any order), which
// to keep. The newest snapshot and the newest verified one are always kept,
// whatever the policy - even one of 0 days and 0 weeks.
func (r Retention) Keep(ms []*Manifest, verified func(id string) bool) map[string]bool {
	sorted := append([]*Manifest{}, ms...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].CreatedAt.After(sorted[j].CreatedAt) }) // newest first
	keep := map[string]bool{}
	if len(sorted) == 0 {
		return keep
	}
	keep[sorted[0].ID] = true
	for _, m := range sorted {
		if verified(m.ID) {
			keep[m.ID] = true
			break
		}
	}
	days, weeks := map[string]bool{}, map[string]bool{}
	for _, m := range sorted {
		t := m.CreatedAt.UTC()
		day := t.Format(time.DateOnly)
		y, w := t.ISOWeek()
		week := fmt.Sprintf("%d-W%02d", y, w)
		if !days[day] && len(days) < r.Daily {
			days[day] = true
			keep[m.ID] = true
		}
		if !weeks[week] && len(weeks) < r.Weekly {
			weeks[week] = true
			keep[m.ID] = true
		}
	}
	return keep
}

// horizon is how far back the policy reaches.
func (r Retention) horizon() time.Duration {
	return max(time.Duration(r.Daily)*24*time.Hour, time.Duration(r.Weekly)*7*24*time.Hour)
}

// Prune deletes this instance's snapshots that the policy does not keep,
// then what no kept snapshot needs: media blobs, and the leftovers of
// interrupted backups older than a day. A snapshot's manifest goes first,
// so a half-deleted snapshot is never taken for a complete one.
//
// Only snapshots authenticated by this instance's key count: a forged or
// foreign manifest can neither take a slot nor get a real backup deleted.
// An unreadable manifest is reported and left alone with its objects, and
// while there is one no media blob is deleted (its blobs are unknown).
// Format 1 snapshots are kept, with their blobs, until authenticated ones
// cover the policy's whole reach, then deleted. The caller holds the job lock.
func Prune(ctx context.Context, s storage.Store, k *Key, r Retention, instanceID string, log *slog.Logger, now time.Time) error {
	rd := &Reader{Store: s, Key: k}
	l, err := rd.List(ctx)
	if err != nil {
		return err
	}
	var ms []*Manifest
	needed := map[string]bool{}
	manifests := map[string]bool{}
	for _, m := range l.Snapshots {
		if m.InstanceID == "" || m.InstanceID == instanceID {
			ms = append(ms, m)
			continue
		}
		// Same key, another instance ID (a fork restored elsewhere from
		// an older backup): not this instance's to prune; kept whole.
		manifests[m.ID] = true
		for _, b := range m.MediaBlobs {
			needed[BlobKey(b)] = true
		}
	}
	for _, u := range l.Unreadable {
		log.Warn("a backup's manifest cannot be used; it is kept, and no media is deleted while it is there. Delete snapshots/"+u.ID+"/ on the target by hand if it is not this instance's",
			"backup", u.ID, "why", u.Err.Error())
	}
	verified := func(id string) bool { return rd.Verified(ctx, l, id) }
	keep := r.Keep(ms, verified)
	for _, m := range l.Unreadable {
		manifests[m.ID] = true
	}
	drop := map[string]bool{}
	for _, m := range ms {
		manifests[m.ID] = true
		if keep[m.ID] {
			for _, b := range m.MediaBlobs {
				needed[BlobKey(b)] = true
			}
			continue
		}
		drop[m.ID] = true
	}
	// Format 1 snapshots: gone once authenticated ones reach as far back.
	covered := len(ms) > 0 && now.Sub(ms[0].CreatedAt) >= r.horizon() && newestVerified(ms, verified) != ""
	for _, m := range l.Old {
		manifests[m.ID] = true
		if covered {
			drop[m.ID] = true
			continue
		}
		for _, b := range m.MediaBlobs {
			needed[BlobKey(b)] = true
		}
	}
	for _, m := range append(append([]*Manifest{}, ms...), l.Old...) {
		if !drop[m.ID] {
			continue
		}
		if err := s.Delete(ctx, ManifestKey(m.ID)); err != nil {
			return err
		}
		log.Info("deleted a backup the retention policy does not keep", "backup", m.ID, "authenticated", m.Authenticated)
	}
	objs, err := s.List(ctx, SnapshotsPrefix)
	if err != nil {
		return err
	}
	for _, o := range objs {
		id, ok := SnapshotOf(o.Key)
		if !ok {
			continue // not ours to judge
		}
		stale := !manifests[id] && now.Sub(o.ModTime) > 24*time.Hour // an interrupted backup
		if drop[id] || stale {
			if err := s.Delete(ctx, o.Key); err != nil {
				return err
			}
		}
	}
	if len(l.Unreadable) > 0 {
		return nil
	}
	blobs, err := s.List(ctx, MediaPrefix)
	if err != nil {
		return err
	}
	freed := 0
	for _, o := range blobs {
		// A blob younger than a day may belong to a backup still running.
		if !needed[o.Key] && now.Sub(o.ModTime) > 24*time.Hour {
			if err := s.Delete(ctx, o.Key); err != nil {
				return err
			}
			freed++
		}
	}
	if freed > 0 {
		log.Info("deleted media no kept backup needs", "blobs", freed)
	}
	return nil
}

func newestVerified(ms []*Manifest, verified func(string) bool) string {
	for i := len(ms) - 1; i >= 0; i-- {
		if verified(ms[i].ID) {
			return ms[i].ID
		}
	}
	return ""
}
