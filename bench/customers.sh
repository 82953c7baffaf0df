#!/usr/bin/env bash
# Benchmark of waiting web-chat customers: how many one host holds, what each costs in memory
# and in Redis commands while it waits, and how fast a message reaches a customer who waits.
# Everything runs on the real Redis and PostgreSQL, in a fresh database and a Redis prefix of
# the run's own, one `nexus up -f spin.toml` (release) per row, started afresh:
#
#   for each N in COUNTS (bench/ws-load `customers`), three fresh hosts:
#     desktop (baseline): N agent desktops on the workspace socket;
#     long-poll: N chat sessions, each customer keeping GET {selfUri}/messages?after=..&timeout=25
#       open and asking again as soon as it answers, as the widget does;
#     socket: N chat sessions, each customer holding /nexus/v3/chat/sessions/{id}/socket.
#   Each reports the host's resident memory before and after the N waits, the Redis commands
#   per second of an idle window before (the host alone) and while they all wait, the waits
#   that failed and why; then, for the customers, for each rate in RATES, for SECONDS each,
#   open loop: a Text posted as a random waiting customer, timed from its scheduled send to its
#   arrival at that customer's waiting read or socket.
#
#   bench/customers.sh      # COUNTS=1000,10000,50000 SECONDS=10 RATES=200,800 IDLE_SECONDS=10
#
# Client connections come from 127.x.y.z source addresses (20,000 each): one address has about
# 28,000 ephemeral ports towards the host's one port. Every waiter is a descriptor in the host
# and one in the load generator: the largest N needs a hard `ulimit -n` above it.
set -euo pipefail
# Read before anything else: bash counts SECONDS up from the value it was given.
SECONDS_PER_RATE=$(printenv SECONDS || echo 10)
cd "$(dirname "$0")/.."

COUNTS=${COUNTS:-1000,10000,50000}
RATES=${RATES:-200,800}
IDLE_SECONDS=${IDLE_SECONDS:-10}
command_line="bench/customers.sh      # COUNTS=$COUNTS SECONDS=$SECONDS_PER_RATE RATES=$RATES IDLE_SECONDS=$IDLE_SECONDS"

max_count=$(tr ',' '\n' <<<"$COUNTS" | sort -n | tail -n 1)
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((max_count + 1024)) ]; then
  echo "COUNTS up to $max_count needs more open files than this shell may have ($(ulimit -n)); raise the hard limit (ulimit -Hn, as root) or lower COUNTS" >&2
  exit 1
fi

source bench/lib.sh
start_run_on_services
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
    --max-websockets $((max_count * 2 + 1024)) --log-format json >"$work/$1.out" 2>"$work/$1.err" &
  host_pid=$!
  pids+=("$host_pid")
  host_url=$(wait_for_line "$work/$1.out" 'http://127\.0\.0\.1:[0-9]+')
}
stop_host() { kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; }
# Errors the host logged, and the lines the components wrote to stderr (their own errors).
errors() { grep -c '"level":"ERROR"' "$work/$1.err" || true; }
component_lines() { grep -vc '^{' "$work/$1.err" || true; }
field() { # line key
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}

