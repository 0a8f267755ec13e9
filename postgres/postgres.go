// Package postgres holds what the keeper does to the stack's PostgreSQL
// server as its superuser: wait for it, create Mastodon's role and database,
// and serialise schema changes across keepers.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mastodon-on-balena/mastodon-balena/retry"
)

// Server says how to reach PostgreSQL. The password is kept out of every
// connection string so that no error message can carry it.
type Server struct {
	Host     string
	Port     int
	User     string
	Password string
}

func (s Server) String() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// Connect opens a connection to database.
func (s Server) Connect(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	cfg.Host, cfg.Port, cfg.User, cfg.Password, cfg.Database = s.Host, uint16(s.Port), s.User, s.Password, database
	cfg.ConnectTimeout = 10 * time.Second
	cfg.RuntimeParams["application_name"] = "mastokeeper"
	// TLS is pointless on the stack's internal network.
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect to %s database %s as %s: %w", s, database, s.User, err)
	}
	return c, nil
}

// ErrAuth means the server refused the password: the database volume was
// initialised with other credentials than the keeper holds.
var ErrAuth = errors.New("PostgreSQL refused the password")

// Wait connects to database, retrying with backoff while the server is
// starting or unreachable, logging what it waits for. A refused password is
// not retried: waiting cannot fix it.
func (s Server) Wait(ctx context.Context, log *slog.Logger, database string) (*pgx.Conn, error) {
	var c *pgx.Conn
	err := retry.Until(ctx, log.With("server", s.String()),
		"waiting for PostgreSQL (the db service); it may still be starting or initialising its data directory",
		"PostgreSQL is up",
		func() (err error) {
			c, err = s.Connect(ctx, database)
			var pe *pgconn.PgError
			if errors.As(err, &pe) && (pe.Code == "28P01" || pe.Code == "28000") {
				return retry.Permanent(fmt.Errorf("%w for user %s at %s (SQLSTATE %s): the database volume was initialised with other credentials than the keeper volume holds - was only one of them purged? Restore the matching keeper volume from a backup, or purge both to start a new instance", ErrAuth, s.User, s, pe.Code))
			}
			return err
		})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("postgres: gave up waiting for %s: %w", s, err)
		}
		return nil, err
	}
	return c, nil
}

// EnsureRole makes sure role exists, can log in and create databases, and
// has password. The password is sent only as a SCRAM verifier, so neither
// the server's log nor pg_stat_activity can ever show it.
func EnsureRole(ctx context.Context, c *pgx.Conn, role, password string) (changed bool, err error) {
	var exists, login, createdb bool
	var stored *string
	err = c.QueryRow(ctx, `SELECT true, rolcanlogin, rolcreatedb, rolpassword FROM pg_authid WHERE rolname = $1`, role).
		Scan(&exists, &login, &createdb, &stored)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("postgres: look up role %s: %w", role, err)
	}
	ident := pgx.Identifier{role}.Sanitize()
	if !exists {
		v, err := scramVerifier(password)
		if err != nil {
			return false, err
		}
		if _, err := c.Exec(ctx, "CREATE ROLE "+ident+" LOGIN CREATEDB PASSWORD '"+v+"'"); err != nil {
			return false, fmt.Errorf("postgres: create role %s: %w", role, err)
		}
		return true, nil
	}
	if login && createdb && stored != nil && scramMatches(*stored, password) {
		return false, nil
	}
	v, err := scramVerifier(password)
	if err != nil {
		return false, err
	}
	if _, err := c.Exec(ctx, "ALTER ROLE "+ident+" LOGIN CREATEDB PASSWORD '"+v+"'"); err != nil {
		return false, fmt.Errorf("postgres: alter role %s: %w", role, err)
	}
	return true, nil
}

// EnsureDatabase creates database owned by owner when it is missing.
func EnsureDatabase(ctx context.Context, c *pgx.Conn, database, owner string) (created bool, err error) {
	var exists bool
	if err := c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, database).Scan(&exists); err != nil {
		return false, fmt.Errorf("postgres: look up database %s: %w", database, err)
	}
	if exists {
		return false, nil
	}
	q := "CREATE DATABASE " + pgx.Identifier{database}.Sanitize() + " OWNER " + pgx.Identifier{owner}.Sanitize() +
		" ENCODING 'UTF8' TEMPLATE template0"
	if _, err := c.Exec(ctx, q); err != nil {
		return false, fmt.Errorf("postgres: create database %s: %w", database, err)
	}
	return true, nil
}

// TableExists reports whether a table is in the public schema.
func TableExists(ctx context.Context, c *pgx.Conn, table string) (bool, error) {
	var ok bool
	if err := c.QueryRow(ctx, `SELECT to_regclass('public.' || quote_ident($1)) IS NOT NULL`, table).Scan(&ok); err != nil {
		return false, fmt.Errorf("postgres: look up table %s: %w", table, err)
	}
	return ok, nil
}

// schemaLockKey is the advisory lock the keeper holds while it provisions
// or migrates; an arbitrary constant, distinct from the keys Rails derives.
const schemaLockKey int64 = 0x6d6173746f6b7072 // "mastokpr"

// LockSchema takes the keeper's advisory lock on c's session, waiting for
// another keeper to finish. The lock goes with the session, so a keeper
// killed mid-migration releases it by dying.
func LockSchema(ctx context.Context, log *slog.Logger, c *pgx.Conn) (unlock func(context.Context) error, err error) {
	var got bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, schemaLockKey).Scan(&got); err != nil {
		return nil, fmt.Errorf("postgres: take schema lock: %w", err)
	}
	if !got {
		log.Info("another keeper is provisioning or migrating this database; waiting for it to finish")
		if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, schemaLockKey); err != nil {
			return nil, fmt.Errorf("postgres: wait for schema lock: %w", err)
		}
	}
	return func(ctx context.Context) error {
		if _, err := c.Exec(ctx, `SELECT pg_advisory_unlock($1)`, schemaLockKey); err != nil {
			return fmt.Errorf("postgres: release schema lock: %w", err)
		}
		return nil
	}, nil
}

// SetPassword gives role a new password, sent as a SCRAM verifier.
func SetPassword(ctx context.Context, c *pgx.Conn, role, password string) error {
	v, err := scramVerifier(password)
	if err != nil {
		return err
	}
	if _, err := c.Exec(ctx, "ALTER ROLE "+pgx.Identifier{role}.Sanitize()+" PASSWORD '"+v+"'"); err != nil {
		return fmt.Errorf("postgres: set the password of %s: %w", role, err)
	}
	return nil
}
