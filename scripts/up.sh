#!/usr/bin/env bash
# Builds nexus and its components (release) and serves spin.toml: `scripts/up.sh [nexus up flags]`.
# With no REDIS_URL / DATABASE_URL it runs on the embedded Redis and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
fi
exec cargo run --locked --release -p nexus-host -- up --build "$@"
