#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this): the servers the tests need, the
# checks (vendored WIT unchanged, formatting, the deployment manifests rendered and validated,
# clippy on host, benchmarks and components), the components,
# then every unit and end-to-end test, the browser tests (scripts/browser-test.sh), then the
# fuzzing of the APIs (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
scripts/vendor-wit.sh --check
cargo fmt --all -- --check
# deploy/: kustomize renders it, and the Kubernetes and CRD schemas, spin.toml and openapi/
# validate it (offline: the tools come from npm and PyPI, pinned).
scripts/deploy-check.sh
# The web sources (widget, console, demo page): type-checked, then built (the gzipped widget's
# size limit is checked by the build).
scripts/build-web.sh --check
scripts/build-components.sh
# The native crates: the host, the guest library's unit tests, the test harness, the example
# tenant components' tests, and the benchmarks' programs.
cargo clippy --locked --all-targets -p nexus-host -p nexus-guest -p nexus-testing -p faq-bot \
  -p pii-redact -p nexus-bench-native-hello -p nexus-bench-ws-load -p nexus-bench-tenant-turn \
  -- -D warnings
scripts/build-components.sh --clippy
# The host as the container image builds it: without the embedded PostgreSQL.
cargo clippy --locked -p nexus-host --no-default-features -- -D warnings
# The default members: the host (unit and end-to-end), the guest library, the test harness, and
# the example tenant components (their unit tests, and their built components under the harness,
# as a tenant runs them).
cargo test --locked
# The widget and the console in a real browser (Playwright and Debian's Chromium, which it
# installs where missing) against `nexus up --demo` (the binary the tests just built).
scripts/browser-test.sh
# Schema-driven fuzzing of every OpenAPI document against a real nexus (the binary the tests
# just built) on the real Redis and PostgreSQL: no 5xx, every answer as documented. Bounded to a
# few minutes; it closes with `N passed, N failed` over the documents.
scripts/fuzz.sh
