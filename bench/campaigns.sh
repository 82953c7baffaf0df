#!/usr/bin/env bash
# What one host sends: the records per second of an SMS campaign at unlimited pacing
# (10,000 messages/s, a burst and an in-flight limit of 10,000), against the plain SMS send path
# as the baseline: as many keyword-reply jobs (one message each, through the same job worker,
# sms component and aggregator) queued at once. One `nexus up -f spin.toml` on the real Redis
# and PostgreSQL; the aggregator is bench/native-hello (200 to any request), a second process.
# Both are measured in each round, ROUNDS rounds interleaved, from PostgreSQL's own timestamps:
# the baseline from its first job's due time to its last job's end, the campaign from its start
# to its last record sent.
#
#   bench/campaigns.sh                # RECORDS=5000 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-5000}
ROUNDS=${ROUNDS:-3}

source bench/lib.sh
start_run_on_services
cargo build --quiet --locked --release -p nexus-host -p nexus-bench-native-hello
scripts/build-components.sh >/dev/null 2>&1
link_components
psql -q "$PGADMIN" -c "CREATE DATABASE $database"

"$target/release/nexus-bench-native-hello" 127.0.0.1:0 >"$work/native.out" 2>&1 &
pids+=($!)
aggregator="http://$(wait_for_line "$work/native.out" '127\.0\.0\.1:[0-9]+')"

admin=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
REDIS_URL="$REDIS_URL" DATABASE_URL="$database_url" RUST_LOG=warn \
  SPIN_VARIABLE_ADMIN_TOKEN="$admin" SPIN_VARIABLE_REDIS_KEY_PREFIX="$database:" \
  SPIN_VARIABLE_CREDENTIALS_KEY="$(head -c 32 /dev/urandom | base64)" \
  SPIN_VARIABLE_ALLOW_PRIVATE_OUTBOUND=true \
  "$target/release/nexus" up -f spin.toml --listen 127.0.0.1:0 --data-dir "$work/nexus" \
  --log-format json >"$work/nexus.out" 2>"$work/nexus.err" &
pids+=($!)
url=$(wait_for_line "$work/nexus.out" 'http://127\.0\.0\.1:[0-9]+')
api="$url/nexus/v3"

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
admin_post() { curl -sf -XPOST "$api/provisioning$1" -H "Authorization: Bearer $admin" -H 'content-type: application/json' -d "$2"; }
sql() { psql -qtA "$database_url" -c "$1"; }

admin_post /tenants '{"ccid":"bench","name":"Bench"}' >/dev/null
channel=$(admin_post /tenants/bench/channels "{\"type\":\"sms\",\"name\":\"sms\",\"secret\":\"token\",
  \"settings\":{\"accountSid\":\"AC1\",\"from\":\"+15550000\",\"apiBaseUrl\":\"$aggregator\"}}" | json "['data']['id']")
key=$(admin_post /tenants/bench/api-keys '{"name":"campaigns","permission":"outbound"}' | json "['data']['key']")
tenant=$(sql "SELECT id FROM tenants WHERE ccid = 'bench'")
curl -sf -XPUT "$api/outbound/templates/notice" -H "x-api-key: $key" -H 'content-type: application/json' \
  -d '{"channel":"sms","body":"Hi {{first_name}}, your order ships today."}' >/dev/null

# Waits until `$1` (SQL) answers true.
wait_until() {
  for _ in $(seq 6000); do
    [ "$(sql "$1")" = t ] && return
    sleep 0.1
  done
  echo "gave up waiting for: $1" >&2; exit 1
}

baseline_round() { # round -> messages/s
  sql "INSERT INTO jobs (id, tenant_id, component, kind, payload, run_at)
       SELECT gen_random_uuid(), $tenant, 'sms', 'keyword-reply',
              jsonb_build_object('channelId', '$channel', 'to', '+1415' || lpad(n::text, 7, '0'),
                                 'text', 'Reply STOP to opt out.', 'round', $1),
              now() + interval '1 second'
         FROM generate_series(1, $RECORDS) n" >/dev/null
  wait_until "SELECT count(*) = $RECORDS FROM jobs WHERE kind = 'keyword-reply'
                AND payload->>'round' = '$1' AND state = 'succeeded'"
  sql "SELECT round($RECORDS / extract(epoch FROM max(finished_at) - min(run_at))::numeric, 1)
         FROM jobs WHERE kind = 'keyword-reply' AND payload->>'round' = '$1'"
}

campaign_round() { # round -> records/s
  local list campaign
  list=$(curl -sf -XPOST "$api/outbound/lists" -H "x-api-key: $key" -H 'content-type: application/json' \
    -d "{\"name\":\"round $1\"}" | json "['data']['id']")
  python3 -c "
import sys
print('clientId,phone,first_name')
for n in range($RECORDS): print(f'c-{n},+1415{n:07},Name {n}')" |
    curl -sf -XPOST "$api/outbound/lists/$list/contacts" -H "x-api-key: $key" -H 'content-type: text/csv' \
      --data-binary @- >/dev/null
  campaign=$(curl -sf -XPOST "$api/outbound/campaigns" -H "x-api-key: $key" -H 'content-type: application/json' \
    -d "{\"name\":\"round $1\",\"channelId\":\"$channel\",\"listId\":\"$list\",\"template\":\"notice\",
         \"pacing\":{\"messagesPerSecond\":10000,\"burst\":10000,\"maxInFlight\":10000}}" | json "['data']['id']")
  curl -sf -XPOST "$api/outbound/campaigns/$campaign/start" -H "x-api-key: $key" >/dev/null
  wait_until "SELECT state = 'completed' FROM campaigns WHERE id = '$campaign'"
  local sent
  sent=$(sql "SELECT count(*) FROM campaign_records WHERE campaign_id = '$campaign' AND status = 'sent'")
  [ "$sent" = "$RECORDS" ] || { echo "round $1: $sent of $RECORDS records sent" >&2; exit 1; }
  sql "SELECT round($RECORDS / extract(epoch FROM max(r.updated_at) - c.started_at)::numeric, 1)
         FROM campaign_records r JOIN campaigns c ON c.id = r.campaign_id
        WHERE c.id = '$campaign' GROUP BY c.started_at"
}

declare -a baseline campaign
for round in $(seq "$ROUNDS"); do
  baseline[$round]=$(baseline_round "$round")
  campaign[$round]=$(campaign_round "$round")
  echo "round $round: keyword replies ${baseline[$round]}/s, campaign ${campaign[$round]}/s" >&2
done
base=$(printf '%s\n' "${baseline[@]}" | median)
sent=$(printf '%s\n' "${campaign[@]}" | median)
failed=$(grep -c '"level":"ERROR"' "$work/nexus.err" || true)

echo
echo "SMS sends of one nexus (Redis + PostgreSQL), $RECORDS messages a round, median of $ROUNDS rounds, $(nproc) cores; $failed errors logged"
echo
echo "| path | messages/s | vs the plain send path |"
echo "|---|---:|---:|"
echo "| keyword replies: one job, one message (the plain send path) | $base | 1.00 |"
echo "| campaign at unlimited pacing: pump, ten records a job, consent and template per record | $sent | $(ratio "$sent" "$base") |"
