package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/keeper"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/smoke"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
)

// commands is the command tree, in the order the overview lists it.
var commands []*command

func init() {
	commands = []*command{
		{path: "run", summary: "the keeper service: provision, then stay up and run the scheduled jobs",
			help: `The keeper service's command: restores RESTORE_FROM onto a fresh device, provisions the instance (secrets, database, migrations after a backup, the Owner account), then runs the scheduled jobs - backups, their verification, media cleanup - until stopped. On a refusal it stays up and says what to fix, rather than restart-looping.`,
			run:  func(c *call) error { return serve(c, true) }},
		{path: "provision", summary: "provision once and exit",
			help: `Does what the keeper service does at its start - restore from RESTORE_FROM on a fresh device, provision, migrate - and exits.`,
			run:  func(c *call) error { return serve(c, false) }},
		{path: "launch", synopsis: "mastodon|postgres|proxy|tor|cloudflared -- COMMAND...", minArgs: 2, maxArgs: -1, dashDash: true, summary: "wait for what a process needs, then exec it",
			help: `The entrypoint of the other services: "launch mastodon" waits until the instance is provisioned and its schema ready for this release, then execs COMMAND (puma, sidekiq, streaming) with the instance's environment; "launch postgres" waits for the instance's database passwords, then execs PostgreSQL; "launch proxy" execs Caddy with the front door PROXY_MODE asks for; "launch tor" runs tor with the onion service when TOR_ENABLED is true, "launch cloudflared" the tunnel when CLOUDFLARE_TUNNEL_TOKEN is set, and otherwise each idles quietly.`,
			run:  launchCmd},
		{path: "healthcheck", synopsis: "URL|sidekiq", minArgs: 1, maxArgs: 1, summary: "container healthcheck for web, streaming and sidekiq",
			help: `Checks one service of the stack: the URL of web's or streaming's health endpoint, or "sidekiq". Exit status 0 when healthy.`,
			run:  healthcheck},
		{path: "status", synopsis: "[--json]", summary: "what needs attention, the backups, jobs, disks and alerts",
			help:  `Shows, first line first, whether anything needs attention ("OK", or "ATTENTION: ..."), then the instance, the backups (target, newest, newest verified), each job's last run, success, failure and next run, the free space of the media and database volumes, and the notification channels. Secrets are never shown. Exit status 1 when something needs attention.`,
			flags: func(fs *flag.FlagSet) { fs.Bool("json", false, "print JSON for machines") },
			run:   status},
		{path: "config", summary: "",
			help: `Commands about the configuration (the environment variables).`},
		{path: "config check", summary: "report every bad variable at once",
			help: `Checks every variable the keeper reads and reports every problem at once, each as "VAR: what is wrong (example: VAR=good)". It changes nothing. Exit status 3 when there is a problem.`,
			run:  configCheck},
		{path: "secrets", help: `Commands about the instance's secrets.`},
		{path: "secrets generate", summary: "print a fresh set of secrets as KEY=value lines",
			help: `Prints a fresh set of the instance's secrets as KEY=value lines, for moving an instance in from elsewhere. It changes nothing.`,
			run:  secretsGenerate},
		{path: "admin", help: `Commands for the instance's administrator.`},
		{path: "admin reset-password", synopsis: "NAME", minArgs: 1, maxArgs: 1, summary: "give account NAME a new password",
			help: `Gives the account NAME (a username of this instance, e.g. the Owner's) a new random password, ends its sessions and prints the password once.`,
			run:  resetPassword},
		{path: "tootctl", synopsis: "ARGS...", maxArgs: -1, passthrough: true, summary: "run Mastodon's tootctl with the instance's environment",
			help: `Runs Mastodon's tootctl with ARGS and the instance's environment (database, secrets). Every argument is tootctl's: "mastokeeper tootctl help" prints tootctl's own help.`,
			run:  tootctl},
		{path: "backup", summary: "take a backup now",
			help: `Takes a backup now, as the schedule does: the database and the media, encrypted, to BACKUP_TARGET; reads back what it wrote, records it as verified and applies the retention policy (BACKUP_KEEP_DAILY, BACKUP_KEEP_WEEKLY). It waits for a job that is running. Refused, writing nothing, while backups are OFF (no BACKUP_PASSPHRASE).`,
			run:  backupNow},
		{path: "backup list", synopsis: "[--from URL]", summary: "list the backups at BACKUP_TARGET (or URL)",
			help:  `Lists the backups at BACKUP_TARGET, or at URL, oldest first: complete, verified, in the old unauthenticated format, or unusable (damaged or another instance's). It writes nothing, so it works on a fresh device before a restore: with --from and BACKUP_PASSPHRASE set to the passphrase of those backups.`,
			flags: fromFlag, run: backupList},
		{path: "backup verify", synopsis: "[--from URL] ID|latest", minArgs: 1, maxArgs: 1, summary: "read backup ID back whole and check everything",
			help:  `Downloads backup ID (or the newest, with "latest") whole - database, secrets, every media file - checks every checksum and its authentication, has pg_restore read the dump and opens the sealed key with BACKUP_PASSPHRASE: what a new device would need. Records the backup as verified on the target. Works on a fresh device with --from and the passphrase.`,
			flags: fromFlag, run: backupVerify},
		{path: "backup check", summary: "the scheduled verification, now",
			help: `Runs the scheduled verification (VERIFY_SCHEDULE) now: reads the newest backup back whole and one share of the stored media blobs, uploads again any damaged blob whose file is still on this device, and opens the sealed key with BACKUP_PASSPHRASE.`,
			run:  backupCheck},
		{path: "backup claim", synopsis: "[--yes]", summary: "make this device the one writing the backups again",
			help:  `After the instance was restored onto another device, that device writes the backups and this one's backups are refused. If this device is the one to keep after all, claim the target back: this device's backups go on, and the other device's are refused from then on. Asks for the domain as confirmation unless --yes is given. Only a target holding this instance's backups can be claimed.`,
			flags: func(fs *flag.FlagSet) { fs.Bool("yes", false, "do not ask for confirmation") },
			run:   backupClaim},
		{path: "smoke", synopsis: "[--domain DOMAIN] [--json] URL", minArgs: 1, maxArgs: 1, summary: "check a live instance from outside, as after a deploy",
			help: `Checks the instance at URL (https://social.example.org) from outside: /health, /api/v2/instance naming the expected domain, WebFinger, host-meta and NodeInfo, streaming's health and a WebSocket through the proxy, caching and compression of an asset, and over https the redirect from http, the certificate (valid for 14 days more) and HSTS. One line per check: ok, or what is wrong and what usually causes it. Exit status 1 when a check fails. It reads nothing of this device and changes nothing.`,
			flags: func(fs *flag.FlagSet) {
				fs.String("domain", "", "the `DOMAIN` the instance must name (default: URL's host)")
				fs.Bool("json", false, "print JSON for machines")
			},
			run: smokeCmd},
		{path: "notify", help: `Commands about the alerts the keeper sends.`},
		{path: "notify test", summary: "send a test through every notification channel",
			help: `Sends a test message through every notification channel (e-mail via the SMTP_* variables to NOTIFY_EMAIL or ADMIN_EMAIL, the NOTIFY_URL webhook) and says for each whether it got through.`,
			run:  notifyTest},
		{path: "restore", synopsis: "[--from URL] [--backup ID|latest] [--force [--no-safety-backup]] [--trust-old-format]", summary: "put a backup onto this device",
			help: `Restores a backup onto this device: the newest verified one at RESTORE_FROM or BACKUP_TARGET (or URL) unless --backup names one ("latest": the newest, verified or not). Everything is downloaded and checked before anything on the device changes; then the database, secrets and media are replaced, the schema migrated to this release and web, sidekiq and streaming restarted. The backups' BACKUP_PASSPHRASE must be set. An instance with data is replaced only with --force, and then only after a safety backup of it to BACKUP_TARGET (taken after the backup to restore is chosen, pruning nothing).`,
			flags: func(fs *flag.FlagSet) {
				fromFlag(fs)
				fs.String("backup", "", "the `ID` of the backup to restore, or latest")
				fs.Bool("force", false, "replace the instance this device holds")
				fs.Bool("trust-old-format", false, "also restore backups made before they were authenticated (format 1); only for a target no one else can write to")
				fs.Bool("no-safety-backup", false, "with --force, replace the instance without backing it up first")
			},
			run: restoreCmd},
	}
}

