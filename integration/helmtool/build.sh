#!/usr/bin/env bash
# Builds helm from its Go module (no prebuilt download) to where
# scripts/paths.sh says. Idempotent: when that helm already reports the wanted
# version nothing is rebuilt.
#
# Usage: integration/helmtool/build.sh        # prints the binary's path last
#        HELM_VERSION=v3.22.0 integration/helmtool/build.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$repo/scripts/paths.sh"
version="${HELM_VERSION:-v3.22.0}"
helm="$(flb_helm)"

if ! command -v go >/dev/null 2>&1; then
  echo "error: go not found in PATH: helm is built from its Go module (run 'make setup')" >&2
  exit 1
fi

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
  echo "helm $version: $helm (already built)"
  exit 0
fi

mkdir -p "$(dirname "$helm")"
# helm's own Makefile stamps the version through ldflags; `go install` of a
# tagged module version also records it in the build info, which helm reads
# when the ldflag is absent. Set it explicitly so `helm version` is exact.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
"$repo/scripts/long-step.sh" "building helm $version from its Go module" \
  "first time: 3-8 min on 2 cores (less when the lab harness was built first); later: skipped" \
  "$(flb_target)/logs/helm-build.log" -- \
  env GOBIN="$(dirname "$helm")" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 \
  go install -v -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version"
got="$("$helm" version --template '{{.Version}}')"
if [ "$got" != "$version" ]; then
  echo "error: built helm reports version '$got', wanted '$version'" >&2
  exit 1
fi
echo "helm $version: $helm"
