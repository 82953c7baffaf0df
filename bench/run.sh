#!/usr/bin/env bash
# Load benchmark of the hello component, three servers side by side in one run:
#   1. `nexus up` serving bench/spin.toml (the hello component),
#   2. `wasmtime serve` (wasmtime-cli 48 from crates.io) serving the same .wasm file,
#   3. a native hyper server giving the same answer (bench/native-hello), the ceiling.
# The load comes from wrk, a second process, over loopback. Each server is measured ROUNDS
# times, interleaved, and the median round is reported, with ratios against wasmtime serve.
#
#   bench/run.sh                      # DURATION=10s CONNECTIONS=32 ROUNDS=3
#   DURATION=30s CONNECTIONS=64 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
target=${CARGO_TARGET_DIR:-$PWD/target}
tools="$target/bench-tools"
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; fi
fi
if [ ! -x "$tools/bin/wasmtime" ]; then
  echo "installing wasmtime-cli 48 (a release build of wasmtime: several minutes)" >&2
  cargo install --quiet --locked wasmtime-cli --version '^48' --root "$tools"
fi
cargo build --quiet --locked --release -p nexus-host -p nexus-bench-native-hello
scripts/build-components.sh >/dev/null 2>&1
hello="$target/wasm32-wasip2/release/nexus_hello.wasm"

source bench/lib.sh

RUST_LOG=warn "$target/release/nexus" up -f bench/spin.toml --listen 127.0.0.1:0 \
  --data-dir "$work/nexus" --log-format json >"$work/nexus.out" 2>"$work/nexus.err" &
pids+=($!)
nexus_url=$(wait_for_line "$work/nexus.out" 'http://127\.0\.0\.1:[0-9]+')

wasmtime_port=$(free_port)
"$tools/bin/wasmtime" serve -Scli --addr "127.0.0.1:$wasmtime_port" "$hello" \
  >"$work/wasmtime.out" 2>&1 &
pids+=($!)
wait_for_line "$work/wasmtime.out" 'Serving HTTP' >/dev/null
wasmtime_url="http://127.0.0.1:$wasmtime_port"

"$target/release/nexus-bench-native-hello" 127.0.0.1:0 >"$work/native.out" 2>&1 &
pids+=($!)
native_url="http://$(wait_for_line "$work/native.out" '127\.0\.0\.1:[0-9]+')"

for url in "$nexus_url" "$wasmtime_url" "$native_url"; do
  body=$(curl -sf "$url/")
  [ "$body" = "Hello, nexus!" ] || { echo "unexpected answer from $url: $body" >&2; exit 1; }
done

measure_nexus() { measure nexus "$nexus_url"; }
measure_wasmtime() { measure wasmtime "$wasmtime_url"; }
measure_native() { measure native "$native_url"; }
run_rounds nexus wasmtime native

echo
echo "hello component, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS rounds, $(nproc) cores"
echo
echo "| server | requests/s | p50 ms | p99 ms | req/s vs wasmtime serve | req/s vs native |"
echo "|---|---:|---:|---:|---:|---:|"
for name in nexus wasmtime native; do
  label=$name
  [ "$name" = nexus ] && label="nexus up"
  [ "$name" = wasmtime ] && label="wasmtime serve"
  [ "$name" = native ] && label="native hyper"
  echo "| $label | ${rps[$name]} | ${p50[$name]} | ${p99[$name]} | $(ratio "${rps[$name]}" "${rps[wasmtime]}") | $(ratio "${rps[$name]}" "${rps[native]}") |"
done
