#!/usr/bin/env bash
# Vendors the upstream WIT packages that nexus's components and host share into wit/deps,
# copied unmodified from the crates that ship them (no WIT registry is reachable from CI):
#   - WASI 0.2.12 (cli, clocks, filesystem, http, io, random, sockets) from wasmtime-wasi-http,
#     the version the host implements;
#   - fermyon:spin@2.0.0 and spin:postgres@4.0.0 from spin-sdk, the interfaces the components
#     import, with the WASI 0.2.0 / 0.2.0-rc-2023-10-18 packages their worlds refer to.
# The tenant package (wit/tenant, nexus:tenant) gets its own copy of the WASI 0.2.12 packages in
# wit/tenant/deps, so that it stands alone: a tenant's bindings generator needs only that folder.
# With --check it changes nothing and fails if wit/deps or wit/tenant/deps has drifted from those crates.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=copy
[ "${1:-}" = "--check" ] && mode=check

crate_dir() {
  # The source directory of the named crate at the version Cargo.lock resolves.
  local name=$1 version
  version=$(awk -v n="$name" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  [ -n "$version" ] || { echo "crate $name is not in Cargo.lock" >&2; exit 1; }
  cargo fetch --locked >/dev/null 2>&1 || true
  local dir
  dir=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$name-$version" 2>/dev/null | head -n 1)
  [ -d "$dir" ] || { echo "the source of $name $version is not in the cargo registry; run cargo fetch" >&2; exit 1; }
  echo "$dir"
}

wasi_http=$(crate_dir wasmtime-wasi-http)
spin_sdk=$(crate_dir spin-sdk)

staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
mkdir -p "$staging/deps"

for pkg in cli clocks filesystem http io random sockets; do
  mkdir -p "$staging/deps/$pkg@0.2.12"
  cp "$wasi_http/wit/deps/$pkg.wit" "$staging/deps/$pkg@0.2.12/$pkg.wit"
done
mkdir -p "$staging/tenant-deps"
cp -r "$staging"/deps/*@0.2.12 "$staging/tenant-deps/"
for pkg in spin@2.0.0 spin-postgres@4.0.0 \
           cli@0.2.0 clocks@0.2.0 filesystem@0.2.0 http@0.2.0 io@0.2.0 random@0.2.0 sockets@0.2.0 \
           cli-2023-10-18 clocks-2023-10-18 filesystem-2023-10-18 http-2023-10-18 io-2023-10-18 \
           random-2023-10-18 sockets-2023-10-18; do
  cp -r "$spin_sdk/wit/deps/$pkg" "$staging/deps/$pkg"
done

if [ "$mode" = check ]; then
  if ! diff -r "$staging/deps" wit/deps || ! diff -r "$staging/tenant-deps" wit/tenant/deps; then
    echo "wit/deps or wit/tenant/deps has drifted from the crates that ship it: run scripts/vendor-wit.sh" >&2
    exit 1
  fi
  echo "wit/deps matches wasmtime-wasi-http and spin-sdk"
else
  rm -rf wit/deps wit/tenant/deps
  cp -r "$staging/deps" wit/deps
  cp -r "$staging/tenant-deps" wit/tenant/deps
  echo "vendored WIT from $wasi_http and $spin_sdk"
fi
