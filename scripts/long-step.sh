#!/usr/bin/env bash
# Runs one long build step so that whoever waits knows what it is and that it
# moves: a first line saying what it does and how long it takes, a progress
# line at least every 30 s (time so far, lines of output, the latest one), and
# the output kept in a log that is printed (its end) only when the step fails.
#
#   scripts/long-step.sh WHAT DURATION LOG -- COMMAND [ARGS...]
#
#   WHAT      what the step does ("building the Go lab harness")
#   DURATION  how long it takes ("first time: 15-30 min on 2 cores; later: seconds")
#   LOG       file for the command's output
# FERROLB_PROGRESS_EVERY (seconds, default 30) sets the interval.
set -euo pipefail
if [ $# -lt 5 ] || [ "$4" != "--" ]; then
  echo "usage: $0 WHAT DURATION LOG -- COMMAND [ARGS...]" >&2
  exit 2
fi
what=$1 duration=$2 log=$3
shift 4
every=${FERROLB_PROGRESS_EVERY:-30}

mkdir -p "$(dirname "$log")"
: >"$log"
echo "==> $what ($duration); output in $log"
start=$SECONDS
"$@" >"$log" 2>&1 &
pid=$!
# Stop the step with us (Ctrl-C, a killed make).
trap 'kill "$pid" 2>/dev/null || true' INT TERM HUP
last=$SECONDS
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  if [ $((SECONDS - last)) -ge "$every" ]; then
    last=$SECONDS
    lines=$(wc -l <"$log")
    latest=$(tail -n 1 "$log" | cut -c1-100)
    printf '    ... %s: %dm%02ds so far, %d lines of output; latest: %s\n' \
      "$what" $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) "$lines" "$latest"
  fi
done
status=0
wait "$pid" || status=$?
trap - INT TERM HUP
elapsed=$((SECONDS - start))
if [ "$status" -ne 0 ]; then
  echo "error: $what failed (exit $status) after ${elapsed}s; the end of $log:" >&2
  tail -n 40 "$log" >&2
  exit "$status"
fi
printf '    %s: done in %dm%02ds\n' "$what" $((elapsed / 60)) $((elapsed % 60))
