// Command mastodon-standin is a STAND-IN for Mastodon's own processes in
// this project's end-to-end tests, where Mastodon cannot be installed. It
// is never part of the product. Called by the name of a Mastodon command
// (through a symlink: rails, tootctl, bundle, node) it behaves as
// ../shared/reference/mastodon.md describes that command:
//
//	rails db:prepare   creates the database if missing; loads the schema into
//	                   an empty one (tables first, schema_migrations last, each
//	                   table dropped and re-created as Rails' force: :cascade
//	                   does) and runs the seeds; otherwise migrates
//	rails db:migrate   fails like ActiveRecord::ConcurrentMigrationError when
//	                   another migration holds Rails' advisory lock
//	rails db:seed      the (idempotent) seeds: roles, instance actor
//	tootctl accounts create NAME --email E [--confirmed] [--approve] --role R
//	tootctl accounts modify NAME --reset-password
//	tootctl media remove [--days N] [--dry-run]
//	tootctl preview_cards remove [--days N] [--dry-run]
//	tootctl media remove-orphans [--dry-run]
//	                   on the files of $STANDIN_MEDIA_DIR (public/system)
//	                   alone, no database: see tootctlMedia
//	bundle exec puma|sidekiq, node ./streaming/index.js
//	                   a server: writes its argv and environment to
//	                   $STANDIN_REPORT and runs until SIGTERM
//
// Like Mastodon, every command aborts when LOCAL_DOMAIN, SECRET_KEY_BASE or
// an Active Record key is missing. Test knobs: STANDIN_SLOW (a delay before
// each schema table), STANDIN_MIGRATE_DELAY (a delay inside a migration).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Version is the schema version the stand-in's "release" migrates to.
func version() string {
	if v := os.Getenv("MASTOKEEPER_MASTODON_VERSION"); v != "" {
		return v
	}
	return "standin"
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[mastodon stand-in] "+format+"\n", args...)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "mastodon-standin" && len(args) > 0 { // direct call: first argument names the command
		name, args = args[0], args[1:]
	}
	ctx := context.Background()
	switch name {
	case "rails":
		boot()
		for _, task := range args {
			rails(ctx, task)
		}
	case "tootctl":
		boot()
		tootctl(ctx, args)
	case "bundle", "node":
		boot()
		serve(append([]string{name}, args...))
	default:
		fail("mastodon stand-in: unknown command %s", name)
	}
}

// boot checks the environment as Mastodon's initialisers do.
func boot() {
	for _, v := range []string{"LOCAL_DOMAIN", "SECRET_KEY_BASE", "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY",
		"ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT", "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY"} {
		val := os.Getenv(v)
		if val == "" || strings.HasSuffix(val, "DO_NOT_USE_IN_PRODUCTION") {
			fail("%s is missing or unusable; Mastodon refuses to boot", v)
		}
	}
	if os.Getenv("REDIS_NAMESPACE") != "" {
		fail("ERROR: the REDIS_NAMESPACE environment variable is no longer supported")
	}
}

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func connect(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	var port uint16
	fmt.Sscan(env("DB_PORT", "5432"), &port)
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.Database = env("DB_HOST", "localhost"), port, env("DB_USER", "mastodon"), os.Getenv("DB_PASS"), db
	cfg.TLSConfig, cfg.Fallbacks = nil, nil
	return pgx.ConnectConfig(ctx, cfg)
}

func dbName() string { return env("DB_NAME", "mastodon_production") }

func mustConnect(ctx context.Context) *pgx.Conn {
	c, err := connect(ctx, dbName())
	if err != nil {
		fail("ActiveRecord::ConnectionNotEstablished: %v", err)
	}
	return c
}

// The schema: enough of Mastodon's for the keeper's queries, and a table
// that counts migration runs for the tests.
var schema = []struct{ name, ddl string }{
	{"user_roles", `CREATE TABLE user_roles (id bigserial PRIMARY KEY, name varchar NOT NULL DEFAULT '', permissions bigint NOT NULL DEFAULT 0, position int NOT NULL DEFAULT 0)`},
	{"accounts", `CREATE TABLE accounts (id bigint PRIMARY KEY, username varchar NOT NULL, domain varchar)`},
	{"users", `CREATE TABLE users (id bigserial PRIMARY KEY, email varchar NOT NULL UNIQUE, account_id bigint NOT NULL REFERENCES accounts(id), role_id bigint REFERENCES user_roles(id), confirmed_at timestamp, approved boolean NOT NULL DEFAULT false, encrypted_password varchar NOT NULL DEFAULT '')`},
	{"statuses", `CREATE TABLE statuses (id bigserial PRIMARY KEY, account_id bigint NOT NULL, text text NOT NULL DEFAULT '')`},
	{"standin_migration_runs", `CREATE TABLE standin_migration_runs (id bigserial PRIMARY KEY, task varchar NOT NULL, version varchar NOT NULL, at timestamptz NOT NULL DEFAULT now())`},
}

