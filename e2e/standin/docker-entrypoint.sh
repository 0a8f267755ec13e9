#!/usr/bin/env bash
# STAND-IN for the postgres image's docker-entrypoint.sh, used only by the
# end-to-end tests: on an empty PGDATA it runs initdb with the superuser
# password from POSTGRES_PASSWORD (through a file descriptor, never an
# argument) and password authentication, then execs postgres with the
# arguments it was given. Test wiring: PGPORT, PG_SOCKET_DIR; and, as test
# clusters die with their test, no fsync (initdb --no-sync, fsync=off).
set -euo pipefail
# Like the real one, drop root by running itself again as postgres.
[ "$(id -u)" = 0 ] && exec runuser -u postgres -- "$0" "$@"
[ "${1:-}" = postgres ] && shift
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required on first start}"
	initdb -D "$PGDATA" -U "${POSTGRES_USER:-postgres}" --auth=scram-sha-256 --no-sync \
		--pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") >/dev/null
fi
exec postgres -D "$PGDATA" -p "$PGPORT" -k "$PG_SOCKET_DIR" \
	-c listen_addresses=127.0.0.1 -c fsync=off "$@"