func fromFlag(fs *flag.FlagSet) {
	fs.String("from", "", "read the backups at `URL` (s3://bucket/prefix, swift://container/prefix, file:///path) instead of BACKUP_TARGET")
}

func serve(c *call, stay bool) error {
	k := c.keeper()
	err := k.Serve(c.ctx, stay)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, keeper.ErrRestart):
		return reported(exitFailed) // the engine starts the keeper again
	case !stay && problem.IsRefused(err):
		return err // said once, here
	}
	return reported(exitCode(err)) // the keeper's log said it
}

func launchCmd(c *call) error {
	what := c.args[0]
	argv := c.args[1:]
	k := c.keeper()
	var err error
	switch what {
	case "mastodon", "postgres":
		err = k.Launch(c.ctx, what, argv)
	case "proxy":
		err = k.LaunchProxy(argv)
	case "tor":
		err = k.LaunchTor(c.ctx, argv)
	case "cloudflared":
		err = k.LaunchTunnel(c.ctx, argv)
	default:
		return usagef("launch what? %q is none of mastodon, postgres, proxy, tor, cloudflared", what)
	}
	if err == nil { // tor or the tunnel, idle or stopped
		return nil
	}
	// Exec only returns on failure.
	if c.ctx.Err() != nil {
		return nil
	}
	log := k.Log.With("component", "launch", "process", argv[0])
	keeper.LogLines(log, slog.LevelError, err.Error())
	if exitCode(err) == exitRefused {
		log.Error("not starting until the problem above is fixed")
		<-c.ctx.Done()
	}
	return reported(exitCode(err))
}

