#!/usr/bin/env bash
# Smoke test of k8s-harness on its own, without the Rust lab: builds it,
# makes a 2-node topology (netns flb-hs-*: "flb-" so that `lab down` also
# finds leftovers, "hs" so that the names never collide with the lab's own),
# runs control plane, forward, node agents and kube-proxies, deploys 3 echo
# pods behind a NodePort Service and curls it from a client netns through a
# node address. Everything it made is removed on exit, also on failure.
#
#   sudo integration/harness/smoke.sh            # kube-proxy in iptables mode
#   sudo MODE=nftables integration/harness/smoke.sh
#
# Needs root, iproute2, iptables/nft, curl, kubectl. Traffic stays inside
# the flb-hs-* namespaces; the root namespace gets no lab address.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
. "$repo/scripts/paths.sh"
H="$(flb_harness)"
MODE="${MODE:-iptables}"
P=flb-hs
S="$(mktemp -d /tmp/flb-hs-smoke.XXXXXX)"
pids=()

cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 30); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.5
  done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do ip netns del "$ns"; done
  if [ "${KEEP_STATE:-}" = 1 ]; then echo "state kept in $S"; else rm -rf "$S"; fi
}
trap cleanup EXIT

"$here/build.sh"

# name:last-octet:pod-subnet
nodes=("m-k8s:10:0" "w1-k8s:101:1")
ip netns add $P-sw
ip -n $P-sw link set lo up
ip -n $P-sw link add br0 type bridge
ip -n $P-sw link set br0 up
add_host() { # name last-octet
  ip netns add "$P-$1"
  ip -n "$P-$1" link set lo up
  ip -n $P-sw link add "v-hs-$1" type veth peer name eth0 netns "$P-$1"
  ip -n $P-sw link set "v-hs-$1" master br0 up
  ip -n "$P-$1" addr add "192.0.2.$2/24" dev eth0
  ip -n "$P-$1" link set eth0 up
}
for n in "${nodes[@]}"; do IFS=: read -r h l k <<<"$n"
  add_host "$h" "$l"
  ip netns exec "$P-$h" sysctl -qw net.ipv4.ip_forward=1
done
add_host client 200
for n in "${nodes[@]}"; do IFS=: read -r h l k <<<"$n"
  for o in "${nodes[@]}"; do IFS=: read -r oh ol ok <<<"$o"
    [ "$oh" = "$h" ] || ip -n "$P-$h" route add "198.18.$ok.0/24" via "192.0.2.$ol"
  done
done

ip netns exec $P-m-k8s "$H" control-plane --data-dir "$S/cp" --advertise-address 192.0.2.10 \
  --service-cidr 198.19.0.0/16 --cluster-cidr 198.18.0.0/16 >"$S/cp.log" 2>&1 &
pids+=($!)
t0=$(date +%s)
until [ -f "$S/cp/ready" ]; do
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    rc=0; wait "${pids[0]}" || rc=$?
    tail -20 "$S/cp.log"
    # 137 = SIGKILL from outside, e.g. a concurrent `lab down` (flb-*).
    echo "FAIL: control plane exited with status $rc"; exit 1
  fi
  [ $(( $(date +%s) - t0 )) -lt 180 ] || { echo "FAIL: control plane not ready in 180s"; exit 1; }
  sleep 0.5
done
echo "control plane ready after $(( $(date +%s) - t0 ))s"

"$H" forward --unix "$S/cp/apiserver.sock" --listen 127.0.0.1:0 --port-file "$S/forward.port" \
  --kubeconfig-in "$S/cp/kubeconfig" --kubeconfig-out "$S/kubeconfig" >"$S/forward.log" 2>&1 &
pids+=($!)
for n in "${nodes[@]}"; do IFS=: read -r h l k <<<"$n"
  ip netns exec "$P-$h" "$H" node-agent --kubeconfig "$S/cp/kubeconfig" --node-name "$h" \
    --node-ip "192.0.2.$l" --pod-cidr "198.18.$k.0/24" --netns "$P-$h" --state-dir "$S/nodes/$h" \
    >"$S/node-agent-$h.log" 2>&1 &
  pids+=($!)
  ip netns exec "$P-$h" "$H" kube-proxy --kubeconfig "$S/cp/kubeconfig" --hostname-override "$h" \
    --node-ip "192.0.2.$l" --cluster-cidr 198.18.0.0/16 --mode "$MODE" >"$S/kube-proxy-$h.log" 2>&1 &
  pids+=($!)
done
until [ -f "$S/forward.port" ]; do sleep 0.2; done
export KUBECONFIG="$S/kubeconfig"

# The agents register their Nodes asynchronously: wait until all exist.
for _ in $(seq 1 120); do
  [ "$(kubectl get nodes --no-headers 2>/dev/null | grep -c .)" -ge ${#nodes[@]} ] && break
  sleep 0.5
done
kubectl wait --for=condition=Ready node --all --timeout=60s
kubectl create deployment np-pods --image=sysnet4admin/echo-hname --replicas=3
kubectl expose deployment np-pods --type=NodePort --name=np-svc --port=80
kubectl wait --for=condition=Available deployment/np-pods --timeout=90s
kubectl get pods -o wide
port=$(kubectl get svc np-svc -o jsonpath='{.spec.ports[0].nodePort}')

# kube-proxy needs a moment after the endpoints appear.
names=""
for _ in $(seq 1 30); do
  names=$(for _ in $(seq 1 12); do
    ip netns exec $P-client curl -s -m 2 "http://192.0.2.101:$port/" || true
  done | sort -u)
  [ "$(echo "$names" | grep -c .)" -ge 2 ] && break
  sleep 1
done
echo "answers through 192.0.2.101:$port:"; echo "$names"
if [ "$(echo "$names" | grep -c .)" -ge 2 ]; then
  echo "smoke ($MODE): 1 passed, 0 failed"
else
  echo "smoke ($MODE): 0 passed, 1 failed"
  exit 1
fi
