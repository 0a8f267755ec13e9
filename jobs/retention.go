package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/restore"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
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
func (r Retention) Keep(ms []*snapshot.Manifest, verified func(id string) bool) map[string]bool {
	sorted := append([]*snapshot.Manifest{}, ms...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID > sorted[j].ID }) // newest first
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

// Prune deletes the snapshots the policy does not keep, then what no kept
// snapshot needs: media blobs, and the leftovers of interrupted backups
// older than a day. A snapshot's manifest goes first, so a half-deleted
// snapshot is never taken for a complete one. Only this target's snapshots
// of this instance are considered.
func Prune(ctx context.Context, s storage.Store, r Retention, domain string, verified func(string) bool, log *slog.Logger, now time.Time) error {
	objs, err := s.List(ctx, snapshot.SnapshotsPrefix)
	if err != nil {
		return err
	}
	var ms []*snapshot.Manifest
	for _, o := range objs {
		if id, ok := snapshot.ParseManifestKey(o.Key); ok {
			m, err := restore.ReadManifest(ctx, s, id)
			if err != nil {
				return err
			}
			if m.LocalDomain != domain {
				return fmt.Errorf("retention: snapshot %s at %s is of %s, not %s: not pruning a target shared with another instance", id, s, m.LocalDomain, domain)
			}
			ms = append(ms, m)
		}
	}
	keep := r.Keep(ms, verified)
	needed := map[string]bool{}
	complete := map[string]bool{}
	for _, m := range ms {
		complete[m.ID] = true
		if keep[m.ID] {
			for _, b := range m.MediaBlobs {
				needed[snapshot.BlobKey(b)] = true
			}
			continue
		}
		if err := s.Delete(ctx, snapshot.ManifestKey(m.ID)); err != nil {
			return err
		}
		log.Info("deleted a backup the retention policy does not keep", "backup", m.ID)
	}
	for _, o := range objs {
		id := strings.SplitN(strings.TrimPrefix(o.Key, snapshot.SnapshotsPrefix), "/", 2)[0]
		stale := !complete[id] && now.Sub(o.ModTime) > 24*time.Hour // an interrupted backup
		if (complete[id] && !keep[id]) || stale {
			if err := s.Delete(ctx, o.Key); err != nil {
				return err
			}
		}
	}
	blobs, err := s.List(ctx, snapshot.MediaPrefix)
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