declare -A hold host_errors component_errors
rates=()
phase=0
for count in ${COUNTS//,/ }; do
  for kind in desktop long-poll socket; do
    phase=$((phase + 1))
    name="$kind-$count"
    start_host "$name"
    # Each row's clients come from source addresses of their own (127.<phase>.0.1 onwards), so
    # that ports an earlier row left in TIME_WAIT are not in the way.
    "$load" customers --url "$host_url" --admin-token "$admin" --redis-url "$REDIS_URL" \
      --kind "$kind" --count "$count" --pid "$host_pid" --rates "$RATES" \
      --seconds "$SECONDS_PER_RATE" --idle-seconds "$IDLE_SECONDS" --source "127.$phase.0.1" \
      >"$work/$name.txt"
    hold[$name]=$(grep '^hold ' "$work/$name.txt")
    while read -r line; do rates+=("$line"); done < <(grep '^rate ' "$work/$name.txt" || true)
    stop_host
    host_errors[$name]=$(errors "$name")
    component_errors[$name]=$(component_lines "$name")
  done
done
stored=$(psql -qtA "$database_url" -c "SELECT count(*) FROM messages WHERE text LIKE 'bench %'")
accepted=0
for line in "${rates[@]}"; do
  accepted=$((accepted + $(field "$line" sent) - $(field "$line" failed)))
done

echo
echo "$command_line"
echo
echo "waiting web-chat customers held by one nexus (release) on Redis + PostgreSQL, a fresh host per row; the host, the load generator, Redis and PostgreSQL share the machine's $(nproc) cores"
echo
echo "targets: 50,000 waiting customers on one host, under 20 KiB each, no Redis command per idle waiter, p99 under 10 ms at 800 msg/s"
echo
echo "| waiter | N | held (host's gauge after opening / at the end) | failed to open | failed while waiting (connections lost) | host RSS before → after MiB | KiB per waiter | vs agent desktop | Redis cmds/s idle, host alone → N waiting (all clients) | the host's own | the host's per 1000 waiters | long-poll answers/s | host errors / component error lines |"
echo "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for count in ${COUNTS//,/ }; do
  for kind in desktop long-poll socket; do
    line=${hold[$kind-$count]}
    case $kind in
      desktop) label="agent desktop socket (baseline)" ;;
      long-poll) label="customer long-poll (timeout=25)" ;;
      socket) label="customer WebSocket" ;;
    esac
    base=$(field "${hold[desktop-$count]}" bytes_per_waiter)
    failed=$(field "$line" open_failed)
    [ "$failed" = 0 ] || failed="$failed ($(field "$line" open_failures))"
    starts=$(field "$line" start_failed)
    [ "$starts" = 0 ] || failed="$failed; $starts sessions not started ($(field "$line" start_failures))"
    dropped="$(field "$line" wait_failures) ($(field "$line" dropped))"
    [ "$dropped" != "none (0)" ] || dropped=0
    answers=$(field "$line" answers_per_s)
    [ "$kind" = long-poll ] || answers="–"
    awk -v label="$label" -v n="$count" -v held="$(field "$line" held)" \
      -v gauge="$(field "$line" host_gauge)" -v gauge_end="$(field "$line" host_gauge_end)" \
      -v failed="$failed" -v dropped="$dropped" \
      -v b="$(field "$line" rss_before_kib)" -v a="$(field "$line" rss_after_kib)" \
      -v p="$(field "$line" bytes_per_waiter)" -v base="$base" \
      -v ball="$(field "$line" base_all_cps)" -v iall="$(field "$line" idle_all_cps)" \
      -v bhost="$(field "$line" base_host_cps)" -v ihost="$(field "$line" idle_host_cps)" \
      -v window="$(field "$line" idle_seconds)" -v answers="$answers" \
      -v errors="${host_errors[$kind-$count]} / ${component_errors[$kind-$count]}" 'BEGIN {
        printf "| %s | %d | %d (%d / %d) | %s | %s | %.1f → %.1f | %.1f | %.2f | %.1f → %.1f (%.0f s) | %.1f → %.1f | %.2f | %s | %s |\n",
          label, n, held, gauge, gauge_end, failed, dropped, b / 1024, a / 1024, p / 1024,
          (base > 0 ? p / base : 0), ball, iall, window, bhost, ihost,
          (held > 0 ? (ihost - bhost) * 1000 / held : 0), answers, errors }'
  done
done
echo
echo "message → waiting customer: a Text posted as a random waiting customer (POST {selfUri}/messages), open loop, ${SECONDS_PER_RATE}s per rate, timed from its scheduled send to its answer and to its arrival at that customer's waiting read or socket; lost = not there 10 s after the phase"
echo
echo "| waiter | N | messages/s | sent | failed | delivered | lost | twice | positions skipped | send answered p50 / p99 ms | send → customer p50 / p99 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for line in "${rates[@]}"; do
  case $(field "$line" kind) in
    long-poll) label="customer long-poll" ;;
    socket) label="customer WebSocket" ;;
  esac
  echo "| $label | $(field "$line" count) | $(field "$line" rate) | $(field "$line" sent) | $(field "$line" failed) | $(field "$line" delivered) | $(field "$line" lost) | $(field "$line" duplicates) | $(field "$line" skipped) | $(field "$line" answered_p50) / $(field "$line" answered_p99) | $(field "$line" p50) / $(field "$line" p99) |"
done
echo
echo "customer messages stored in PostgreSQL: $stored of $accepted accepted"
