# Shared helpers of the demo flows: where the showcase is, how to call its
# API, and how to check and report what a flow shows. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="${AEGIS_STATE_DIR:-$ROOT/.aegis}"
API="${AEGIS_API:-http://127.0.0.1:8100}"
# The showcase writes the URLs of its NATS into the state dir while it runs
# (whatever its --base-port); the default ports otherwise.
if [ -z "${AEGIS_NATS_URL:-}" ] && [ -s "$STATE/nats-url" ]; then
  NATS_URL="$(cat "$STATE/nats-url")"
else
  NATS_URL="${AEGIS_NATS_URL:-nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224}"
fi
AEGIS="${AEGIS_BIN:-}"
if [ -z "$AEGIS" ]; then
  for candidate in "$ROOT/target/release/aegis" "$ROOT/target/debug/aegis" "$(command -v aegis || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then AEGIS="$candidate"; break; fi
  done
fi
[ -n "$AEGIS" ] || { echo "no aegis binary: run \`make up\` (it builds one) or set AEGIS_BIN" >&2; exit 2; }
[ -f "$STATE/credentials" ] || { echo "no running showcase: start it with \`make up\` (state dir $STATE)" >&2; exit 2; }
ADMIN_TOKEN="$(sed -n 's/^AEGIS_ADMIN_TOKEN=//p' "$STATE/credentials")"
VIEWER_TOKEN="$(sed -n 's/^AEGIS_VIEWER_TOKEN=//p' "$STATE/credentials")"
# `aegis call` / `status` connect to NATS as the showcase's operator (NATS refuses
# clients without credentials; see docs/security.md).
export AEGIS_CREDENTIALS="$STATE/credentials"
FAILED=0
STARTED=$(date +%s%N)

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
ok() { printf '  \033[32mPASS\033[0m %s\n' "$*"; }
bad() { printf '  \033[31mFAIL\033[0m %s\n' "$*"; FAILED=$((FAILED + 1)); }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# api METHOD PATH [BODY] [TOKEN] — prints "STATUS BODY"
api() {
  local method="$1" path="$2" body="${3:-}" token="${4:-$ADMIN_TOKEN}" out status
  out="$(mktemp)"
  if [ -n "$body" ]; then
    status=$(curl -s -o "$out" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/json' --data "$body" "$API$path")
  else
    status=$(curl -s -o "$out" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $token" "$API$path")
  fi
  printf '%s %s' "$status" "$(cat "$out")"
  rm -f "$out"
}

# json EXPR — evaluates a Python expression over the JSON on stdin as `d`
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# wait_for SECONDS DESCRIPTION COMMAND... — polls until COMMAND succeeds
wait_for() {
  local limit="$1" what="$2"; shift 2
  local start; start=$(date +%s%N)
  while ! "$@" >/dev/null 2>&1; do
    if [ "$(ms_since "$start")" -gt $((limit * 1000)) ]; then
      bad "$what (not within ${limit} s)"; return 1
    fi
    sleep 0.05
  done
  ok "$what ($(ms_since "$start") ms)"
}

finish() {
  say "$1: $([ "$FAILED" -eq 0 ] && echo 'all checks passed' || echo "$FAILED check(s) FAILED") in $(ms_since "$STARTED") ms"
  [ "$FAILED" -eq 0 ]
}
