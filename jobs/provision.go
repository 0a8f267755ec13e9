// Package jobs holds the keeper's work: first-boot provisioning and schema
// migrations now, the scheduled maintenance jobs later.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/mastodon"
	"github.com/mastodon-on-balena/mastodon-balena/postgres"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/retry"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
)

// Provisioner brings an instance from nothing - or from any point a crash
// left it at - to a database that matches this Mastodon version, with an
// Owner. Every step checks before it acts and its marker is written last,
// so running it again converges and changes nothing once done.
type Provisioner struct {
	Cfg     *config.Config
	Getenv  func(string) string
	Environ []string
	Plan    sizing.Plan
	Log     *slog.Logger
	// Banner receives the Owner's one-time password, framed; it is the
	// keeper's log stream.
	Banner io.Writer
	// BeforeMigrate, when set, runs before the schema of an existing
	// instance is migrated to a new Mastodon version (a backup); an error
	// stops the migration.
	BeforeMigrate func(ctx context.Context) error
	// Step, when set, hears each long step as a visitor should read it
	// ("Updating the database for Mastodon v4.5.1."): the starting page.
	Step func(what string)
}

func (p *Provisioner) step(what string) {
	if p.Step != nil {
		p.Step(what)
	}
}

// Run provisions. It returns a *problem.Refused for configuration conflicts.
func (p *Provisioner) Run(ctx context.Context) error {
	if p.Cfg.MastodonVersion == "" {
		return &problem.Refused{Err: errors.New("MASTOKEEPER_MASTODON_VERSION is not set; it is built into the keeper's image - run the keeper from this project's Dockerfile")}
	}
	dir := instance.Dir{Path: p.Cfg.StateDir}
	if dir.Has(instance.MarkerRestoring) {
		return &problem.Refused{Err: errors.New("a restore onto this device began and did not finish, so its database may be half-restored; web, sidekiq and streaming stay stopped. " +
			"Finish it: run 'mastokeeper restore' in a terminal on the keeper service (with --from URL if the backups are not at BACKUP_TARGET), or set RESTORE_FROM and restart the keeper")}
	}
	rec, err := p.ensureRecord(ctx, dir)
	if err != nil {
		return err
	}
	// Records from before instance IDs get theirs once, here.
	if rec, err = dir.EnsureInstanceID(ctx); err != nil {
		return err
	}
	p.Log.Info("sizing for this device", "plan", p.Plan.String())

	pg := postgres.Server{Host: p.Cfg.DBHost, Port: p.Cfg.DBPort, User: p.Cfg.PostgresUser, Password: rec.Secrets[instance.PostgresPassword]}
	conn, err := pg.Wait(ctx, p.Log, "postgres")
	if err != nil {
		if errors.Is(err, postgres.ErrAuth) {
			return &problem.Refused{Err: err}
		}
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	unlock, err := postgres.LockSchema(ctx, p.Log, conn)
	if err != nil {
		return err
	}
	defer unlock(context.WithoutCancel(ctx))

	if changed, err := postgres.EnsureRole(ctx, conn, p.Cfg.DBUser, rec.Secrets[instance.DBPassword]); err != nil {
		return err
	} else if changed {
		p.Log.Info("created or updated the database role Mastodon logs in with", "role", p.Cfg.DBUser)
	}
	if created, err := postgres.EnsureDatabase(ctx, conn, p.Cfg.DBName, p.Cfg.DBUser); err != nil {
		return err
	} else if created {
		p.Log.Info("created Mastodon's database", "database", p.Cfg.DBName)
	}
	if err := WaitForRedis(ctx, p.Log, p.Cfg.RedisAddr()); err != nil {
		return err
	}

	mdb, err := pg.Connect(ctx, p.Cfg.DBName)
	if err != nil {
		return err
	}
	defer mdb.Close(context.WithoutCancel(ctx))
	run := mastodon.Runner{Env: mastodon.Env(p.Environ, p.Cfg, rec, p.Plan), Log: p.Log}
	if err := p.migrate(ctx, dir, mdb, run); err != nil {
		return err
	}
	return p.ensureOwner(ctx, dir, rec, mdb, run)
}

// ensureRecord reads the instance record, or creates it on first boot,
// and refuses a configuration that contradicts it.
func (p *Provisioner) ensureRecord(ctx context.Context, dir instance.Dir) (*instance.Record, error) {
	unlock, err := dir.Lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := dir.Read()
	if err == nil {
		if err := instance.Guard(rec, p.Getenv); err != nil {
			return nil, &problem.Refused{Err: err}
		}
		p.logDomain(rec)
		return rec, nil
	}
	if !errors.Is(err, instance.ErrNotProvisioned) {
		return nil, &problem.Refused{Err: err}
	}
	domain, _, err := instance.ResolveDomain(p.Getenv)
	if err != nil {
		return nil, &problem.Refused{Err: err}
	}
	gen, err := instance.GenerateSecrets(instance.RandomReader)
	if err != nil {
		return nil, err
	}
	rec = instance.NewRecord(domain, p.Getenv, gen)
	rec.CreatedAt = time.Now().UTC().Truncate(time.Second)
	if err := dir.Create(rec); err != nil {
		return nil, err
	}
	p.Log.Info("first boot: recorded this instance's domain and secrets",
		"local_domain", domain, "record", dir.RecordPath(),
		"generated", len(instance.SecretNames)-len(rec.Adopted), "adopted_from_variables", strings.Join(rec.Adopted, ","))
	p.logDomain(rec)
	return rec, nil
}

func (p *Provisioner) logDomain(rec *instance.Record) {
	if instance.IsPublicURLHost(rec.LocalDomain) {
		p.Log.Warn("THIS INSTANCE'S NAME IS THIS DEVICE'S BALENA PUBLIC URL. It belongs to this one device: "+
			"the instance can never move to other hardware under this name, and balena calls public URLs unsuitable for continuous use. "+
			"To be movable, purge this device's data and set LOCAL_DOMAIN to a domain of your own before the first boot.",
			"local_domain", rec.LocalDomain)
		return
	}
	p.Log.Info("instance domain", "local_domain", rec.LocalDomain)
}

// migrate brings the schema to this Mastodon version. It runs under the
// schema lock, so what it decides on cannot change under it.
func (p *Provisioner) migrate(ctx context.Context, dir instance.Dir, mdb *pgx.Conn, run mastodon.Runner) error {
	version := p.Cfg.MastodonVersion
	ready := instance.ReadyMarker(version)
	initialised, err := postgres.TableExists(ctx, mdb, "schema_migrations")
	if err != nil {
		return err
	}
	switch {
	case !initialised:
		// An empty database: whatever markers exist describe a database that
		// is gone, and must not let web start before the schema is back.
		if err := dir.ClearReady(); err != nil {
			return err
		}
		p.Log.Info("loading Mastodon's database schema and seeds (rails db:prepare); this takes a few minutes on a Raspberry Pi", "version", version)
		p.step("Setting up a new server: preparing its database. This takes a few minutes.")
		if err := run.Rails(ctx, "db:prepare"); err != nil {
			return err
		}
	case !dir.Has(instance.MarkerSeeded):
		// A schema without our seeded marker: a first boot interrupted after
		// the schema load, or a database brought in from elsewhere. Mastodon's
		// seeds are idempotent, so running them again is safe.
		p.Log.Info("finishing an interrupted first boot: migrating and seeding (rails db:migrate db:seed)", "version", version)
		p.step("Setting up a new server: finishing its database.")
		if err := run.Rails(ctx, "db:migrate", "db:seed"); err != nil {
			return err
		}
	case !dir.Has(ready):
		p.Log.Info("Mastodon's version changed: running database migrations (rails db:migrate) before web, sidekiq and streaming start",
			"version", version, "previous", strings.Join(dir.ReadyVersions(), ","))
		if p.BeforeMigrate != nil {
			p.step("Updating to Mastodon " + version + ": taking a backup first.")
			if err := p.BeforeMigrate(ctx); err != nil {
				return fmt.Errorf("the backup before migrating to %s failed, so the database was not migrated: %w", version, err)
			}
		}
		p.step("Updating to Mastodon " + version + ": updating the database. This takes a few minutes.")
		if err := run.Rails(ctx, "db:migrate"); err != nil {
			return fmt.Errorf("%w; web, sidekiq and streaming keep waiting. Read the output above; the keeper retries when it restarts", err)
		}
	default:
		p.Log.Info("database schema is up to date", "version", version)
		return nil
	}
	if err := dir.Mark(instance.MarkerSeeded); err != nil {
		return err
	}
	if err := dir.Mark(ready); err != nil {
		return err
	}
	p.Log.Info("database ready: web, sidekiq and streaming may start", "version", version)
	return nil
}

// ensureOwner creates the Owner account once and shows its password once.
// It never resets a password by itself.
func (p *Provisioner) ensureOwner(ctx context.Context, dir instance.Dir, rec *instance.Record, mdb *pgx.Conn, run mastodon.Runner) error {
	if dir.Has(instance.MarkerOwnerAnnounced) {
		return nil
	}
	owner, err := mastodon.OwnerUsername(ctx, mdb)
	if err != nil {
		return err
	}
	if owner != "" {
		// Created earlier, but the keeper died before it could show the
		// password: say how to get one rather than reset it unasked.
		p.Log.Warn("an Owner account exists but its first password was never shown (the first boot was interrupted). "+
			"Open a terminal on the keeper service and run: mastokeeper admin reset-password "+owner, "owner", owner)
		return dir.Mark(instance.MarkerOwnerAnnounced)
	}
	email := p.Cfg.AdminEmail
	switch {
	case email != "":
	case strings.HasSuffix(rec.LocalDomain, ".localhost"):
		// A trial on one's own computer: Mastodon requires the address's
		// domain to resolve, which a .localhost one never does. example.com
		// resolves and is reserved (RFC 2606), so no mail ever reaches anyone.
		email = p.Cfg.AdminUsername + "@example.com"
	default:
		email = p.Cfg.AdminUsername + "@" + rec.LocalDomain
	}
	p.Log.Info("creating the Owner account", "username", p.Cfg.AdminUsername, "email", email)
	password, err := run.CreateOwner(ctx, p.Cfg.AdminUsername, email)
	if err != nil && !p.resolves(ctx, email) {
		// Mastodon refuses an address whose domain has no MX or A record:
		// no network yet at a first boot, or a domain without records.
		// Say so, and try again until it resolves or the variable changes.
		_, domain, _ := strings.Cut(email, "@")
		p.Log.Warn(fmt.Sprintf("the Owner account cannot be created yet: Mastodon requires its e-mail's domain (%s) to have mail (MX) or address records, and this device cannot resolve them - "+
			"the network is not up yet, or the domain has no records. The keeper tries again; web, sidekiq and streaming run meanwhile. "+
			"To use another address, set ADMIN_EMAIL (example: ADMIN_EMAIL=you@example.org)", domain), "error", err.Error())
		err = retry.Until(ctx, p.Log.With("email_domain", domain), "waiting for the Owner's e-mail domain to resolve", "the Owner account was created", func() error {
			password, err = run.CreateOwner(ctx, p.Cfg.AdminUsername, email)
			if err != nil && p.resolves(ctx, email) {
				return retry.Permanent(err) // refused for another reason
			}
			return err
		})
	}
	if err != nil {
		return err
	}
	WriteBanner(p.Banner, "Your Mastodon is ready",
		"Open:      https://"+rec.LocalDomain,
		"Log in as: "+email,
		"Password:  "+password,
		"",
		"This password is shown ONCE. Change it after logging in.",
		"Lost it? In a terminal on the keeper service run:",
		"  mastokeeper admin reset-password "+p.Cfg.AdminUsername)
	return dir.Mark(instance.MarkerOwnerAnnounced)
}

// resolves says whether the e-mail's domain has MX or address records, as
// Mastodon's check of a new account's address requires.
func (p *Provisioner) resolves(ctx context.Context, email string) bool {
	_, domain, _ := strings.Cut(email, "@")
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if mx, err := net.DefaultResolver.LookupMX(ctx, domain); err == nil && len(mx) > 0 {
		return true
	}
	addrs, err := net.DefaultResolver.LookupHost(ctx, domain)
	return err == nil && len(addrs) > 0
}

// WriteBanner frames lines so that they stand out in a log.
func WriteBanner(w io.Writer, title string, lines ...string) {
	width := len(title)
	for _, l := range lines {
		width = max(width, len(l))
	}
	bar := strings.Repeat("=", width+4)
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n| %-*s |\n%s\n", bar, width, title, bar)
	for _, l := range lines {
		fmt.Fprintf(&b, "| %-*s |\n", width, l)
	}
	b.WriteString(bar + "\n")
	io.WriteString(w, b.String())
}
