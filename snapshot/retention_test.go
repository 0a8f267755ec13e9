package snapshot

import (
	"math/rand/v2"
	"testing"
	"time"
)

func snaps(times ...time.Time) []*Manifest {
	var ms []*Manifest
	for _, t := range times {
		ms = append(ms, &Manifest{ID: NewID(t), CreatedAt: t})
	}
	return ms
}

var base = time.Date(2026, 11, 28, 3, 0, 0, 0, time.UTC)

func hoursAgo(h ...int) []time.Time {
	var ts []time.Time
	for _, x := range h {
		ts = append(ts, base.Add(-time.Duration(x)*time.Hour))
	}
	return ts
}

func none(string) bool { return false }

func TestRetentionKeepsTheNewestWhateverThePolicy(t *testing.T) {
	ms := snaps(hoursAgo(0, 24, 48)...)
	keep := Retention{Daily: 0, Weekly: 0}.Keep(ms, none)
	if len(keep) != 1 || !keep[ms[0].ID] {
		t.Errorf("policy 0/0 keeps %v; want only the newest", keep)
	}
	if got := (Retention{Daily: 7, Weekly: 4}).Keep(nil, none); len(got) != 0 {
		t.Errorf("no backups: keeps %v", got)
	}
}

func TestRetentionKeepsTheNewestVerifiedBackupToo(t *testing.T) {
	ms := snaps(hoursAgo(0, 24, 48, 72)...)
	verified := func(id string) bool { return id == ms[2].ID || id == ms[3].ID }
	keep := Retention{}.Keep(ms, verified)
	if !keep[ms[0].ID] || !keep[ms[2].ID] || keep[ms[1].ID] || keep[ms[3].ID] {
		t.Errorf("keeps %v; want the newest and the newest verified", keep)
	}
}

func TestRetentionKeepsTheNewestOfEachDayAndWeek(t *testing.T) {
	// Three backups a day for 30 days.
	var ts []time.Time
	for d := range 30 {
		for _, h := range []int{1, 8, 16} {
			ts = append(ts, base.Add(-time.Duration(d*24+h)*time.Hour))
		}
	}
	ms := snaps(ts...)
	keep := Retention{Daily: 7}.Keep(ms, none)
	if len(keep) != 7 {
		t.Errorf("daily 7 keeps %d", len(keep))
	}
	// The newest backup of each calendar day (UTC), for the 7 newest days.
	newestOfDay := map[string]string{}
	for _, m := range ms {
		day := m.CreatedAt.Format(time.DateOnly)
		if m.ID > newestOfDay[day] {
			newestOfDay[day] = m.ID
		}
	}
	for d := range 7 {
		day := base.AddDate(0, 0, -d).Format(time.DateOnly)
		if !keep[newestOfDay[day]] {
			t.Errorf("%s: its newest backup %s is not kept", day, newestOfDay[day])
		}
	}
	keep = Retention{Weekly: 3}.Keep(ms, none)
	weeks := map[string]bool{}
	for id := range keep {
		tm, _ := time.Parse("20060102T150405Z", id)
		y, w := tm.ISOWeek()
		weeks[time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC).Format("2006")+string(rune('A'+w))] = true
	}
	if len(keep) != 3 || len(weeks) != 3 {
		t.Errorf("weekly 3 keeps %v", keep)
	}
}

// Whatever the backups and the policy, the newest backup and the newest
// verified one survive.
func TestRetentionNeverDropsTheNewestGoodBackup(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		n := rng.IntN(40)
		var ts []time.Time
		for range n {
			ts = append(ts, base.Add(-time.Duration(rng.IntN(24*90))*time.Hour))
		}
		ms := snaps(ts...)
		ver := map[string]bool{}
		for _, m := range ms {
			if rng.IntN(4) == 0 {
				ver[m.ID] = true
			}
		}
		r := Retention{Daily: rng.IntN(10), Weekly: rng.IntN(6)}
		keep := r.Keep(ms, func(id string) bool { return ver[id] })
		newest, newestVerified := "", ""
		for _, m := range ms {
			if m.ID > newest {
				newest = m.ID
			}
			if ver[m.ID] && m.ID > newestVerified {
				newestVerified = m.ID
			}
		}
		if newest != "" && !keep[newest] {
			t.Fatalf("%+v dropped the newest backup", r)
		}
		if newestVerified != "" && !keep[newestVerified] {
			t.Fatalf("%+v dropped the newest verified backup", r)
		}
		if len(keep) > r.Daily+r.Weekly+2 {
			t.Fatalf("%+v keeps %d", r, len(keep))
		}
	}
}
