#!/usr/bin/env bash
# Builds the nexus container image from Containerfile with buildah, or podman where there is no
# buildah (both are Debian packages: `apt-get install buildah`; --install does that). The image
# is in Docker's format, which keeps the Containerfile's HEALTHCHECK (OCI's drops it).
#
#   scripts/build-image.sh [--install] [--tag NAME:TAG] [--push]
#
# Default tag: localhost/nexus:<git describe>. --push pushes the tag (log in first). The build
# pulls its base images (Containerfile: RUST_IMAGE, RUNTIME_IMAGE) from their registries and
# downloads crates and npm packages, so it needs the network.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="localhost/nexus:$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
install=false push=false
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=true ;;
    --tag) tag=${2:?--tag needs NAME:TAG}; shift ;;
    --push) push=true ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

builder=
for candidate in buildah podman; do
  if command -v "$candidate" >/dev/null; then builder=$candidate; break; fi
done
if [ -z "$builder" ] && $install; then
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq buildah >/dev/null
  builder=buildah
fi
[ -n "$builder" ] || { echo "no OCI builder: install buildah or podman (or pass --install)" >&2; exit 1; }

echo "building $tag with $builder" >&2
case "$builder" in
  buildah) buildah build --format docker --layers -f Containerfile -t "$tag" . ;;
  podman) podman build --format docker --layers -f Containerfile -t "$tag" . ;;
esac
if $push; then
  "$builder" push "$tag"
fi
echo "$tag"