func healthcheck(c *call) error {
	if err := c.keeper().Healthcheck(c.ctx, c.args[0]); err != nil {
		fmt.Fprintln(c.stderr, "unhealthy:", err)
		return reported(exitFailed)
	}
	return nil
}

func configCheck(c *call) error {
	k := c.keeper()
	problems := k.S.Problems()
	if !k.S.BackupsOn() {
		fmt.Fprintln(c.stdout, `note: backups are OFF: BACKUP_PASSPHRASE is not set (example: BACKUP_PASSPHRASE="four random words you keep elsewhere")`)
	} else if k.S.TargetDefault {
		fmt.Fprintln(c.stdout, "note: BACKUP_TARGET is not set, so backups go to the device's own disk ("+keeper.DefaultTarget+"): they do not survive a dead SD card or disk (example: BACKUP_TARGET=s3://my-bucket/mastodon)")
	}
	for _, w := range k.S.Warnings {
		fmt.Fprintln(c.stdout, "warning: "+w)
	}
	if len(problems) == 0 {
		fmt.Fprintln(c.stdout, "configuration OK")
		return nil
	}
	return problems
}

func secretsGenerate(c *call) error {
	s, err := instance.GenerateSecrets(instance.RandomReader)
	if err != nil {
		return err
	}
	for _, name := range instance.SecretNames {
		fmt.Fprintf(c.stdout, "%s=%s\n", name, s[name])
	}
	return nil
}

func resetPassword(c *call) error {
	name := c.args[0]
	password, err := c.keeper().ResetPassword(c.ctx, name)
	if err != nil {
		return err
	}
	jobs.WriteBanner(c.stdout, "New password for "+name,
		"Password: "+password,
		"Its sessions were ended; log in again with this password and change it.")
	return nil
}

// tootctl replaces the keeper with tootctl, which then owns the terminal:
// its output, exit code and Ctrl-C. It returns only on failure.
func tootctl(c *call) error {
	return c.keeper().Tootctl(c.args)
}

func backupNow(c *call) error {
	m, err := c.keeper().Backup(c.ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "backup %s complete: %s stored, %d media files\n", m.ID, jobs.FormatBytes(uint64(m.Size())), m.MediaFiles)
	return nil
}

func backupList(c *call) error {
	where, list, err := c.keeper().List(c.ctx, c.str("from"))
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintf(c.stdout, "no backups found at %s\n", where)
		return nil
	}
	fmt.Fprintf(c.stdout, "%-24s  %-20s  %-10s  %-9s  %-11s  %s\n", "ID", "TAKEN (UTC)", "STORED", "MASTODON", "MEDIA FILES", "STATE")
	for _, b := range list {
		if b.Unusable != nil {
			fmt.Fprintf(c.stdout, "%-24s  unusable: %v\n", b.ID, b.Unusable)
			continue
		}
		m := b.Manifest
		state := "not verified"
		switch {
		case b.Old:
			state = "old format: unauthenticated (restore needs --trust-old-format)"
		case b.Verified:
			state = "verified"
		}
		fmt.Fprintf(c.stdout, "%-24s  %-20s  %-10s  %-9s  %-11d  %s\n", m.ID, m.CreatedAt.UTC().Format(time.DateTime), jobs.FormatBytes(uint64(m.Size())), m.MastodonVersion, m.MediaFiles, state)
	}
	return nil
}

