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
# CPU time (user + system, in clock ticks) of every process whose command name is $1: summed
# over PostgreSQL's backends, for instance.
cpu_ticks() { # comm
  local stat total=0 rest fields
  for stat in /proc/[0-9]*/stat; do
    # The command name is in parentheses and may hold spaces; the fields after it are fixed.
    read -r rest 2>/dev/null <"$stat" || continue
    [ "${rest#*(}" != "$rest" ] || continue
    local comm=${rest#*(}; comm=${comm%)*}
    [ "$comm" = "$1" ] || continue
    read -r -a fields <<<"${rest##*) }"
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}
# Microseconds of CPU per request of each process name in CPU_OF (space-separated), over a run
# of $1 requests, from two `cpu_ticks` snapshots per name.
cpu_per_request() { # requests, before ticks..., after ticks...
  local requests=$1; shift
  local n=$(($# / 2)) i tick; tick=$(getconf CLK_TCK)
  for i in $(seq 1 "$n"); do
    local before=${!i} after_index=$((i + n)); local after=${!after_index}
    awk -v b="$before" -v a="$after" -v r="$requests" -v t="$tick" 'BEGIN { printf " %.0f", (a - b) * 1e6 / t / r }'
  done
}

measure() { # name url [wrk script] -> "rps p50 p99" and, with CPU_OF set, CPU µs per request of each
  local script=()
  [ -n "${3:-}" ] && script=(-s "$3")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "${script[@]}" "$2/" >/dev/null # warm-up
  local out before=() after=() comm
  for comm in ${CPU_OF:-}; do before+=("$(cpu_ticks "$comm")"); done
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "$2/")
  for comm in ${CPU_OF:-}; do after+=("$(cpu_ticks "$comm")"); done
  local rps p50 p99 errors requests
  rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
  p50=$(echo "$out" | awk '$1 == "50%" { print $2 }' | to_ms)
  p99=$(echo "$out" | awk '$1 == "99%" { print $2 }' | to_ms)
  requests=$(echo "$out" | awk '/requests in/ { print $1 }')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ { print }')
  [ -z "$errors" ] || echo "$1: $errors" >&2
  echo "$rps $p50 $p99$( [ -z "${CPU_OF:-}" ] || cpu_per_request "$requests" "${before[@]}" "${after[@]}")"
}

median() { sort -g | awk '{ a[NR]=$1 } END { print a[int((NR+1)/2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }


# Runs `measure_<name>` (a function the script defines) for each name given, ROUNDS times
# interleaved, and keeps the median of each figure in the global arrays rps, p50, p99 and cpu (the
# CPU µs per request of each process of CPU_OF, space-separated).
run_rounds() { # names...
  declare -gA rps p50 p99 cpu
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
    # The CPU figures, when measured: the median of each, space-separated, in CPU_OF's order.
    local field count; count=$(echo "${results[$name,1]}" | wc -w)
    cpu[$name]=""
    for field in $(seq 4 "$count"); do
      cpu[$name]+="$(for r in $(seq "$ROUNDS"); do echo "${results[$name,$r]}" | cut -d' ' -f"$field"; done | median) "
    done
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

# spin.toml names the components under ./target/wasm32-wasip2/release: with a CARGO_TARGET_DIR
# elsewhere, that is where they are built, and a link makes them found.
link_components() {
  if [ ! -e target/wasm32-wasip2 ] && [ "$(realpath -m "$target")" != "$(realpath -m target)" ]; then
    mkdir -p target
    ln -s "$target/wasm32-wasip2" target/wasm32-wasip2
  fi
}
