#!/usr/bin/env bash
# Render one kustomization directory to stdout.
#
#   deploy/render.sh deploy/kubernetes/overlays/fake-cloud
#
# Uses `kustomize build` when kustomize is installed, else `kubectl kustomize`
# (kubectl embeds kustomize). Exits 3 when neither is installed, so callers can
# tell a missing tool from a broken kustomization.
set -euo pipefail

if [ "$#" -ne 1 ]; then
  echo "usage: $0 KUSTOMIZATION_DIR" >&2
  exit 2
fi

if command -v kustomize >/dev/null 2>&1; then
  exec kustomize build "$1"
elif command -v kubectl >/dev/null 2>&1; then
  exec kubectl kustomize "$1"
else
  echo "render.sh: neither kustomize nor kubectl is installed" >&2
  exit 3
fi
