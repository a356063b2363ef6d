#!/usr/bin/env bash
# Builds k8s-harness to <repo>/target/harness/k8s-harness.
# Idempotent and incremental: Go's build cache does the work, so a rebuild
# with nothing changed takes seconds. The first build compiles a large part
# of k8s.io/kubernetes and takes many minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$repo/target/harness/k8s-harness"
mkdir -p "$(dirname "$out")"
start=$(date +%s.%N)
# Version strings the upstream components report (kubectl version, node
# info); they default to v0.0.0-master when built outside the k8s tree.
ver=v1.37.2
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=37 -X $pkg.gitTreeState=clean"
done
cd "$here"
go build -ldflags "$ldflags" -o "$out" .
# kubectl of the same version, for the tests and the demo (make puts this
# directory first on PATH).
ln -sf k8s-harness "$(dirname "$out")/kubectl"
end=$(date +%s.%N)
printf 'k8s-harness built: %s (%.1fs)\n' "$out" "$(echo "$end - $start" | bc 2>/dev/null || awk "BEGIN{print $end-$start}")"
