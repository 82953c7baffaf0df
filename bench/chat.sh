#!/usr/bin/env bash
# Load benchmark of the Chat API v3's "send message", on the real Redis and PostgreSQL, against two
# baselines served by the same nexus process in the same run:
#   1. GET /hello/                              the per-request floor of the host,
#   2. POST /example/notes                      one committed INSERT through the same host path
#      (the example component): the floor of a durable write,
#   3. POST {selfUri}/messages (data[text]=...)  a customer's message: token verified, API key
#      checked in PostgreSQL, the message committed to PostgreSQL, the live state in Redis.
# The messages go round-robin to SESSIONS open sessions of one tenant. wrk is a second process
# on loopback; each is measured ROUNDS times, interleaved, and the median round is reported.
# Afterwards every accepted message is counted in PostgreSQL.
#
# Each run also counts the CPU time of the host, PostgreSQL's backends and Redis per request,
# to show where a request's cost lands (CPU_OF= to skip).
#
#   bench/chat.sh                       # DURATION=10s CONNECTIONS=32 SESSIONS=64 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-64}
# Whose CPU time is counted per request (process names): where a request's cost lands.
CPU_OF=${CPU_OF:-nexus postgres redis-server}

source bench/lib.sh
start_run_on_services
if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; fi
fi
cargo build --quiet --locked --release -p nexus-host
scripts/build-components.sh >/dev/null 2>&1
link_components
psql -q "$PGADMIN" -c "CREATE DATABASE $database"

admin=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
REDIS_URL="$REDIS_URL" DATABASE_URL="$database_url" RUST_LOG=warn \
  SPIN_VARIABLE_ADMIN_TOKEN="$admin" SPIN_VARIABLE_REDIS_KEY_PREFIX="$database:" \
  SPIN_VARIABLE_CREDENTIALS_KEY="$(head -c 32 /dev/urandom | base64)" \
  "$target/release/nexus" up -f spin.toml --listen 127.0.0.1:0 --data-dir "$work/nexus" \
  --log-format json >"$work/nexus.out" 2>"$work/nexus.err" &
pids+=($!)
url=$(wait_for_line "$work/nexus.out" 'http://127\.0\.0\.1:[0-9]+')

api="$url/nexus/v3"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
admin_post() { curl -sf -XPOST "$api/provisioning$1" -H "Authorization: Bearer $admin" -H 'content-type: application/json' -d "$2"; }
admin_post /tenants '{"ccid":"bench","name":"Bench"}' >/dev/null
admin_post /tenants/bench/channels '{"type":"chat","name":"web"}' >/dev/null
key=$(admin_post /tenants/bench/api-keys '{"name":"widget","permission":"chat"}' | json "['data']['key']")

# The wrk script: one request per session in turn.
{
  echo "local key = \"$key\""
  echo "local sessions = {"
  for n in $(seq "$SESSIONS"); do
    started=$(curl -sf -XPOST "$api/chat/sessions" -H "x-api-key: $key" -d "data[nickname]=visitor$n")
    id=$(echo "$started" | json "['data']['sessionId']")
    token=$(echo "$started" | json "['data']['clientToken']")
    echo "  { path = \"/nexus/v3/chat/sessions/$id/messages\", token = \"$token\" },"
  done
  echo "}"
  cat <<'LUA'
local counter = 0
local body = "data%5Btype%5D=Text&data%5Btext%5D=Hello%2C+where+is+my+order%3F"
request = function()
  counter = counter + 1
  local session = sessions[(counter % #sessions) + 1]
  return wrk.format("POST", session.path, {
    ["content-type"] = "application/x-www-form-urlencoded",
    ["x-api-key"] = key,
    ["x-nexus-client-key"] = session.token,
  }, body)
end
LUA
} >"$work/send.lua"

cat >"$work/note.lua" <<'LUA'
wrk.method = "POST"
wrk.path = "/example/notes"
wrk.body = "Hello, where is my order?"
LUA

measure_hello() { measure hello "$url/hello"; }
measure_insert() { measure insert "$url" "$work/note.lua"; }
measure_send() { measure send "$url" "$work/send.lua"; }

run_rounds hello insert send
stored=$(psql -qtA "$database_url" -c "SELECT count(*) FROM messages WHERE type = 'Text'")
failed=$(grep -c '"level":"ERROR"' "$work/nexus.err" || true)

echo
echo "send message vs hello and a bare INSERT, one nexus on Redis + PostgreSQL, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $SESSIONS sessions, median of $ROUNDS rounds, $(nproc) cores"
echo
echo "| request | requests/s | p50 ms | p99 ms | req/s vs hello | req/s vs INSERT |"
echo "|---|---:|---:|---:|---:|---:|"
for name in hello insert send; do
  case $name in
    hello) label="GET /hello/ (baseline)" ;;
    insert) label="POST /example/notes (baseline: one INSERT)" ;;
    send) label="POST {selfUri}/messages" ;;
  esac
  echo "| $label | ${rps[$name]} | ${p50[$name]} | ${p99[$name]} | $(ratio "${rps[$name]}" "${rps[hello]}") | $(ratio "${rps[$name]}" "${rps[insert]}") |"
done
if [ -n "$CPU_OF" ]; then
  echo
  echo "CPU µs per request (user + system, median of the rounds), by process:"
  echo
  echo "| request | $(echo "$CPU_OF" | sed 's/ / | /g') |"
  echo "|---|$(for _ in $CPU_OF; do printf -- '---:|'; done)"
  for name in hello insert send; do
    echo "| $name | $(echo "${cpu[$name]}" | xargs | sed 's/ / | /g') |"
  done
fi
echo
echo "messages stored in PostgreSQL: $stored; host errors logged: $failed"
