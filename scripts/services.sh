#!/usr/bin/env bash
# Makes sure the Redis and PostgreSQL the tests use are reachable on 127.0.0.1:6379 and
# 127.0.0.1:5432 (PostgreSQL with trust auth and a database `test`), installing them from
# Debian's packages and starting project-owned instances where they are missing. Servers that
# already answer are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

state_dir=${NEXUS_SERVICES_DIR:-$PWD/target/test-services}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Redis. The binary even when a server answers: tests/e2e_workspace.rs kills and restarts a
# server of its own.
command -v redis-server >/dev/null || { echo "redis: installing redis-server"; apt_install redis-server; }
if port_open 6379; then
  echo "redis: using the server on 127.0.0.1:6379"
else
  mkdir -p "$state_dir/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$state_dir/redis" --logfile "$state_dir/redis/redis.log"
  for _ in $(seq 50); do port_open 6379 && break; sleep 0.1; done
  port_open 6379 || { echo "redis: did not start; see $state_dir/redis/redis.log" >&2; exit 1; }
  echo "redis: started a server on 127.0.0.1:6379"
fi

# PostgreSQL
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && echo "$dir"
}
# The binaries even when a server answers: tests/e2e_postgres_tls.rs starts servers of its own.
[ -n "$(pg_bin)" ] || { echo "postgres: installing postgresql"; apt_install postgresql; }
if port_open 5432; then
  echo "postgres: using the server on 127.0.0.1:5432"
else
  bin=$(pg_bin)
  data="$state_dir/postgres"
  # initdb and postgres refuse to run as root: run them as the `postgres` user if we are root.
  run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$data"
    run_pg "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$data"
  run_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p 5432 -k /tmp" start >/dev/null
  echo "postgres: started a server on 127.0.0.1:5432 ($data)"
fi
if ! psql_out=$(command -v psql >/dev/null && psql -h 127.0.0.1 -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>&1); then
  echo "postgres: cannot log in as postgres on 127.0.0.1:5432 without a password: $psql_out" >&2
  echo "  (the tests need trust auth; set NEXUS_TEST_POSTGRES_URL to a URL that works)" >&2
  [ -n "${NEXUS_TEST_POSTGRES_URL:-}" ] || exit 1
elif [ "$psql_out" != 1 ]; then
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
  echo "postgres: created the database test"
fi
