#!/usr/bin/env bash
# ferrolb on kind: real container images on a real (containerised) cluster,
# the counterpart of the lab for what the lab cannot do (run ferrolb from its
# images, installed by its Helm chart). Needs docker, kind, kubectl, helm and
# cargo; CI runs it (.github/workflows/e2e-kind.yml). It cannot run on a
# machine without a docker engine.
#
# Usage: integration/kind/run.sh [STEP...]   (default: all)
#   images   build ferrolb/controller:dev and ferrolb/speaker:dev (deploy/docker)
#   cluster  create the kind cluster "ferrolb" (kind-config.yaml), load the images
#   install  helm install the chart, then configure a pool from kind's network
#   client   start the client container "ferrolb-client" on the kind network
#   smoke    LoadBalancer Service -> address allocated -> HTTP and ARP from the client
#   suite    cargo test -p ferrolb-integration --test "$FERROLB_E2E_SUITE": the
#            shared e2e scenarios (integration/src/e2e) against the cluster,
#            with FERROLB_E2E_* set for kind (see step_suite)
#   logs     dump ferrolb's pods, events and logs (CI calls it on failure)
#   down     delete the cluster and the client container
#   all      images cluster install client smoke suite
#
# Environment: KIND_CLUSTER (ferrolb), FERROLB_IMAGE_TAG (dev), HELM (helm in
# PATH), FERROLB_E2E_SUITE (e2e_external; empty: skip the suite step with a
# message), KUBECONFIG_OUT (kind/kubeconfig in cargo's target directory), FERROLB_E2E_ECHO_IMAGE
# (the suite's echo image, default agnhost 2.53 in netexec mode: answers
# /hostname with the pod name).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cluster="${KIND_CLUSTER:-ferrolb}"
tag="${FERROLB_IMAGE_TAG:-dev}"
helm="${HELM:-helm}"
ns=metallb-system
client=ferrolb-client
. "$repo/scripts/paths.sh"
kubeconfig="${KUBECONFIG_OUT:-$(flb_target)/kind/kubeconfig}"
suite="${FERROLB_E2E_SUITE-e2e_external}"

log() { printf '\n== %s\n' "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found in PATH"; }
k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

step_images() {
  need docker
  for c in controller speaker; do
    log "building ferrolb/$c:$tag"
    DOCKER_BUILDKIT=1 docker build -f "$repo/deploy/docker/Dockerfile.$c" \
      -t "ferrolb/$c:$tag" "$repo"
  done
}

step_cluster() {
  need kind; need docker
  if ! kind get clusters | grep -qx "$cluster"; then
    log "creating kind cluster $cluster"
    kind create cluster --name "$cluster" --config "$here/kind-config.yaml" --wait 180s
  fi
  mkdir -p "$(dirname "$kubeconfig")"
  kind get kubeconfig --name "$cluster" >"$kubeconfig"
  for c in controller speaker; do
    kind load docker-image --name "$cluster" "ferrolb/$c:$tag"
  done
}

# Address ranges at the top of kind's IPv4 subnet, which docker fills from
# the bottom: "install" gives the chart's pool (the 50 highest addresses but
# 5), "suite" the 50 below it, for the e2e scenarios' own pools (which must
# not overlap any other pool). Refuses a subnet that is not private.
kind_pool() {
  local which="$1" subnet
  subnet="$(docker network inspect kind \
    -f '{{range .IPAM.Config}}{{.Subnet}}{{"\n"}}{{end}}' | grep -v ':' | head -n1)"
  [ -n "$subnet" ] || die "kind's docker network has no IPv4 subnet"
  python3 - "$subnet" "$which" <<'EOF'
import ipaddress, sys
net = ipaddress.ip_network(sys.argv[1])
if not net.is_private or net.num_addresses < 256:
    sys.exit(f"kind's network {net} is not a private network of 256 addresses or more")
last = net.broadcast_address - 6
if sys.argv[2] == "suite":
    last -= 50
print(f"{last - 49}-{last}")
EOF
}

step_install() {
  need "$helm"; need kubectl
  local pool
  pool="$(kind_pool install)"
  log "installing the chart into $ns (pool $pool)"
  k create namespace "$ns" --dry-run=client -o yaml | k apply -f -
  k label namespace "$ns" pod-security.kubernetes.io/enforce=privileged --overwrite
  local vals=(
    --set "controller.image.repository=ferrolb/controller" --set "controller.image.tag=$tag"
    --set "speaker.image.repository=ferrolb/speaker" --set "speaker.image.tag=$tag"
    --set "controller.image.pullPolicy=Never" --set "speaker.image.pullPolicy=Never"
    --set "controller.logFormat=text" --set "speaker.logFormat=text"
  )
  # First release: creates the CRDs (the pool objects need them served).
  "$helm" upgrade --install ferrolb "$repo/deploy/helm/ferrolb" \
    --kubeconfig "$kubeconfig" -n "$ns" "${vals[@]}" --wait --timeout 5m
  # Second: the configuration, now that metallb.io is served.
  "$helm" upgrade ferrolb "$repo/deploy/helm/ferrolb" \
    --kubeconfig "$kubeconfig" -n "$ns" "${vals[@]}" \
    --set "ipAddressPools[0].name=kind" \
    --set "ipAddressPools[0].spec.addresses[0]=$pool" \
    --set "l2Advertisements[0].name=kind" \
    --wait --timeout 5m
  k -n "$ns" get ipaddresspools,l2advertisements
  k -n "$ns" rollout status deploy/ferrolb-controller --timeout 180s
  k -n "$ns" rollout status ds/ferrolb-speaker --timeout 180s
}

