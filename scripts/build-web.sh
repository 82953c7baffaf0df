#!/usr/bin/env bash
# Builds the web chat widget, the agent console and the demo page into web/dist (what
# components/assets embeds), with the pinned npm dev-dependencies of web/package-lock.json.
# Installs Node.js and npm from Debian's packages where they are missing. With --check, also
# type-checks the sources and the browser tests (tsc). Names after it (widget, console, demo) build only those parts.
set -euo pipefail
cd "$(dirname "$0")/../web"
if ! command -v npm >/dev/null; then
  echo "installing nodejs and npm" >&2
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq nodejs npm >/dev/null
fi
# The lock file decides every version; a tree already installed from it is kept. Install
# scripts stay off: none of these packages needs one (esbuild's binary comes as an optional
# dependency, and Playwright drives the system's Chromium, so it downloads no browser).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
if [[ "${1:-}" == "--check" ]]; then
  shift
  npx --no-install tsc --noEmit
  # The browser tests (Playwright runs them untyped).
  npx --no-install tsc --noEmit -p tests
fi
# Parts to build (widget, console, demo): all by default.
node build.mjs "$@"
