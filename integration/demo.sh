#!/usr/bin/env bash
# ferrolb demo: brings the lab up (a Kubernetes cluster in network
# namespaces: m-k8s, w1..w3-k8s and a client on one layer-2 segment, with
# ferrolb installed and ready as its chart would leave it), replays the
# NodePort tutorial, then the MetalLB part of it with ferrolb, fails the
# announcing node and measures how fast the address moves. Always tears the
# lab down on exit and ends with a summary.
# Needs root. Run it as `make demo` (which builds everything first).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
repo="$(dirname "$here")"
# Every lab command goes through the lab's own command line, which finds the
# binaries (scripts/paths.sh).
LAB="$here/lab"

bold() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
now() { date +%s.%N; }
# Everything the client sends stays on the lab's segment.
client_curl() { ip netns exec flb-client curl -s --noproxy '*' "$@"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces); run 'sudo make demo'" >&2
  exit 1
fi
command -v kubectl >/dev/null || { echo "demo: kubectl is not installed" >&2; exit 1; }

# Own the machine's lab for the whole demo, so that a test run started
# meanwhile waits instead of replacing the demo's lab; the lab commands
# below run under this lock.
lockfile=/run/lock/ferrolb-lab.lock
mkdir -p "$(dirname "$lockfile")"
exec 9>>"$lockfile"
if ! flock -w 900 9; then
  echo "demo: the lab is in use by another process ($(cat "$lockfile")) for more than 15 minutes" >&2
  exit 1
fi
echo "$$ integration/demo.sh" >"$lockfile"
export FERROLB_LAB_LOCK_HELD=1

# What the summary reports.
demo_start=$SECONDS
summary=()
note() { summary+=("$*"); }

