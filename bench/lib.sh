# Shared by the benchmark scripts (sourced): starting servers, running wrk, summarising.

# Starts a server in the background; its first stdout line must name the address.
wait_for_line() { # file, pattern
  for _ in $(seq 600); do
    if grep -qE "$2" "$1" 2>/dev/null; then grep -oE "$2" "$1" | head -n 1; return; fi
    sleep 0.1
  done
  echo "server did not start; its output:" >&2; cat "$1" >&2; exit 1
}
free_port() { # a port nothing listens on, from the kernel
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wrk's latency figures, normalised to milliseconds.
to_ms() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v*=1000 } printf "%.3f", v }'; }
measure() { # name url [wrk script] -> "rps p50 p99"
  local script=()
  [ -n "${3:-}" ] && script=(-s "$3")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${script[@]}" "$2/" >/dev/null # warm-up
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "$2/")
  local rps p50 p99 errors
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  p50=$(echo "$out" | awk '$1 == "50%" { print $2 }' | to_ms)
  p99=$(echo "$out" | awk '$1 == "99%" { print $2 }' | to_ms)
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ { print }')
  [ -z "$errors" ] || echo "$1: $errors" >&2
  echo "$rps $p50 $p99"
}

median() { sort -g | awk '{ a[NR]=$1 } END { print a[int((NR+1)/2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }


# Runs `measure_<name>` (a function the script defines) for each name given, ROUNDS times
# interleaved, and keeps the median of each figure in the global arrays rps, p50 and p99.
run_rounds() { # names...
  declare -gA rps p50 p99
  local -A results
  local round name
  for round in $(seq "$ROUNDS"); do
    for name in "$@"; do
      results[$name,$round]=$("measure_$name")
      echo "round $round $name: ${results[$name,$round]}" >&2
    done
  done
  for name in "$@"; do
    rps[$name]=$(for r in $(seq "$ROUNDS"); do echo "${results[$name,$r]}" | cut -d' ' -f1; done | median)
    p50[$name]=$(for r in $(seq "$ROUNDS"); do echo "${results[$name,$r]}" | cut -d' ' -f2; done | median)
    p99[$name]=$(for r in $(seq "$ROUNDS"); do echo "${results[$name,$r]}" | cut -d' ' -f3; done | median)
  done
}

# A run on the real Redis and PostgreSQL: a work directory, a fresh database named after the
# run, and on exit every started process (`pids+=(...)`) killed and the database dropped (the
# work directory kept with KEEP=1). Sets target, work, database, database_url and pids.
start_run_on_services() {
  REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
  PGADMIN=${PGADMIN:-postgres://postgres@127.0.0.1:5432/test}
  target=${CARGO_TARGET_DIR:-$PWD/target}
  work=$(mktemp -d)
  database="nexus_bench_$(date +%s)"
  # Plain TCP, as the figures in BENCHMARKS.md were measured (the server may offer TLS, which
  # nexus, like libpq, takes by default).
  database_url="${PGADMIN%/*}/$database?sslmode=disable"
  pids=()
  trap end_run_on_services EXIT
  scripts/services.sh >/dev/null
}
end_run_on_services() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  psql -q "$PGADMIN" -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
