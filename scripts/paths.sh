#!/usr/bin/env bash
# Where the repository's built artefacts are: the one definition for the
# Makefile and every shell script. The Rust side (tests, benches, the lab) is
# integration/src/lab/paths.rs; integration/tests/paths_agree.rs checks that
# both give the same answers.
#
#   scripts/paths.sh NAME [BINARY]   print one path (NAME as below)
#   . scripts/paths.sh               define the flb_* functions in a script
#
#   target     cargo's target directory: $CARGO_TARGET_DIR, else <repo>/target
#   harness    the Go harness: $FERROLB_HARNESS, else <repo>/target/harness/k8s-harness
#   kubectl    kubectl of the lab's Kubernetes version, next to the harness
#   tools      Go-built tools (helm, actionlint): <repo>/target/tools
#   helm       $FERROLB_HELM, else <tools>/helm
#   profile B  cargo profile to take binary B from: $FERROLB_PROFILE, else
#              whichever of release and debug holds the newer B (debug if none)
#   bin B      <target>/<profile B>/B

flb_repo() { (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); }

flb_abs() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

flb_target() {
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then flb_abs "$CARGO_TARGET_DIR"; else echo "$(flb_repo)/target"; fi
}

flb_harness() {
  if [ -n "${FERROLB_HARNESS:-}" ]; then flb_abs "$FERROLB_HARNESS"; else echo "$(flb_repo)/target/harness/k8s-harness"; fi
}

flb_kubectl() { echo "$(dirname "$(flb_harness)")/kubectl"; }

flb_tools() { echo "$(flb_repo)/target/tools"; }

flb_helm() {
  if [ -n "${FERROLB_HELM:-}" ]; then flb_abs "$FERROLB_HELM"; else echo "$(flb_tools)/helm"; fi
}

flb_profile() {
  local bin=$1 target release debug
  if [ -n "${FERROLB_PROFILE:-}" ]; then echo "$FERROLB_PROFILE"; return; fi
  target=$(flb_target)
  release="$target/release/$bin"
  debug="$target/debug/$bin"
  if [ -e "$release" ] && { [ ! -e "$debug" ] || [ "$release" -nt "$debug" ]; }; then
    echo release
  else
    echo debug
  fi
}

flb_bin() { echo "$(flb_target)/$(flb_profile "$1")/$1"; }

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    target | harness | kubectl | tools | helm) "flb_$1" ;;
    profile | bin)
      [ $# -eq 2 ] || { echo "usage: $0 $1 BINARY" >&2; exit 2; }
      "flb_$1" "$2"
      ;;
    *)
      echo "usage: $0 target|harness|kubectl|tools|helm|profile BINARY|bin BINARY" >&2
      exit 2
      ;;
  esac
fi
