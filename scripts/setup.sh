#!/usr/bin/env bash
# Installs what `make test` / `make demo` need on a fresh Debian machine.
# Idempotent: installs only what is missing.
set -euo pipefail

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: $1 needs root (network namespaces, veth links, iptables in the lab)." >&2
    echo "       run it as root, e.g. 'sudo make $1'." >&2
    exit 1
  fi
}

missing=()
# command -> Debian package
for pair in ip:iproute2 iptables:iptables nft:nftables conntrack:conntrack \
            curl:curl jq:jq tcpdump:tcpdump arping:arping; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root "${1:-setup}"
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "error: cargo not found (install Rust with rustup)" >&2; exit 1; }
command -v go >/dev/null || { echo "error: go not found" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