func rails(ctx context.Context, task string) {
	switch task {
	case "db:prepare":
		dbPrepare(ctx)
	case "db:migrate":
		c := mustConnect(ctx)
		defer c.Close(ctx)
		migrate(ctx, c, "db:migrate")
	case "db:seed":
		c := mustConnect(ctx)
		defer c.Close(ctx)
		seed(ctx, c)
	default:
		fail("Don't know how to build task '%s'", task)
	}
}

func dbPrepare(ctx context.Context) {
	c, err := connect(ctx, dbName())
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "3D000" { // database does not exist: Rails creates it
		admin, err := connect(ctx, "postgres")
		if err != nil {
			fail("ActiveRecord::ConnectionNotEstablished: %v", err)
		}
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbName()}.Sanitize()); err != nil {
			fail("ActiveRecord::DatabaseAlreadyExists or permission: %v", err)
		}
		admin.Close(ctx)
		c, err = connect(ctx, dbName())
	}
	if err != nil {
		fail("ActiveRecord::ConnectionNotEstablished: %v", err)
	}
	defer c.Close(ctx)
	var initialised bool
	c.QueryRow(ctx, `SELECT to_regclass('public.schema_migrations') IS NOT NULL`).Scan(&initialised)
	if initialised {
		migrate(ctx, c, "db:prepare")
		return
	}
	say("loading the schema into %s", dbName())
	slow, _ := time.ParseDuration(os.Getenv("STANDIN_SLOW"))
	for _, t := range schema {
		time.Sleep(slow)
		say("create_table %s", t.name)
		if _, err := c.Exec(ctx, "DROP TABLE IF EXISTS "+t.name+" CASCADE"); err != nil {
			fail("schema load: %v", err)
		}
		if _, err := c.Exec(ctx, t.ddl); err != nil {
			fail("schema load: %v", err)
		}
	}
	time.Sleep(slow)
	if _, err := c.Exec(ctx, `CREATE TABLE schema_migrations (version varchar PRIMARY KEY)`); err != nil {
		fail("schema load: %v", err)
	}
	c.Exec(ctx, `INSERT INTO schema_migrations VALUES ($1)`, version())
	c.Exec(ctx, `INSERT INTO standin_migration_runs (task, version) VALUES ('db:prepare', $1)`, version())
	seed(ctx, c)
}

// migrate takes Rails' advisory lock without waiting, as Rails does.
func migrate(ctx context.Context, c *pgx.Conn, task string) {
	key := int64(2053462845) * int64(crc32.ChecksumIEEE([]byte(dbName())))
	var got bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		fail("migrate: %v", err)
	}
	if !got {
		fail("ActiveRecord::ConcurrentMigrationError: Cannot run migrations because another migration process is currently running.")
	}
	defer c.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key)
	var done bool
	c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, version()).Scan(&done)
	if _, err := c.Exec(ctx, `INSERT INTO standin_migration_runs (task, version) VALUES ($1, $2)`, task, version()); err != nil {
		fail("migrate: %v", err)
	}
	if d, _ := time.ParseDuration(os.Getenv("STANDIN_MIGRATE_DELAY")); d > 0 {
		say("migrating to %s (taking %s)", version(), d)
		time.Sleep(d)
	}
	if !done {
		c.Exec(ctx, `INSERT INTO schema_migrations VALUES ($1)`, version())
		say("migrated to %s", version())
	}
}

func seed(ctx context.Context, c *pgx.Conn) {
	for i, role := range []string{"", "Moderator", "Admin", "Owner"} {
		if _, err := c.Exec(ctx, `INSERT INTO user_roles (name, position) SELECT $1::varchar, $2 WHERE NOT EXISTS (SELECT 1 FROM user_roles WHERE name = $1::varchar)`, role, i*100); err != nil {
			fail("seed: %v", err)
		}
	}
	if _, err := c.Exec(ctx, `INSERT INTO accounts (id, username) VALUES (-99, $1) ON CONFLICT DO NOTHING`, os.Getenv("LOCAL_DOMAIN")); err != nil {
		fail("seed: %v", err)
	}
	say("seeded")
}

