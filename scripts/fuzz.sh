#!/usr/bin/env bash
# Schema-driven fuzzing of every OpenAPI document (openapi/*.json) with schemathesis, against a
# real `nexus up` on the real Redis and PostgreSQL (tests/fuzz/run.py says how). Exits non-zero
# on any finding.
#
# It takes the built nexus and components from $CARGO_TARGET_DIR (default target):
# debug/nexus and wasm32-wasip2/release/*.wasm (scripts/build-components.sh and
# `cargo build --locked -p nexus-host` make them; scripts/test.sh does both). The servers are
# those of the tests (scripts/services.sh starts them): Redis on 127.0.0.1:6379, PostgreSQL on
# 127.0.0.1:5432 (trust auth, user postgres), or NEXUS_FUZZ_REDIS_URL / NEXUS_FUZZ_POSTGRES_URL.
#
# Settings (environment): NEXUS_FUZZ_MAX_EXAMPLES (cases per operation and phase, 40),
# NEXUS_FUZZ_SEED, NEXUS_FUZZ_DOC_BUDGET (seconds per document, 180), NEXUS_FUZZ_BUDGET (seconds
# for all documents, 600), NEXUS_FUZZ_DOCS (a comma-separated subset, e.g. chat-v3,history),
# NEXUS_FUZZ_WORKERS (1), NEXUS_FUZZ_REPORT_DIR (target/fuzz-report), NEXUS_BIN and
# NEXUS_WASM_DIR (to take nexus or the components from elsewhere), NEXUS_FUZZ_HOLD=1 (keep nexus
# serving after the run, so that the failures' curl commands reach it, until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
PSYCOPG_VERSION=3.3.9
REDIS_PY_VERSION=8.1.0

# Python 3.11 or later (tomllib) with venv and pip: Debian splits the last two into
# python3-venv.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! python3 -c 'import sys, venv, ensurepip, tomllib; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "fuzz: installing python3 and python3-venv" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi

venv=${NEXUS_FUZZ_VENV:-target/fuzz-venv}
stamp="$venv/.nexus-fuzz-requirements"
wanted="schemathesis==$SCHEMATHESIS_VERSION psycopg[binary]==$PSYCOPG_VERSION redis==$REDIS_PY_VERSION"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
  echo "fuzz: installing $wanted into $venv" >&2
  python3 -m venv "$venv"
  # shellcheck disable=SC2086 # one requirement a word
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $wanted
  echo "$wanted" > "$stamp"
fi
# No __pycache__ in tests/fuzz (the hooks are imported from there).
export PYTHONDONTWRITEBYTECODE=1
exec "$venv/bin/python" tests/fuzz/run.py "$@"
