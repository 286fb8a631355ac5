#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on a loopback port for the store's contract tests, and print
# its SQLAlchemy URL (for LOCALABORT_TEST_POSTGRES_URL); print nothing if no server can be had.
# Installs Debian's server package if missing. Without a URL the PostgreSQL tests say they were skipped.
set -euo pipefail
PORT="${LOCALABORT_PG_PORT:-54329}"
initdb_bin="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$initdb_bin" ]; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) || echo "postgres.sh: could not install postgresql"
    initdb_bin="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)"
fi
if [ -n "$initdb_bin" ] && "$(dirname "$initdb_bin")/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
    echo "postgres.sh: one is running on 127.0.0.1:$PORT already" >&2  # (from an earlier run: reused)
    echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/localabort_test"
elif [ -n "$initdb_bin" ]; then
    bin="$(dirname "$initdb_bin")"
    data="$(mktemp -d /tmp/localabort-pg.XXXXXX)"
    run=()
    if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root
        chown postgres "$data"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bin/initdb" -D "$data/db" -A trust -U postgres >/dev/null
    "${run[@]}" "$bin/pg_ctl" -D "$data/db" -o "-p $PORT -k $data -c listen_addresses=127.0.0.1 -c fsync=off" \
        -l "$data/log" -w start >/dev/null
    "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres localabort_test
    echo "postgres.sh: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
    echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/localabort_test"
fi