func tootctl(ctx context.Context, args []string) {
	if len(args) >= 2 && (args[0] == "media" || args[0] == "preview_cards") {
		tootctlMedia(args)
		return
	}
	if len(args) < 3 || args[0] != "accounts" {
		fail("tootctl stand-in: unsupported %v", args)
	}
	c := mustConnect(ctx)
	defer c.Close(ctx)
	name, opts := args[2], map[string]string{}
	for i := 3; i < len(args); i++ {
		if strings.HasPrefix(args[i], "--") {
			k := strings.TrimPrefix(args[i], "--")
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
				opts[k] = args[i+1]
				i++
			} else {
				opts[k] = "true"
			}
		}
	}
	password := randomHex()
	switch args[1] {
	case "create":
		var roleID *int64
		if r, ok := opts["role"]; ok {
			var id int64
			if err := c.QueryRow(ctx, `SELECT id FROM user_roles WHERE name = $1`, r).Scan(&id); err != nil {
				fail("Cannot find user role with that name")
			}
			roleID = &id
		}
		if opts["email"] == "" {
			fail("No value provided for required options '--email'")
		}
		// Production Mastodon checks the e-mail's domain by DNS (MX, else A
		// records; app/validators/email_mx_validator.rb). The stand-in's
		// "DNS" resolves every domain but .localhost ones, which DNS never
		// answers for, and those in STANDIN_UNRESOLVABLE.
		_, domain, _ := strings.Cut(opts["email"], "@")
		for _, d := range append(strings.Split(os.Getenv("STANDIN_UNRESOLVABLE"), ","), "localhost") {
			if d != "" && (strings.EqualFold(d, domain) || d == "localhost" && strings.HasSuffix(strings.ToLower(domain), ".localhost")) {
				fmt.Println("Failure/Error: email\n    The e-mail address does not seem to exist")
				os.Exit(1)
			}
		}
		var taken bool
		c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE lower(username) = lower($1) AND domain IS NULL)`, name).Scan(&taken)
		if taken {
			fmt.Println("Failure/Error: username\n    taken")
			os.Exit(1)
		}
		var id int64
		c.QueryRow(ctx, `INSERT INTO accounts (id, username) VALUES ((SELECT coalesce(max(id),0)+1 FROM accounts), $1) RETURNING id`, name).Scan(&id)
		_, err := c.Exec(ctx, `INSERT INTO users (email, account_id, role_id, confirmed_at, approved, encrypted_password) VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END, $5, $6)`,
			opts["email"], id, roleID, opts["confirmed"] == "true", opts["approve"] == "true", password)
		if err != nil {
			fail("Failure/Error: %v", err)
		}
		say("account %s created", name)
		if d, _ := time.ParseDuration(os.Getenv("STANDIN_AFTER_CREATE_DELAY")); d > 0 {
			time.Sleep(d)
		}
	case "modify":
		if opts["reset-password"] != "true" {
			fail("tootctl stand-in: only --reset-password is played")
		}
		tag, err := c.Exec(ctx, `UPDATE users SET encrypted_password = $2 FROM accounts a WHERE a.id = users.account_id AND lower(a.username) = lower($1) AND a.domain IS NULL`, name, password)
		if err != nil || tag.RowsAffected() == 0 {
			fail("No user with such username")
		}
	default:
		fail("tootctl stand-in: unsupported accounts %s", args[1])
	}
	fmt.Println("OK")
	fmt.Println("New password: " + password)
}

func randomHex() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// serve plays a long-running Mastodon process.
func serve(argv []string) {
	report := os.Getenv("STANDIN_REPORT")
	write := func(extra map[string]any) {
		if report == "" {
			return
		}
		m := map[string]any{"argv": argv, "env": os.Environ(), "pid": os.Getpid()}
		for k, v := range extra {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		os.WriteFile(report+".tmp", b, 0o600)
		os.Rename(report+".tmp", report)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	write(nil)
	say("%s serving (stand-in)", strings.Join(argv, " "))
	s := <-sig
	write(map[string]any{"signal": s.String()})
	say("stopping on %s", s)
}

// tootctlMedia plays tootctl's media commands on the files of
// $STANDIN_MEDIA_DIR, laid out as Mastodon's public/system is, with file
// modification times standing for the records' dates:
//
//	media remove             removes files under cache/media_attachments
//	                         (other servers' media) older than --days (7)
//	preview_cards remove     removes files under preview_cards (not under
//	                         cache/: Mastodon keeps them there) older than
//	                         --days (180)
//	media remove-orphans     the database is the file .known (paths relative
//	                         to the directory, one a line): every other file
//	                         is an orphan, removed with its emptied
//	                         directories; dot files are skipped
//
// Each prints Mastodon's summary line. --concurrency is accepted and
// ignored. STANDIN_MEDIA_DELAY waits before the removal starts.
func tootctlMedia(args []string) {
	root := os.Getenv("STANDIN_MEDIA_DIR")
	if root == "" {
		fail("tootctl stand-in: set STANDIN_MEDIA_DIR (the stand-in's public/system)")
	}
	opts := map[string]string{}
	for i := 2; i < len(args); i++ {
		k, v, hasValue := strings.Cut(strings.TrimPrefix(args[i], "--"), "=")
		if !strings.HasPrefix(args[i], "--") {
			fail("ERROR: \"tootctl %s %s\" was called with arguments %v", args[0], args[1], args[i:])
		}
		if !hasValue && (k == "days" || k == "concurrency") && i+1 < len(args) {
			v = args[i+1]
			i++
		} else if !hasValue {
			v = "true"
		}
		opts[k] = v
	}
	days := func(def int) time.Time {
		n := def
		if v, ok := opts["days"]; ok {
			if _, err := fmt.Sscan(v, &n); err != nil {
				fail("Expected numeric value for '--days'; got %q", v)
			}
		}
		return time.Now().Add(-time.Duration(n) * 24 * time.Hour)
	}
	dry := opts["dry-run"] == "true"
	if d, _ := time.ParseDuration(os.Getenv("STANDIN_MEDIA_DELAY")); d > 0 {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		select {
		case s := <-sig:
			fail("Interrupt (%s)", s)
		case <-time.After(d):
		}
	}
	suffix := ""
	if dry {
		suffix = " (DRY RUN)"
	}
	switch args[0] + " " + args[1] {
	case "media remove":
		n, size := removeOlder(filepath.Join(root, "cache", "media_attachments"), root, days(7), dry)
		fmt.Printf("Removed %d media attachments (approx. %s)%s\n", n, humanSize(size), suffix)
	case "preview_cards remove":
		n, size := removeOlder(filepath.Join(root, "preview_cards"), root, days(180), dry)
		fmt.Printf("Removed %d preview cards (approx. %s)%s\n", n, humanSize(size), suffix)
	case "media remove-orphans":
		b, err := os.ReadFile(filepath.Join(root, ".known"))
		if err != nil {
			fail("tootctl stand-in: %v (the list of files the database knows)", err)
		}
		known := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				known[filepath.Clean(l)] = true
			}
		}
		var n, size int64
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
				return nil
			}
			rel, _ := filepath.Rel(root, p)
			if known[rel] {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
			if !dry {
				removeFile(p, root)
			}
			n++
			fmt.Printf("Found and removed orphan: %s\n", rel)
			return nil
		})
		fmt.Printf("Removed %d orphans (approx. %s)%s\n", n, humanSize(size), suffix)
	default:
		fail("Could not find command %q.", args[1])
	}
}

// removeOlder removes the files under dir last modified before cutoff, and
// counts the records they belonged to: Paperclip keeps a record's files in
// <id partition>/<style>/<name>.
func removeOlder(dir, root string, cutoff time.Time, dry bool) (n, size int64) {
	records := map[string]bool{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			return nil
		}
		if !dry {
			removeFile(p, root)
		}
		records[filepath.Dir(filepath.Dir(p))] = true
		size += fi.Size()
		return nil
	})
	return int64(len(records)), size
}

// removeFile removes p and then its emptied directories up to root, as
// Paperclip does.
func removeFile(p, root string) {
	if err := os.Remove(p); err != nil {
		say("Error processing %s: %v", p, err)
		return
	}
	for d := filepath.Dir(p); d != root && strings.HasPrefix(d, root); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
}

// humanSize formats as Rails' number_to_human_size: powers of 1024, three
// significant digits.
func humanSize(n int64) string {
	if n == 1 {
		return "1 Byte"
	}
	if n < 1024 {
		return fmt.Sprintf("%d Bytes", n)
	}
	units := []string{"KB", "MB", "GB", "TB"}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v, i = v/1024, i+1
	}
	s := strconv.FormatFloat(v, 'f', max(0, 2-int(math.Log10(v))), 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + " " + units[i]
}
