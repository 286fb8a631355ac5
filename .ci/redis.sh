#!/usr/bin/env bash
# Start a throwaway Redis server on a loopback port, as a Celery broker for the scale-out tests, and
# print its URL (for LOCALABORT_TEST_REDIS_URL); print nothing if no server can be had.
# Installs Debian's redis-server if missing. Without a URL the Redis tests say they were skipped.
set -euo pipefail
PORT="${LOCALABORT_REDIS_PORT:-63799}"
if ! command -v redis-server >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || echo "redis.sh: could not install redis-server" >&2
fi
if command -v redis-cli >/dev/null && redis-cli -p "$PORT" ping >/dev/null 2>&1; then
    echo "redis.sh: one is running on 127.0.0.1:$PORT already" >&2  # (from an earlier run: reused)
    echo "redis://127.0.0.1:$PORT/0"
elif command -v redis-server >/dev/null; then
    data="$(mktemp -d /tmp/localabort-redis.XXXXXX)"
    # No persistence, loopback only; daemonized, so it outlives this script as PostgreSQL's does.
    redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$data" \
        --daemonize yes --pidfile "$data/redis.pid" --logfile "$data/log" >/dev/null
    for _ in $(seq 50); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    echo "redis.sh: $(redis-server --version | awk '{print $1, $2, $3}') on 127.0.0.1:$PORT" >&2
    echo "redis://127.0.0.1:$PORT/0"
fi
