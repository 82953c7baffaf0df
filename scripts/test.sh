#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): the servers the tests need, the
# checks (vendored WIT unchanged, formatting, clippy on host and components), the components,
# then every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
scripts/vendor-wit.sh --check
cargo fmt --all -- --check
scripts/build-components.sh
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --target wasm32-wasip2 \
  -p nexus-example -p nexus-hello -p nexus-fixture-limits -- -D warnings
cargo test --locked
