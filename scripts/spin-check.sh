#!/usr/bin/env bash
# Serves spin.toml under a real Spin and checks that nexus's components work there, on this
# machine's Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, user postgres):
#   - PostgreSQL through the manifest's default postgres_address (its parameters, sslmode
#     included, on a database of this check's own): provisioning writes a tenant, a channel and
#     an API key;
#   - a chat: start, send, a transcript long-poll that waits for the next
#     message by polling inside its instance (Spin never calls the nexus:platform/parking
#     export, which chat and workspace carry), and answers when the message comes;
#   - the agents' events long-poll, which waits the same way.
# Not part of scripts/test.sh: it needs a `spin` binary (3.4 or later), and building one from
# source takes about 40 minutes on two cores (../shared/tools/build-spin.sh in this workplace).
#
#   SPIN=/path/to/spin scripts/spin-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SPIN=${SPIN:?set SPIN to a spin binary (3.4 or later)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nexus-ci-target}
PORT=${PORT:-3917}
ADMIN=spin-check-admin-token
BASE="http://127.0.0.1:$PORT/nexus/v3"

scripts/build-components.sh >/dev/null
cargo build --quiet -p nexus-host

app=$(mktemp -d)
db="nexus_spin_check_$$"
spin_pid=
cleanup() {
  [ -n "$spin_pid" ] && kill "$spin_pid" 2>/dev/null && wait "$spin_pid" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$app"
}
trap cleanup EXIT

mkdir -p "$app/target/wasm32-wasip2/release"
cp spin.toml "$app/"
cp "$CARGO_TARGET_DIR"/wasm32-wasip2/release/*.wasm "$app/target/wasm32-wasip2/release/"

# The manifest's default address, on this check's database.
default=$(sed -n 's/^postgres_address = { default = "\(.*\)" }$/\1/p' spin.toml)
[ -n "$default" ] || { echo "no default postgres_address in spin.toml" >&2; exit 1; }
address=$(echo "$default" | sed "s#/nexus?#/$db?#")
[ "$address" != "$default" ] || { echo "unexpected default address: $default" >&2; exit 1; }
echo "postgres_address: $address (the manifest's default, on database $db)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db" >/dev/null
DATABASE_URL="$address" "$CARGO_TARGET_DIR/debug/nexus" migrate >/dev/null 2>&1

SPIN_VARIABLE_POSTGRES_ADDRESS="$address" \
  SPIN_VARIABLE_ADMIN_TOKEN="$ADMIN" \
  SPIN_VARIABLE_CREDENTIALS_KEY="$(head -c 32 /dev/urandom | base64)" \
  SPIN_VARIABLE_REDIS_KEY_PREFIX="spin-check-$$:" \
  "$SPIN" up --from "$app/spin.toml" --listen "127.0.0.1:$PORT" >"$app/spin.log" 2>&1 &
spin_pid=$!
for _ in $(seq 100); do
  curl -fs -o /dev/null "http://127.0.0.1:$PORT/nexus/v3/chat/sessions/none" -H 'x-nexus-client-key: x' && break
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/nexus/v3/chat/sessions/none" || true)
  [ "$code" != "000" ] && break
  sleep 0.2
done
echo "spin: $("$SPIN" --version)"

fail() { echo "FAILED: $*" >&2; echo "--- spin's log:" >&2; tail -n 40 "$app/spin.log" >&2; exit 1; }
# call METHOD PATH [JSON] [extra curl args...]: prints "status body"
call() {
  local method=$1 path=$2 body=${3:-}
  shift 3 || shift $#
  local args=(-s -X "$method" "$BASE$path" -w '\n%{http_code}')
  [ -n "$body" ] && args+=(-H 'content-type: application/json' -d "$body")
  curl "${args[@]}" "$@"
}
expect() { # STATUS OUTPUT WHAT
  local status=${2##*$'\n'}
  [ "$status" = "$1" ] || fail "$3: $status ${2%$'\n'*}"
  echo "ok: $3 ($status)"
}
json() { python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().rsplit('\n',1)[0]); print($1)"; }

admin=(-H "authorization: Bearer $ADMIN")
out=$(call POST /provisioning/tenants '{"ccid":"acme","name":"Acme"}' "${admin[@]}")
expect 201 "$out" "PostgreSQL: a tenant provisioned"
out=$(call POST /provisioning/tenants/acme/channels '{"type":"chat","name":"web"}' "${admin[@]}")
expect 201 "$out" "a chat channel"
out=$(call POST /provisioning/tenants/acme/api-keys '{"name":"widget","permission":"chat"}' "${admin[@]}")
expect 201 "$out" "a chat API key"
key=$(echo "$out" | json 'd["data"]["key"]')

out=$(call POST /chat/sessions '{"nickname":"Ada"}' -H "x-api-key: $key")
expect 201 "$out" "a chat session"
session=$(echo "$out" | json 'd["data"]["sessionId"]')
token=$(echo "$out" | json 'd["data"]["clientToken"]')
client=(-H "x-nexus-client-key: $token")
out=$(call GET "/chat/sessions/$session/messages?after=0" "" "${client[@]}")
expect 200 "$out" "a transcript read"
after=$(echo "$out" | json 'd["data"]["nextPosition"]')

# A long-poll that waits (polling, under Spin) until another tab writes.
reader="$app/read.out"
(call GET "/chat/sessions/$session/messages?after=$after&timeout=20" "" "${client[@]}" >"$reader") &
read_pid=$!
sleep 1
out=$(call POST "/chat/sessions/$session/messages" '{"type":"Text","text":"hello from Spin"}' "${client[@]}")
expect 200 "$out" "a message sent"
started=$(date +%s)
wait "$read_pid"
out=$(cat "$reader")
expect 200 "$out" "the waiting read answered"
echo "$out" | json 'd["data"]["messages"][0]["text"]' | grep -qx "hello from Spin" ||
  fail "the waiting read did not carry the message: $out"
[ $(($(date +%s) - started)) -lt 5 ] || fail "the waiting read answered only at its timeout"
echo "ok: the waiting read carried the message"

# An agent's events long-poll waits and times out empty.
out=$(call POST /provisioning/tenants/acme/agents '{"username":"ann","nickname":"Ann","capacity":{"chat":1}}' "${admin[@]}")
expect 201 "$out" "an agent"
agent_token=$(echo "$out" | json 'd["data"]["token"]')
out=$(call GET "/workspace/events?after=0&timeout=1" "" -H "authorization: Bearer $agent_token")
expect 200 "$out" "the agent's events long-poll"
echo "spin-check: passed"
