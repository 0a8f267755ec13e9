package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/keeper"
)

// status prints the keeper's status; exit 1 when something needs
// attention.
func status(c *call) error {
	k := c.keeper()
	now := time.Now()
	s := k.Status(now)
	if c.on("json") {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return err
		}
	} else {
		printStatus(c.stdout, s, now)
	}
	if len(s.Attention) > 0 {
		return reported(exitFailed)
	}
	return nil
}

func printStatus(out io.Writer, s *keeper.Status, now time.Time) {
	fmt.Fprintln(out, s.Summary)
	for _, a := range s.Attention[min(1, len(s.Attention)):] {
		fmt.Fprintf(out, "ATTENTION: %s: %s\n", a.Title, a.Body)
	}
	section := func(title string) { fmt.Fprintf(out, "\n%s\n", title) }
	w := func(key, v string) { fmt.Fprintf(out, "  %-24s %s\n", key+":", v) }
	when := func(t time.Time) string {
		switch {
		case t.IsZero():
			return "never"
		case t.After(now):
			return fmt.Sprintf("in %s (%s)", keeper.Ago(t.Sub(now)), t.Local().Format(time.DateTime+" MST"))
		}
		return fmt.Sprintf("%s ago (%s)", keeper.Ago(now.Sub(t)), t.Local().Format(time.DateTime+" MST"))
	}

	section("Instance")
	w("Mastodon (this image)", orDash(s.Mastodon))
	if in := s.Instance; in == nil {
		w("Instance", "not provisioned yet (the keeper does it at its first start)")
	} else {
		domain := in.Domain
		if in.PublicURL {
			domain += "  (balena public URL: bound to this device)"
		}
		w("Domain", domain)
		w("Provisioned", when(in.Provisioned))
		w("Schema seeded", yesNo(in.SchemaSeeded))
		w("Schema ready for", orDash(strings.Join(in.ReadyFor, ", ")))
		w("Owner password shown", yesNo(in.OwnerShown))
		for _, name := range instance.SecretNames {
			v := in.Secrets[name]
			if strings.HasPrefix(v, "set") {
				v = "[redacted], " + strings.TrimPrefix(v, "set, ")
			}
			w(name, v)
		}
	}
	w("Front door", s.Frontdoor.Describe)
	switch fd := s.Frontdoor; {
	case fd.Onion != "":
		w("Onion address", "http://"+fd.Onion)
	case fd.Tor:
		w("Onion address", "not made yet (the tor service creates it at its start)")
	}
	w("Sizing", s.Sizing)
	if s.Restore.Unfinished {
		w("Restore", "UNFINISHED: run 'mastokeeper restore' to finish it")
	}

	section("Backups")
	b := s.Backups
	switch {
	case !b.On:
		w("Backups", "OFF: set BACKUP_PASSPHRASE")
	case b.OnDevice:
		w("Target", b.Target+"  (on this device's own disk: set BACKUP_TARGET to a place off it)")
	default:
		w("Target", b.Target)
	}
	if b.Newest != nil {
		w("Backups stored", fmt.Sprint(b.Count))
		w("Newest", fmt.Sprintf("%s, taken %s, %s", b.Newest.ID, when(b.Newest.Taken), jobs.FormatBytes(uint64(b.Newest.Size))))
		if v := b.NewestVerified; v != nil {
			w("Newest verified", fmt.Sprintf("%s, taken %s", v.ID, when(v.Taken)))
		} else {
			w("Newest verified", "none")
		}
	} else if b.On {
		w("Backups stored", "none yet")
	}

	section("Jobs")
	for _, j := range s.Jobs {
		fmt.Fprintf(out, "  %s (%s)\n", j.Name, j.Schedule)
		w("  last run", when(j.LastStart))
		w("  last success", when(j.LastSuccess))
		if !j.LastFailure.IsZero() {
			w("  last failure", when(j.LastFailure)+": "+j.LastError)
		}
		if !j.Next.IsZero() {
			w("  next", when(j.Next))
		}
	}

	section("Disks")
	for _, d := range s.Disks {
		if d.Error != "" {
			w(d.Name, "unknown: "+d.Error)
			continue
		}
		w(d.Name, fmt.Sprintf("%s free of %s (%s)", jobs.FormatBytes(d.Free), jobs.FormatBytes(d.Total), d.Path))
	}

	if g := s.Guard; g != nil {
		state := "above DISK_FREE_MIN=" + g.Threshold
		if g.LowAfterCleanup {
			state = "BELOW DISK_FREE_MIN=" + g.Threshold + " even after the early cleanup"
		}
		w("disk-pressure guard", fmt.Sprintf("looked %s: %s free of %s, %s", when(g.At), jobs.FormatBytes(g.Free), jobs.FormatBytes(g.Total), state))
	}

	section("Notifications")
	if len(s.Channels) == 0 {
		w("Channels", "none: alerts go to the log only (see NOTIFY_URL and NOTIFY_EMAIL in README.md)")
	}
	for _, ch := range s.Channels {
		state := "not used yet"
		switch {
		case ch.Broken():
			state = "FAILING since " + when(ch.ErrorAt) + ": " + ch.LastError
		case !ch.LastOK.IsZero():
			state = "delivered " + when(ch.LastOK)
		}
		fmt.Fprintf(out, "  %s: %s\n", ch.Name, state)
	}
	for _, wn := range s.Warnings {
		fmt.Fprintln(out, "\nwarning: "+wn)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
