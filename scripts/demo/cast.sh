#!/usr/bin/env bash
# What docs/demo/showcase.cast shows, run by scripts/demo/record-cast.sh
# under `asciinema rec`: `make up` (in the background; its summary is shown
# once it is up), `aegis status`, `aegis traffic` in the background across
# `aegis chaos kill order-service`, the showcase back to 7 instances, Flow 1
# and Flow 2 of scripts/demo/, then Ctrl-C to `aegis up` and what it prints
# while stopping.
#
# Prints no secret by construction: every command shown reads the tokens and
# passwords from .aegis/credentials itself, nothing here echoes a variable
# holding one, and record-cast.sh checks the finished cast against every
# value of that file.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# CAST_PROFILE=debug (record-cast.sh --debug) runs the debug build's
# `aegis up` directly instead of `make up`, when no release build is at hand.
PROFILE="${CAST_PROFILE:-release}"
export PATH="$ROOT/target/$PROFILE:$PATH"
if [ "$PROFILE" = release ]; then
  UP_CMD=(make up)
  UP_SHOWN="make up"
else
  UP_CMD=("target/$PROFILE/aegis" up --ui-dir ui/out)
  UP_SHOWN="target/$PROFILE/aegis up --ui-dir ui/out   # what make up runs, from the $PROFILE build"
fi
LOG="$(mktemp)"
UP_PID=""
stop_up() {
  [ -n "$UP_PID" ] || return 0
  # Ctrl-C as a terminal sends it: SIGINT to the process group of `make up`
  # (its own group, made by setsid below).
  kill -INT -- "-$UP_PID" 2>/dev/null || true
  wait "$UP_PID" 2>/dev/null || true
  UP_PID=""
}
trap 'stop_up; rm -f "$LOG"' EXIT

# A prompt and the command, as if typed; then the command runs.
show() { printf '\n\033[1;32m$\033[0m %s\n' "$*"; sleep 0.6; }
run() { show "$*"; "$@"; }
pause() { sleep "${1:-1.5}"; }

show "$UP_SHOWN"
setsid "${UP_CMD[@]}" >"$LOG" 2>&1 &
UP_PID=$!
# The summary once it is complete (the line that ends it), or the log when
# `make up` ended early.
until grep -q '^Ctrl-C stops everything' "$LOG"; do
  kill -0 "$UP_PID" 2>/dev/null || { cat "$LOG"; echo "make up ended early" >&2; exit 1; }
  sleep 0.5
done
grep -v '^ *\(Compiling\|Finished\|Running\)' "$LOG" | sed '/^Ctrl-C stops everything/q'
pause 3

run aegis status
pause 3

leader="$(aegis status | awk '$1 == "order-service" && /leader of/ {print $2}')"
# An order flow in the background, across the kill: its lines show what the
# failover cost, and its end whether an acknowledged order was lost.
show "aegis traffic --rate 20 --duration 8s &   # orders at 20/s, a line a second"
aegis traffic --rate 20 --duration 8s &
TRAFFIC_PID=$!
sleep 3.2
run aegis chaos kill order-service
wait "$TRAFFIC_PID" || true
run aegis status
pause 2
# The showcase restarts the killed instance after 5 s; Flow 1 starts from
# all 7 with the old leader back as a STANDBY.
show "# $leader is restarted by the showcase and rejoins as STANDBY"
until aegis status 2>/dev/null | grep -qE "^order-service +$leader +STANDBY "; do sleep 0.5; done
run aegis status
pause 3

# A flow's failed check is part of the record, not the end of it.
run scripts/demo/flow1-monitor-health.sh || true
pause 3
run scripts/demo/flow2-service-definitions.sh || true
pause 3

show "^C    # Ctrl-C: services, then the monitor, then NATS"
lines_before=$(wc -l <"$LOG")
stop_up
tail -n +"$((lines_before + 1))" "$LOG" | grep -v '^make: \*\*\*' || true
