#!/usr/bin/env bash
# Builds nexus and its components (release) and serves spin.toml: `scripts/up.sh [nexus up flags]`.
# With no REDIS_URL / DATABASE_URL it runs on the embedded Redis and PostgreSQL.
#
# It is for trying nexus on one machine: it starts it with `--demo`, which makes a demo contact
# center (tenant `demo`, a bot, an agent and a supervisor) and prints the URL of a demo page with
# the widget and links to the agent console. NEXUS_DEMO=false leaves the demo out.
#
# The provisioning API needs an admin token (the application variable admin_token). Unless
# SPIN_VARIABLE_ADMIN_TOKEN is set, one is made once, kept in .nexus/admin-token (mode 600), and
# used on every start. The same goes for credentials_key (.nexus/credentials-key).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
fi
if [[ -z "${SPIN_VARIABLE_ADMIN_TOKEN:-}" ]]; then
  token_file=.nexus/admin-token
  if [[ ! -s "$token_file" ]]; then
    mkdir -p .nexus
    (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' > "$token_file")
  fi
  SPIN_VARIABLE_ADMIN_TOKEN="$(cat "$token_file")"
  export SPIN_VARIABLE_ADMIN_TOKEN
  echo "admin token for the provisioning API: $token_file" >&2
fi
# Bot credentials are sealed under the application variable credentials_key: unless
# SPIN_VARIABLE_CREDENTIALS_KEY is set, one is made once and kept in .nexus/credentials-key.
if [[ -z "${SPIN_VARIABLE_CREDENTIALS_KEY:-}" ]]; then
  key_file=.nexus/credentials-key
  if [[ ! -s "$key_file" ]]; then
    mkdir -p .nexus
    (umask 077 && head -c 32 /dev/urandom | base64 > "$key_file")
  fi
  SPIN_VARIABLE_CREDENTIALS_KEY="$(cat "$key_file")"
  export SPIN_VARIABLE_CREDENTIALS_KEY
fi
demo=(--demo)
if [[ "${NEXUS_DEMO:-true}" == false ]]; then
  demo=()
else
  # The demo's FAQ bot is a tenant component (examples/tenant/faq-bot), not one of spin.toml's.
  cargo build --locked --quiet --target wasm32-wasip2 --release -p faq-bot
fi
exec cargo run --locked --release -p nexus-host -- up --build "${demo[@]}" "$@"