step_client() {
  need docker
  if ! docker inspect "$client" >/dev/null 2>&1; then
    log "starting client container $client on the kind network"
    # NET_ADMIN: the e2e suite flushes the client's neighbour entries
    # (ip neigh flush) to make it ask ARP again.
    docker run -d --name "$client" --network kind --cap-add NET_RAW --cap-add NET_ADMIN \
      docker.io/library/alpine:3.20 sleep infinity >/dev/null
    docker exec "$client" apk add --no-cache curl iputils-arping iproute2 >/dev/null
  fi
}

step_smoke() {
  need kubectl; need docker
  log "smoke: LoadBalancer Service answered over the L2 segment"
  k apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke}}
  template:
    metadata: {labels: {app: smoke}}
    spec:
      containers:
      - name: agnhost
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: [netexec, --http-port=8080]
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: smoke, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: smoke}
  ports: [{port: 80, targetPort: 8080}]
EOF
  k rollout status deploy/smoke --timeout 180s
  local ip=""
  for _ in $(seq 1 60); do
    ip="$(k get svc smoke -o jsonpath='{.status.loadBalancer.ingress[0].ip}')"
    [ -n "$ip" ] && break
    sleep 2
  done
  [ -n "$ip" ] || { k describe svc smoke; die "no address allocated to default/smoke"; }
  echo "allocated $ip"
  local mac
  for _ in $(seq 1 30); do
    if docker exec "$client" arping -c 1 -w 2 -I eth0 "$ip" >/dev/null 2>&1; then break; fi
    sleep 1
  done
  docker exec "$client" arping -c 3 -I eth0 "$ip" || die "$ip does not answer ARP"
  mac="$(docker exec "$client" ip neigh show "$ip" | awk '{print $5}')"
  echo "ARP: $ip is at $mac"
  local body
  body="$(docker exec "$client" curl -fsS --max-time 5 "http://$ip/hostname")" \
    || die "HTTP to $ip failed"
  echo "HTTP: served by pod $body"
  k get servicel2statuses -A || true
}

step_suite() {
  if [ -z "$suite" ]; then
    echo "suite: FERROLB_E2E_SUITE is empty: external e2e suite not run" >&2
    return 0
  fi
  [ -f "$repo/integration/tests/$suite.rs" ] \
    || die "e2e suite integration/tests/$suite.rs does not exist (set FERROLB_E2E_SUITE)"
  need docker; need cargo
  local pool legacy=config
  pool="$(kind_pool suite)"
  # The legacy scenario creates ConfigMap "config" (the chart's default
  # name) and removes it; with a ConfigMap already there it is skipped.
  if k -n "$ns" get configmap "$legacy" >/dev/null 2>&1; then legacy=""; fi
  log "e2e suite $suite against kind (addresses $pool)"
  FERROLB_E2E_KUBECONFIG="$kubeconfig" \
  FERROLB_E2E_CLIENT="docker exec $client" \
  FERROLB_E2E_POOL="$pool" \
  FERROLB_E2E_NAMESPACE=ferrolb-e2e \
  FERROLB_E2E_CONFIG_NAMESPACE="$ns" \
  FERROLB_E2E_LEGACY_CONFIGMAP="$legacy" \
  FERROLB_E2E_ECHO_IMAGE="${FERROLB_E2E_ECHO_IMAGE:-registry.k8s.io/e2e-test-images/agnhost:2.53}" \
    cargo test --manifest-path "$repo/Cargo.toml" -p ferrolb-integration \
      --test "$suite" -- --nocapture --test-threads=1
}

step_logs() {
  k get nodes -o wide || true
  k -n "$ns" get all,ipaddresspools,l2advertisements,servicel2statuses -o wide || true
  k get events -A --sort-by=.lastTimestamp | tail -n 100 || true
  # What the e2e scenarios left behind (they remove their namespaces and
  # pools, also on failure).
  k get namespaces -l app.kubernetes.io/created-by=ferrolb-e2e || true
  k -n "$ns" get ipaddresspools,l2advertisements,configmaps -o wide || true
  k -n "$ns" logs deploy/ferrolb-controller --all-containers --tail=300 || true
  k -n "$ns" logs ds/ferrolb-speaker --all-containers --tail=300 --prefix || true
}

step_down() {
  docker rm -f "$client" >/dev/null 2>&1 || true
  kind delete cluster --name "$cluster" || true
}

steps=("$@")
[ "${#steps[@]}" -gt 0 ] || steps=(all)
for s in "${steps[@]}"; do
  case "$s" in
    all) step_images; step_cluster; step_install; step_client; step_smoke; step_suite ;;
    images|cluster|install|client|smoke|suite|logs|down) "step_$s" ;;
    -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown step '$s' (see --help)" ;;
  esac
done