cleanup() {
  local rc=$?
  bold "tearing the lab down"
  if "$LAB" down; then
    note "lab torn down: no flb-* namespace, link or process left"
  else
    rc=1
    note "lab teardown FAILED (see above); 'integration/lab down' retries it"
  fi
  bold "summary ($(( (SECONDS - demo_start) / 60 ))m$(( (SECONDS - demo_start) % 60 ))s)"
  for line in ${summary[@]+"${summary[@]}"}; do echo "  - $line"; done
  if [ "$rc" -eq 0 ]; then echo "demo: OK"; else echo "demo: FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT

bold "bringing the lab up (3 workers, ferrolb installed and ready)"
up_start=$SECONDS
"$LAB" up --workers 3 --require-ferrolb
note "lab up in $((SECONDS - up_start))s: 4 nodes Ready, ferrolb's CRDs, membership Secret, controller and 4 speakers ready"
eval "$("$LAB" env)"
# The wrapper checks with cargo that `lab` is built (a few hundred ms): the
# timed step below calls the binary itself.
LABBIN="$("$LAB" paths bin lab)"
show kubectl get nodes -o wide

bold "tutorial: echo-hname deployment, scaled to 3, exposed as a NodePort"
show kubectl create deployment echo-hname --image=sysnet4admin/echo-hname
show kubectl scale deployment echo-hname --replicas=3
show kubectl rollout status deployment/echo-hname --timeout=120s
show kubectl get pods -o wide
show kubectl expose deployment echo-hname --type=NodePort --name=np-svc --port=80
show kubectl get services np-svc
nodeport=$(kubectl get service np-svc -o jsonpath='{.spec.ports[0].nodePort}')

bold "the client (192.0.2.200, outside the cluster) calls every node's NodePort $nodeport"
for ip in $FLB_NODE_IPS; do
  # kube-proxy programs the rules a moment after the Service appears.
  answered=""
  for _ in $(seq 1 60); do
    if client_curl --max-time 1 "http://$ip:$nodeport/" >/dev/null; then answered=1; break; fi
    sleep 0.5
  done
  if [ -z "$answered" ]; then
    echo "demo: $ip:$nodeport does not answer the client (see $FLB_LAB_DIR/logs/kube-proxy-*.log)" >&2
    exit 1
  fi
  printf '%-15s ->' "$ip"
  for _ in 1 2 3 4 5 6; do printf ' %s' "$(client_curl --max-time 2 "http://$ip:$nodeport/" || echo FAIL)"; done
  echo
done
note "tutorial NodePort $nodeport answered the client on every node, balanced over 3 pods"

bold "MetalLB part: ferrolb runs in the lab (controller in m-k8s, a speaker per node)"
show "$LAB" status
# The chart's install left the CRDs and the membership key (the speakers
# authenticate their datagrams with it; without it they announce nothing).
show kubectl get crd -o name
show kubectl -n metallb-system get secret ferrolb-memberlist
kubectl apply -f - <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  namespace: metallb-system
  name: config
data:
  config: |
    address-pools:
    - name: default
      protocol: layer2
      addresses:
      - 198.51.100.11-198.51.100.13
EOF
show kubectl -n metallb-system get configmap config -o yaml
show kubectl expose deployment echo-hname --type=LoadBalancer --name=lb-svc --port=80
lbip=""
for _ in $(seq 1 120); do
  lbip=$(kubectl get service lb-svc -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
  [ -n "$lbip" ] && break
  sleep 0.5
done
show kubectl get services lb-svc
if [ -z "$lbip" ]; then
  echo "demo: lb-svc got no EXTERNAL-IP within 60s (see $FLB_LAB_DIR/logs/controller.log)" >&2
  exit 1
fi

bold "the client calls the EXTERNAL-IP $lbip"
answered=""
for _ in $(seq 1 40); do
  if client_curl --max-time 1 "http://$lbip/" >/dev/null; then answered=1; break; fi
  sleep 0.5
done
if [ -z "$answered" ]; then
  echo "demo: the client gets no answer from $lbip within 60s: no speaker answers ARP for it" >&2
  echo "      (see $FLB_LAB_DIR/logs/speaker-*.log)" >&2
  exit 1
fi
for _ in 1 2 3 4 5 6; do printf ' %s' "$(client_curl --max-time 2 "http://$lbip/" || echo FAIL)"; done
echo
note "LoadBalancer lb-svc got $lbip from the tutorial's ConfigMap pool; the client reached it"

# Which node answers ARP for the address: the client's neighbour entry.
client_mac() {
  ip -n flb-client neigh show to "$lbip" dev eth0 | awk '{for (i=1;i<NF;i++) if ($i=="lladdr") print $(i+1)}'
}
# The node whose eth0 has MAC $1 (empty when none).
node_of_mac() {
  for n in $FLB_NODES; do
    if [ "$(ip -n "flb-$n" -o link show eth0 | awk '{for (i=1;i<NF;i++) if ($i=="link/ether") print $(i+1)}')" = "$1" ]; then
      echo "$n"
    fi
  done
}
mac=$(client_mac)
owner=$(node_of_mac "$mac")
echo "client's ARP entry: $lbip is at $mac (node ${owner:-unknown})"
if [ -z "$owner" ] || [ "$owner" = m-k8s ]; then
  echo "the announcing node is ${owner:-unknown}: the lab does not fail the control plane, so no failover is shown"
  note "failover not shown: $lbip is announced by ${owner:-an unknown node}, and the lab never fails the control plane"
  exit 0
fi

bold "failing $owner (its link goes down, all its processes are killed)"
t0=$(now)
"$LABBIN" node-fail "$owner"
# The address has moved when the new leader's gratuitous ARP rewrites the client's
# neighbour entry: measured on its own (every 20 ms), since the first answer below
# also depends on kube-proxy not picking a pod on the failed node.
moved=""
arp_deadline=$((SECONDS + 10))
while [ $SECONDS -lt $arp_deadline ]; do
  m=$(client_mac)
  if [ -n "$m" ] && [ "$m" != "$mac" ]; then moved=$(now); break; fi
  sleep 0.02
done
ok=""
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  if client_curl --max-time 0.5 "http://$lbip/" >/dev/null; then ok=1; break; fi
  sleep 0.1
done
t1=$(now)
if [ -z "$ok" ]; then
  echo "demo: $lbip did not answer within 60s after the failure of $owner" >&2
  exit 1
fi
mac2=$(client_mac)
new_owner="$(node_of_mac "$mac2" | grep . || echo unknown)"
answer_after="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
if [ -n "$moved" ]; then
  moved_after="$(awk -v a="$t0" -v b="$moved" 'BEGIN { printf "%.2f", b - a }')"
  printf 'address moved after %ss: the client'"'"'s neighbour entry for %s changed to %s (node %s)\n' \
    "$moved_after" "$lbip" "$mac2" "$new_owner"
  note "failover: $owner failed; $lbip moved to $new_owner after ${moved_after}s (the client's neighbour entry, polled every 20 ms)"
else
  echo "the client's neighbour entry for $lbip did not change within 10 s"
  note "failover: the client's neighbour entry for $lbip did NOT change within 10 s"
fi
printf 'interruption: %ss until the first answer (requests every 0.1 s, 0.5 s timeout); %s is now at %s (node %s)\n' \
  "$answer_after" "$lbip" "$mac2" "$new_owner"
fails=0
for _ in $(seq 1 20); do client_curl --max-time 1 "http://$lbip/" >/dev/null || fails=$((fails + 1)); done
echo "next 20 requests: $((20 - fails)) answered, $fails failed (pods on $owner stay endpoints until it is NotReady)"
note "first answer after ${answer_after}s; of the next 20 requests $((20 - fails)) answered ($fails went to pods on the dead node, which stay endpoints until it is NotReady)"

bold "recovering $owner"
"$LAB" node-recover "$owner"
show kubectl get nodes
note "$owner recovered"
