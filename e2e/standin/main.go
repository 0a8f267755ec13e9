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
	"os"
	"os/signal"
	"path/filepath"
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
