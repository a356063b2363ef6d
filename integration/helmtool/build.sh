#!/usr/bin/env bash
# Builds helm from its Go module (no prebuilt download) into
# <repo>/target/tools/helm. Idempotent: when target/tools/helm already reports
# the wanted version nothing is rebuilt. The first build compiles helm and its
# Kubernetes client libraries: several minutes on 2 cores.
#
# Usage: integration/helmtool/build.sh        # prints the binary's path last
#        HELM_VERSION=v3.22.0 integration/helmtool/build.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
version="${HELM_VERSION:-v3.22.0}"
bindir="$repo/target/tools"
helm="$bindir/helm"

if ! command -v go >/dev/null 2>&1; then
  echo "error: go not found in PATH: helm is built from its Go module (run 'make setup')" >&2
  exit 1
fi

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$version"; then
  echo "helm $version already built: $helm (0.0s)"
  exit 0
fi

mkdir -p "$bindir"
start=$(date +%s.%N)
# helm's own Makefile stamps the version through ldflags; `go install` of a
# tagged module version also records it in the build info, which helm reads
# when the ldflag is absent. Set it explicitly so `helm version` is exact.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
GOBIN="$bindir" GOFLAGS="${GOFLAGS:-} -trimpath" CGO_ENABLED=0 \
  go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version"
end=$(date +%s.%N)
got="$("$helm" version --template '{{.Version}}')"
if [ "$got" != "$version" ]; then
  echo "error: built helm reports version '$got', wanted '$version'" >&2
  exit 1
fi
printf 'helm %s built: %s (%.1fs)\n' "$version" "$helm" \
  "$(awk "BEGIN{print $end-$start}")"
