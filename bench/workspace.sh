#!/usr/bin/env bash
# Benchmark of the agent desktop: how fast a customer's message reaches the agent's WebSocket as
# the load rises, and how many idle agent WebSockets one host holds in its memory. Everything
# runs on the real Redis and PostgreSQL, in a fresh database, against baselines measured in the
# same run:
#
#   latency (bench/ws-load `latency`, one `nexus up -f spin.toml`): AGENTS agent desktops on
#     the workspace socket, SESSIONS customer chats routed to them and accepted; then for each
#     rate in RATES, for SECONDS_PER_RATE each, open-loop:
#       1. a probe PUBLISHed straight into Redis on an agent's topic (baseline: the host's floor
#          from Redis to an agent's socket),
#       2. customer messages through the Chat API v3 (POST {selfUri}/messages),
#     each timed from its scheduled start to the frame at the agent's socket.
#   memory (bench/ws-load `idle`, a fresh host for each kind): IDLE HTTP/1.1 keep-alive
#     connections that made one GET /hello/ (baseline), then IDLE agent desktops (one agent
#     each), and the host's resident memory before and after.
#
#   bench/workspace.sh       # RATES=100,200,400,800 SECONDS_PER_RATE=10 AGENTS=16 SESSIONS=64 IDLE=10000
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-100,200,400,800}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-10}
AGENTS=${AGENTS:-16}
SESSIONS=${SESSIONS:-64}
IDLE=${IDLE:-10000}

source bench/lib.sh
start_run_on_services
# Each idle connection is a descriptor in the host and one in the load generator.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE + 1024)) ]; then
  echo "IDLE=$IDLE needs more open files than this shell may have ($(ulimit -n)); lower IDLE" >&2
  exit 1
fi
cargo build --quiet --locked --release -p nexus-host -p nexus-bench-ws-load
scripts/build-components.sh >/dev/null 2>&1
link_components
psql -q "$PGADMIN" -c "CREATE DATABASE $database"
admin=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
# Channel secrets are sealed under it: one key for every host of the run.
credentials_key=$(head -c 32 /dev/urandom | base64)
load="$target/release/nexus-bench-ws-load"

# Starts a host on the run's Redis and database; sets host_pid and host_url.
start_host() { # name
  REDIS_URL="$REDIS_URL" DATABASE_URL="$database_url" RUST_LOG=warn \
    SPIN_VARIABLE_ADMIN_TOKEN="$admin" SPIN_VARIABLE_REDIS_KEY_PREFIX="$database:" \
    SPIN_VARIABLE_CREDENTIALS_KEY="$credentials_key" \
    "$target/release/nexus" up -f spin.toml --listen 127.0.0.1:0 --data-dir "$work/$1" \
    --max-websockets $((IDLE * 2)) --log-format json >"$work/$1.out" 2>"$work/$1.err" &
  host_pid=$!
  pids+=("$host_pid")
  host_url=$(wait_for_line "$work/$1.out" 'http://127\.0\.0\.1:[0-9]+')
}
stop_host() { kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; }
errors() { grep -c '"level":"ERROR"' "$work/$1.err" || true; }

start_host latency
"$load" latency --url "$host_url" --admin-token "$admin" --redis-url "$REDIS_URL" \
  --prefix "$database:" --rates "$RATES" --seconds "$SECONDS_PER_RATE" --agents "$AGENTS" \
  --sessions "$SESSIONS" >"$work/latency.md"
"$load" agents --url "$host_url" --admin-token "$admin" --count "$IDLE" --out "$work/tokens"
stored=$(psql -qtA "$database_url" -c "SELECT count(*) FROM messages WHERE text LIKE 'bench %'")
latency_errors=$(errors latency)
stop_host

declare -A rss_before rss_after per_connection
for kind in http ws; do
  start_host "idle-$kind"
  line=$("$load" idle --url "$host_url" --kind "$kind" --count "$IDLE" --pid "$host_pid" \
    --tokens "$work/tokens")
  echo "idle $kind: $line" >&2
  rss_before[$kind]=$(echo "$line" | sed -E 's/.*rss_before_kib=([0-9]+).*/\1/')
  rss_after[$kind]=$(echo "$line" | sed -E 's/.*rss_after_kib=([0-9]+).*/\1/')
  per_connection[$kind]=$(echo "$line" | sed -E 's/.*bytes_per_connection=([0-9]+).*/\1/')
  stop_host
done

echo
echo "customer message -> agent WebSocket frame, one nexus on Redis + PostgreSQL, $AGENTS agents, $SESSIONS chats, ${SECONDS_PER_RATE}s per rate, open loop, $(nproc) cores"
echo
cat "$work/latency.md"
echo
echo "customer messages stored in PostgreSQL: $stored; host errors logged: $latency_errors"
echo
echo "idle connections held by one fresh nexus each, $IDLE of each kind"
echo
echo "| connection | host RSS before MiB | after MiB | KiB per connection | per GiB of RSS | vs keep-alive HTTP |"
echo "|---|---:|---:|---:|---:|---:|"
for kind in http ws; do
  case $kind in
    http) label="HTTP/1.1 keep-alive after GET /hello/ (baseline)" ;;
    ws) label="agent desktop WebSocket (/nexus/v3/workspace/socket)" ;;
  esac
  awk -v label="$label" -v b="${rss_before[$kind]}" -v a="${rss_after[$kind]}" \
    -v p="${per_connection[$kind]}" -v base="${per_connection[http]}" 'BEGIN {
      printf "| %s | %.1f | %.1f | %.1f | %d | %.2f |\n", label, b / 1024, a / 1024, p / 1024,
        (p > 0 ? 1073741824 / p : 0), (base > 0 ? p / base : 0) }'
done
