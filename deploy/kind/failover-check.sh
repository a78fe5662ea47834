#!/usr/bin/env bash
# The failover check on a cluster where deploy/kind/up.sh installed Aegis
# (CI runs it after up.sh): finds the ACTIVE order-service instance through
# the monitor API, places an order through it, deletes the leader's pod as
# a node failure would (`--grace-period=0 --force`: no graceful hand-over),
# then waits until another pod is ACTIVE and places an order that the new
# leader serves. Exits non-zero, with the pods and logs, when any step fails.
#
# Reaches the monitor and NATS through kubectl port-forwards, and calls with
# the `aegis` binary as the operator user (password from the release's
# credentials Secret, never printed).
#
#   deploy/kind/failover-check.sh [--name CLUSTER] [--namespace NS] [--release NAME] [--aegis PATH]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CLUSTER=aegis
NAMESPACE=trading
RELEASE=aegis
AEGIS=target/release/aegis
while [ "$#" -gt 0 ]; do
  case "$1" in
    --name) CLUSTER="${2:?--name needs a cluster name}"; shift 2 ;;
    --namespace) NAMESPACE="${2:?--namespace needs a namespace}"; shift 2 ;;
    --release) RELEASE="${2:?--release needs a release name}"; shift 2 ;;
    --aegis) AEGIS="${2:?--aegis needs a path}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "failover-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in kubectl curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "failover-check: $tool is required" >&2; exit 1; }
done
[ -x "$AEGIS" ] || { echo "failover-check: $AEGIS is missing (make images builds it) or pass --aegis" >&2; exit 1; }

K=(kubectl --context "kind-$CLUSTER" -n "$NAMESPACE")
FULLNAME="$RELEASE"
[[ "$RELEASE" == *aegis* ]] || FULLNAME="$RELEASE-aegis"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  local status=$?
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

say() { printf '\n\033[1mfailover-check:\033[0m %s\n' "$*"; }
fail() {
  printf '  FAIL %s\n' "$1"
  "${K[@]}" get pods -o wide || true
  "${K[@]}" logs -l app.kubernetes.io/component=order --tail 30 --prefix || true
  exit 1
}
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
# until_ok SECONDS WHAT COMMAND... — polls COMMAND every 200 ms.
until_ok() {
  local limit="$1" what="$2" t0; shift 2; t0=$(date +%s%N)
  until "$@" >/dev/null 2>&1; do
    [ "$(ms_since "$t0")" -lt $((limit * 1000)) ] || fail "$what (not within $limit s)"
    sleep 0.2
  done
  printf '  PASS %s (%s ms)\n' "$what" "$(ms_since "$t0")"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secret_key() { "${K[@]}" get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }

# ------------------------------------------------------------ access
API_PORT="$(free_port)"
NATS_PORT="$(free_port)"
"${K[@]}" port-forward "svc/$FULLNAME-monitor" "$API_PORT:80" >"$WORK/pf-api.log" 2>&1 &
PIDS+=($!)
"${K[@]}" port-forward "svc/$FULLNAME-nats" "$NATS_PORT:4222" >"$WORK/pf-nats.log" 2>&1 &
PIDS+=($!)
API="http://127.0.0.1:$API_PORT"
ADMIN_TOKEN="$(secret_key "$FULLNAME-monitor" admin-token)"
OPERATOR_PASSWORD="$(secret_key "$FULLNAME-nats-credentials" operator-password)"
until_ok 30 "port-forward to the monitor answers /ready" curl -sf --max-time 2 "$API/ready"

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# The ACTIVE order instance with the highest epoch (a deleted leader's
# record may say ACTIVE until it expires).
leader() {
  curl -sf --max-time 3 -H "Authorization: Bearer $ADMIN_TOKEN" "$API/api/instances/order-service" \
    | json 'max([i for i in d if i["status"]=="ACTIVE"], key=lambda i: i.get("epoch") or 0, default={}).get("instanceId", "")'
}
has_leader() { [ -n "$(leader)" ]; }
N=0
# One create_order through the ACTIVE leader; the answer in call.out.
create_order() {
  N=$((N + 1))
  AEGIS_NATS_USER=operator AEGIS_NATS_PASSWORD="$OPERATOR_PASSWORD" AEGIS_NATS_INBOX_PREFIX=_INBOX_operator \
    "$AEGIS" call order-service create_order --active --timeout-ms 3000 \
    --nats-url "nats://127.0.0.1:$NATS_PORT" \
    "{\"symbol\":\"AAPL\",\"side\":\"buy\",\"quantity\":10,\"client_order_id\":\"kind-$$-$N\"}" \
    >"$WORK/call.out" 2>&1
}

# ------------------------------------------------------------ before
say "order-service before the failure"
until_ok 60 "order-service has an ACTIVE leader" has_leader
LEADER="$(leader)"
echo "  leader: $LEADER (a pod of Deployment $FULLNAME-order)"
"${K[@]}" get pod "$LEADER" >/dev/null || fail "the leader $LEADER is not a pod of namespace $NAMESPACE"
until_ok 30 "create_order served" create_order
grep -i 'served by' "$WORK/call.out" | sed 's/^/  | /' || true

# ------------------------------------------------------------ failure
say "deleting the leader's pod $LEADER (no grace period)"
"${K[@]}" delete pod "$LEADER" --grace-period=0 --force --wait=false >/dev/null 2>&1
new_leader() { local l; l="$(leader)"; [ -n "$l" ] && [ "$l" != "$LEADER" ]; }
until_ok 60 "another order instance became ACTIVE" new_leader
NEW="$(leader)"
echo "  new leader: $NEW"
until_ok 30 "create_order served by the new leader" create_order
grep -q "$NEW" "$WORK/call.out" || fail "create_order was not served by $NEW: $(cat "$WORK/call.out")"
grep -i 'served by' "$WORK/call.out" | sed 's/^/  | /' || true

say "waiting for the Deployment to replace the deleted pod"
"${K[@]}" rollout status "deployment/$FULLNAME-order" --timeout=180s
say "all checks passed"
