#!/usr/bin/env bash
# Render the kustomize base and both overlays, and validate every object
# offline against the Kubernetes OpenAPI schemas with `kubernetes-validate
# --strict` (unknown fields are errors).
#
#   deploy/validate.sh                      # Kubernetes 1.33.0 and 1.37.0
#   K8S_VERSIONS="1.35.0" deploy/validate.sh
#
# kubernetes-validate knows Kubernetes' own kinds only: for any other kind it
# warns and passes. Here such a warning is an error (it also means a misspelt
# apiVersion), and the custom resources we ship (the VolumeSnapshotClass) are
# taken out first and checked by check-custom-resources.py instead.
#
# Exit status: 0 valid, 1 invalid, 3 a required tool is not installed.
set -euo pipefail

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
read -r -a versions <<<"${K8S_VERSIONS:-1.33.0 1.37.0}"

missing() {
  echo "validate.sh: $1 is not installed ($2)" >&2
  exit 3
}
command -v python3 >/dev/null 2>&1 || missing python3 "apt-get install python3"
command -v kubernetes-validate >/dev/null 2>&1 ||
  missing kubernetes-validate "pip install kubernetes-validate"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 "$deploy/check-custom-resources.py" --self-test

validate_args=(--strict --quiet)
for v in "${versions[@]}"; do
  validate_args+=(--kubernetes-version "$v")
done

failed=0
for target in base overlays/fake-cloud overlays/digitalocean; do
  name=${target##*/}
  echo "== $target"
  rc=0
  "$deploy/render.sh" "$deploy/kubernetes/$target" >"$tmp/$name.yaml" || rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 3 ] && exit 3
    echo "FAIL $target: could not be rendered"
    failed=1
    continue
  fi

  python3 "$deploy/check-custom-resources.py" "$tmp/$name.yaml" "$tmp/$name.core.yaml" || failed=1

  rc=0
  kubernetes-validate "${validate_args[@]}" "$tmp/$name.core.yaml" >"$tmp/$name.out" || rc=$?
  cat "$tmp/$name.out"
  if [ "$rc" -ne 0 ]; then
    echo "FAIL $target: schema errors"
    failed=1
  elif grep -q '^WARN' "$tmp/$name.out"; then
    echo "FAIL $target: objects without a schema (unknown kind or apiVersion)"
    failed=1
  else
    count=$(grep -c '^kind:' "$tmp/$name.core.yaml")
    echo "ok   $target: $count objects valid for Kubernetes ${versions[*]}"
  fi
done

exit "$failed"
