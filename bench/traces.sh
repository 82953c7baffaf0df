#!/usr/bin/env bash
# What OpenTelemetry traces cost: two `nexus up` serving the example component on the embedded
# Redis, one with traces off (the baseline) and one exporting every request's spans over
# OTLP/HTTP (sampled: all), measured in turn in the same run. The request is
# `GET /example/redis/bench` (INCR and GET: a server span, a component span and two Redis spans
# per request). The spans go to bench/native-hello, which answers any POST with 200: a collector
# that costs next to nothing. The load comes from wrk, a second process, over loopback.
#
#   bench/traces.sh                   # DURATION=10s CONNECTIONS=32 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
target=${CARGO_TARGET_DIR:-$PWD/target}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; fi
fi
cargo build --quiet --locked --release -p nexus-host -p nexus-bench-native-hello
scripts/build-components.sh >/dev/null 2>&1

source bench/lib.sh

cat >"$work/spin.toml" <<EOF
spin_manifest_version = 2

[application]
name = "nexus-bench-traces"

[[trigger.http]]
route = "/example/..."
component = "example"

[variables]
greeting = { default = "hello" }
redis_address = { default = "redis://nexus.embedded" }
redis_host = { default = "nexus.embedded" }
postgres_address = { default = "postgres://nexus.embedded/nexus" }
postgres_host = { default = "nexus.embedded" }

[component.example]
source = "$target/wasm32-wasip2/release/nexus_example.wasm"
allowed_outbound_hosts = ["redis://{{ redis_host }}", "postgres://{{ postgres_host }}"]
[component.example.variables]
greeting = "{{ greeting }}"
redis_address = "{{ redis_address }}"
postgres_address = "{{ postgres_address }}"
EOF
cat >"$work/get.lua" <<'EOF'
wrk.path = "/example/redis/bench"
EOF

"$target/release/nexus-bench-native-hello" 127.0.0.1:0 >"$work/native.out" 2>&1 &
pids+=($!)
sink="http://$(wait_for_line "$work/native.out" '127\.0\.0\.1:[0-9]+')"

start_nexus() { # name, env...
  local name=$1; shift
  env RUST_LOG=warn "$@" "$target/release/nexus" up -f "$work/spin.toml" --listen 127.0.0.1:0 \
    --data-dir "$work/$name" --log-format json >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  wait_for_line "$work/$name.out" 'http://127\.0\.0\.1:[0-9]+'
}
off_url=$(start_nexus off)
on_url=$(start_nexus on OTEL_EXPORTER_OTLP_ENDPOINT="$sink" OTEL_TRACES_SAMPLER=always_on)

for url in "$off_url" "$on_url"; do
  curl -sf -X PUT --data 'a value' "$url/example/redis/bench" >/dev/null
  curl -sf "$url/example/redis/bench" | grep -q '"value":"a value"' \
    || { echo "unexpected answer from $url" >&2; exit 1; }
done

CPU_OF=nexus
measure_off() { measure off "$off_url" "$work/get.lua"; }
measure_on() { measure on "$on_url" "$work/get.lua"; }
run_rounds off on

echo
echo "example component, GET /example/redis/bench (embedded Redis), wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS rounds, $(nproc) cores"
echo
echo "| nexus up | requests/s | p50 ms | p99 ms | CPU µs per request (both hosts) | req/s vs traces off |"
echo "|---|---:|---:|---:|---:|---:|"
for name in off on; do
  label="traces off"
  [ "$name" = on ] && label="traces on (OTLP/HTTP, every request sampled)"
  echo "| $label | ${rps[$name]} | ${p50[$name]} | ${p99[$name]} | ${cpu[$name]% } | $(ratio "${rps[$name]}" "${rps[off]}") |"
done
