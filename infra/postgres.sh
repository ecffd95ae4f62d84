#!/usr/bin/env bash
# A throwaway PostgreSQL for a Prefect server, from Debian's packages, listening on loopback only.
# For tests and trials; a production database belongs to whoever runs your databases (infra/server.md).
#
#   eval "$(infra/postgres.sh start [PORT])"   # default port 55432; prints SELECTFLOW_PG_DIR=... and
#                                              # PREFECT_API_DATABASE_CONNECTION_URL=... (export lines)
#   infra/postgres.sh stop "$SELECTFLOW_PG_DIR"  # stops the server and deletes its folder
#
# Installs the `postgresql` package with apt-get when no PostgreSQL binaries are found (needs root).
# As root, the server runs as the `postgres` user that package creates (PostgreSQL refuses to run as root).
# The folder is created under $SELECTFLOW_PG_BASE (default /tmp), which that user must be able to enter.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then echo "$dir"; return 0; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return 0; fi
    return 1
}

as_owner() {
    # Run a PostgreSQL binary as the data folder's owner: `postgres` when we are root.
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    local port="${1:-55432}"
    local bindir
    if ! bindir=$(find_bindir); then
        log "no PostgreSQL binaries found; installing the postgresql package with apt-get"
        if [[ $(id -u) -ne 0 ]]; then log "error: installing needs root; run: sudo apt-get install -y postgresql"; exit 1; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
        bindir=$(find_bindir) || { log "error: postgresql installed but initdb not found"; exit 1; }
    fi

    local dir
    dir=$(mktemp -d "${SELECTFLOW_PG_BASE:-/tmp}/selectflow-pg.XXXXXX")
    mkdir -p "$dir/data" "$dir/socket"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            log "error: user postgres cannot write $dir; set SELECTFLOW_PG_BASE to a folder it can enter (e.g. /tmp)"
            rm -rf "$dir"; exit 1
        fi
    fi

    # Random password for the `prefect` role: loopback only, but not an open door to other local users.
    local password
    password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { log "error: initdb failed, see $dir/initdb.log"; cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c max_connections=100 -c fsync=off" start >&2 \
        || { log "error: PostgreSQL did not start, see $dir/server.log"; tail -n 20 "$dir/server.log" >&2; exit 1; }
    as_owner "$bindir/psql" -h "$dir/socket" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
        -c "CREATE ROLE prefect LOGIN PASSWORD '$password';" \
        -c "CREATE DATABASE prefect OWNER prefect;" >&2

    echo "export SELECTFLOW_PG_DIR=$dir"
    echo "export PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect:$password@127.0.0.1:$port/prefect"
}

stop() {
    local dir="${1:?usage: postgres.sh stop DIR}"
    [[ -d "$dir/data" ]] || { log "error: $dir holds no PostgreSQL data folder"; exit 1; }
    local bindir
    bindir=$(find_bindir)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 start [PORT] | stop DIR" >&2; exit 2 ;;
esac
