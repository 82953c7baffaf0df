#!/usr/bin/env bash
# Benchmark of tenant components (bench/tenant-turn), on the real Redis and a fresh PostgreSQL
# database, each figure against a baseline measured in the same run:
#   1. a bot's turn in nexus's sandbox (a fresh instance of the FAQ bot under its limits, with its
#      key-value call to Redis) against a webhook bot's turn (the same turn's JSON to a native
#      bot on loopback, keep-alive): what running the bot inside nexus costs next to the
#      alternative;
#   2. a hot swap, from the activation in PostgreSQL to the first turn served by the new
#      version, with code new to the host (compiled then) and with code it has compiled (a
#      rollback), against one turn.
#
#   bench/tenant.sh          # TURNS=2000 SWAPS=10 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
start_run_on_services
cargo build --quiet --locked --release -p nexus-bench-tenant-turn
scripts/build-components.sh >/dev/null 2>&1
psql -q "$PGADMIN" -c "CREATE DATABASE $database"
RUST_LOG=warn "$target/release/nexus-bench-tenant-turn" "$database_url" "$REDIS_URL" \
  "$target/wasm32-wasip2/release/faq_bot.wasm" \
  "$target/wasm32-wasip2/release/nexus_fixture_tenant_misbehave.wasm"
