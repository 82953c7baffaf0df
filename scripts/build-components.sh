#!/usr/bin/env bash
# Builds every component of the workspace for wasm32-wasip2 (release), where spin.toml and the
# tests look for them: target/wasm32-wasip2/release/*.wasm (or under $CARGO_TARGET_DIR).
# With --clippy, lints them instead (clippy -D warnings, for the wasm target).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
fi
# The one list of the components (and the guest library they share).
packages=(
  -p nexus-guest
  -p nexus-provisioning -p nexus-chat -p nexus-history -p nexus-workspace -p nexus-workspace-socket
  -p nexus-chat-socket -p nexus-campaign-socket
  -p nexus-webhooks -p nexus-messaging -p nexus-sms -p nexus-email -p nexus-bots -p nexus-securemail
  -p nexus-outbound
  -p nexus-example -p nexus-hello -p nexus-fixture-limits -p nexus-fixture-sockets
  -p nexus-tenant -p faq-bot -p pii-redact -p nexus-fixture-tenant-misbehave
  -p nexus-assets
)
# The assets component embeds the widget, the console and the demo page: built first.
scripts/build-web.sh >/dev/null
if [[ "${1:-}" == "--clippy" ]]; then
  cargo clippy --locked --release --target wasm32-wasip2 "${packages[@]}" -- -D warnings
else
  cargo build --locked --release --target wasm32-wasip2 "${packages[@]}"
fi
