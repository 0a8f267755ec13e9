package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

func status(c *call) error {
	k := c.keeper()
	cfg, dir := k.S.Config, k.S.Dir
	w := func(key, v string) { fmt.Fprintf(c.stdout, "%-22s %s\n", key+":", v) }
	w("Mastodon (this image)", orDash(cfg.MastodonVersion))
	rec, rerr := dir.Read()
	switch {
	case errors.Is(rerr, instance.ErrNotProvisioned):
		w("Instance", "not provisioned yet (the keeper does it at its first start)")
	case rerr != nil:
		w("Instance", "unreadable: "+rerr.Error())
	default:
		domain := rec.LocalDomain
		if instance.IsPublicURLHost(domain) {
			domain += "  (balena public URL: bound to this device)"
		}
		w("Domain", domain)
		w("Provisioned", rec.CreatedAt.Format(time.RFC3339))
		for _, name := range instance.SecretNames {
			how := "generated"
			for _, a := range rec.Adopted {
				if a == name {
					how = "adopted from a variable"
				}
			}
			state := "missing"
			if rec.Secrets[name] != "" {
				state = "set [redacted], " + how
			}
			w(name, state)
		}
	}
	w("Schema seeded", yesNo(dir.Has(instance.MarkerSeeded)))
	w("Schema ready for", orDash(strings.Join(dir.ReadyVersions(), ", ")))
	w("Owner password shown", yesNo(dir.Has(instance.MarkerOwnerAnnounced)))
	w("Sizing", k.S.Plan.String())
	if err := k.S.Err(); err != nil {
		fmt.Fprintln(c.stdout)
		fmt.Fprintln(c.stdout, err)
	}
	return nil
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
