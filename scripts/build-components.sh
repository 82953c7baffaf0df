#!/usr/bin/env bash
# Builds every component of the workspace for wasm32-wasip2 (release), where spin.toml and the
# tests look for them: target/wasm32-wasip2/release/*.wasm (or under $CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null; then
  rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
fi
cargo build --locked --release --target wasm32-wasip2 \
  -p nexus-example -p nexus-hello -p nexus-fixture-limits
