#!/usr/bin/env bash
# The browser tests (web/tests): Playwright drives Debian's Chromium through the widget on a
# customer's page and the agent console, against `nexus up --demo` on spin.toml, the real Redis
# and a fresh PostgreSQL database. Installs Chromium from Debian's packages where it is missing;
# expects the components built (scripts/build-components.sh) and Redis and PostgreSQL running
# (scripts/services.sh). Screenshots, traces and the HTML report go to web/test-results.
# With UPDATE_SCREENSHOTS=1 the README's screenshots (docs/screenshots) are replaced by the new ones.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  echo "installing chromium" >&2
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --locked --quiet -p nexus-host
scripts/build-web.sh >/dev/null
rm -rf web/test-results
export CARGO_TARGET_DIR=$target NEXUS_BIN=$target/debug/nexus CHROMIUM=${CHROMIUM:-$(command -v chromium)}
cd web
npx --no-install playwright test "$@"
if [ -n "${UPDATE_SCREENSHOTS:-}" ]; then
  mkdir -p ../docs/screenshots
  cp test-results/screenshots/*.png ../docs/screenshots/
fi
