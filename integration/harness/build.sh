#!/usr/bin/env bash
# Builds k8s-harness (see scripts/paths.sh for where) and the kubectl link
# next to it. Idempotent and incremental: Go's build cache does the work, so a
# rebuild with nothing changed takes seconds. The first build downloads the
# Kubernetes modules and compiles a large part of k8s.io/kubernetes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$repo/scripts/paths.sh"
out="$(flb_harness)"
mkdir -p "$(dirname "$out")"
# Version strings the upstream components report (kubectl version, node
# info); they default to v0.0.0-master when built outside the k8s tree.
ver=v1.37.2
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=37 -X $pkg.gitTreeState=clean"
done
if [ -x "$out" ]; then
  duration="built before: seconds, about a minute when a harness file changed"
else
  duration="first time: downloads 1.1 GB of Go modules and compiles much of Kubernetes, 15-30 min on 2 cores and 6 GB of disk; later: seconds"
fi
cd "$here"
"$repo/scripts/long-step.sh" "building the Kubernetes lab harness from k8s.io/kubernetes" \
  "$duration" "$(flb_target)/logs/harness-build.log" -- \
  go build -v -ldflags "$ldflags" -o "$out" .
# kubectl of the same version, for the tests and the demo (make puts this
# directory first on PATH).
ln -sf "$(basename "$out")" "$(flb_kubectl)"
echo "k8s-harness: $out"