func backupVerify(c *call) error {
	m, err := c.keeper().Verify(c.ctx, c.str("from"), c.args[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "backup %s verified: every checksum matches, everything decrypts, pg_restore reads the dump, the passphrase opens the key (%d objects, %d media blobs)\n",
		m.ID, len(m.Objects), len(m.MediaBlobs))
	return nil
}

func backupCheck(c *call) error {
	k := c.keeper()
	ch, err := k.Check(c.ctx)
	if err != nil {
		return err
	}
	if ch.Newest == "" {
		fmt.Fprintf(c.stdout, "no backups found at %s to check\n", k.S.Target)
		return nil
	}
	fmt.Fprintf(c.stdout, "backups checked: %s read back whole, %d media blobs read (one share of %d), %d damaged blob(s) uploaded again from this device\n", ch.Newest, ch.Blobs, keeper.VerifyShares, len(ch.Repaired))
	return nil
}

func backupClaim(c *call) error {
	yes := c.on("yes")
	claimed, err := c.keeper().Claim(c.ctx, func(o *snapshot.Owner) bool {
		fmt.Fprintf(c.stdout, "Since %s the backups of %s are written by device %s.\nClaiming them makes this device write them; that device's backups are refused from then on.\n",
			o.Since.Format(time.RFC3339), o.LocalDomain, o.Device)
		if yes {
			return true
		}
		fmt.Fprintf(c.stdout, "Type the domain (%s) to confirm: ", o.LocalDomain)
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if strings.TrimSpace(line) == "" && err != nil {
			fmt.Fprintln(c.stdout, "\nNo confirmation came: run it at a terminal, or with --yes.")
		}
		return strings.TrimSpace(line) == o.LocalDomain
	})
	if err != nil {
		return err
	}
	if !claimed {
		fmt.Fprintln(c.stdout, "this device writes the backups already; nothing to claim")
		return nil
	}
	fmt.Fprintln(c.stdout, "claimed: this device writes the backups from now on")
	return nil
}

func restoreCmd(c *call) error {
	k := c.keeper()
	m, err := k.Restore(c.ctx, keeper.RestoreOptions{From: c.str("from"), ID: c.str("backup"), Force: c.on("force"), TrustOldFormat: c.on("trust-old-format"), NoSafetyBackup: c.on("no-safety-backup")})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "restored backup %s of %s: %s.\n", m.ID, m.LocalDomain, k.Restored(c.ctx, m))
	k.RestartServices(c.ctx, c.stdout)
	return nil
}

func notifyTest(c *call) error {
	names, errs := c.keeper().TestChannels(c.ctx)
	if len(names) == 0 {
		fmt.Fprintln(c.stdout, "no notification channel is set up: alerts go to the log only. Set NOTIFY_URL, or SMTP_SERVER and NOTIFY_EMAIL (see README.md)")
		return nil
	}
	failed := 0
	for i, n := range names {
		if errs[i] != nil {
			failed++
			fmt.Fprintf(c.stdout, "FAILED  %s: %v\n", n, errs[i])
			continue
		}
		fmt.Fprintf(c.stdout, "ok      %s\n", n)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d channels failed", failed, len(names))
	}
	return nil
}

func smokeCmd(c *call) error {
	ch, err := smoke.New(c.args[0])
	if err != nil {
		return usagef("%v", err)
	}
	if d := c.str("domain"); d != "" {
		ch.Domain = d
	}
	results := ch.Run(c.ctx)
	failed := 0
	for _, r := range results {
		if !r.OK {
			failed++
		}
	}
	if c.on("json") {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(results)
	} else {
		for _, r := range results {
			switch {
			case r.Skip:
				fmt.Fprintf(c.stdout, "skip  %-15s %s\n", r.Check, r.Detail)
			case r.OK:
				fmt.Fprintf(c.stdout, "ok    %-15s %s\n", r.Check, r.Detail)
			default:
				fmt.Fprintf(c.stdout, "FAIL  %-15s %s - usually: %s\n", r.Check, r.Detail, r.Cause)
			}
		}
	}
	if failed > 0 {
		if !c.on("json") {
			fmt.Fprintf(c.stdout, "%d of %d checks failed\n", failed, len(results))
		}
		return reported(exitFailed)
	}
	return nil
}
