#!/usr/bin/env bash
# The topology the Helm chart deploys, run here as containers under podman
# from the images `scripts/images.sh` builds, and checked from the host
# through published ports, as an operator would:
#
#   nats-0..2   aegis-nats: a 3-node JetStream cluster with the accounts
#               and per-role users (subject permissions included) of
#               `aegis nats-config --format conf`, the block the Helm chart
#               renders from the same role table, and the chart's route
#               authentication (cluster `authorization`, user `route`, each
#               route URL carrying its password); passwords generated for
#               this run, read by the servers from an env file; read-only root; /data
#               and /var/run/nats host directories (`:U` gives them to uid
#               65532; podman 4.3 ignores a tmpfs's mode= and uid=)
#   init        aegis init --showcase --replicas 3 (the chart's post-install Job)
#   monitor     aegis api with its UI; tokens and session secret of this run
#   order-0/1, pricing-0, risk-0
#               aegis service ..., health listener on :8081
#
# Checks: NATS healthy, each node routed to both peers, a server without
# the route password refused, the password in no log or monitoring page;
# init done; the monitor's /ready; every instance
# registered (GET /api/instances, admin token); the UI served at /; every
# service's /readyz; the order leader's container killed -> another order
# instance ACTIVE and orders served (`aegis call` from the host), the killed
# one restarted -> back as STANDBY; the NATS node with the most clients
# killed -> every instance reconnected and still listed, orders served.
# Each check prints what it checked and how long it took; a failed one
# prints the logs of the containers concerned and ends the run. Containers,
# the network, the temporary directory (and the images, when this run built
# them anew) are removed at exit, also on failure or Ctrl-C.
#
# Containers resolve each other through --add-host entries on static IPs:
# podman's CNI networks here have no dnsname plugin.
#
#   scripts/podman-check.sh [--binary PATH] [--ui-dir DIR] [--keep-images]
#     --binary  the aegis binary (default target/debug/aegis, what the tests built)
#     --ui-dir  the UI's static export (default ui/out)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib/podman.sh
source scripts/lib/podman.sh

BINARY=target/debug/aegis
UI_DIR=ui/out
KEEP_IMAGES=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
    --ui-dir) UI_DIR="${2:?--ui-dir needs a directory}"; shift 2 ;;
    --keep-images) KEEP_IMAGES=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "podman-check: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -x "$BINARY" ] || { echo "podman-check: $BINARY is missing; build it (cargo build -p aegis) or pass --binary" >&2; exit 1; }
command -v curl >/dev/null && command -v python3 >/dev/null \
  || { echo "podman-check: curl and python3 are required" >&2; exit 1; }
ensure_podman

STARTED=$(date +%s%N)
RUN="ac$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
WORK="$(mktemp -d)"
NET="$RUN"
NEW_IMAGES=()

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
ok() { printf '  \033[32mPASS\033[0m %s\n' "$*"; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  say "cleanup"
  local ids
  ids="$(podman ps -aq --filter "label=aegis-check=$RUN" 2>/dev/null || true)"
  # shellcheck disable=SC2086
  [ -z "$ids" ] || podman rm -f -t 0 $ids >/dev/null 2>&1 || true
  podman network rm -f "$NET" >/dev/null 2>&1 || true
  if [ "$KEEP_IMAGES" -eq 0 ] && [ "${#NEW_IMAGES[@]}" -gt 0 ]; then
    podman rmi -f "${NEW_IMAGES[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  local left
  left="$(podman ps -aq --filter "label=aegis-check=$RUN" 2>/dev/null || true)"
  [ -z "$left" ] || { echo "podman-check: containers left: $left" >&2; status=1; }
  echo "  containers, network $NET$([ "$KEEP_IMAGES" -eq 0 ] && [ "${#NEW_IMAGES[@]}" -gt 0 ] && echo ", images ${NEW_IMAGES[*]}") and $WORK removed"
  say "podman-check: $([ "$status" -eq 0 ] && echo 'all checks passed' || echo FAILED) in $(($(ms_since "$STARTED") / 1000)) s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fail WHAT CONTAINER... — says what failed, prints the containers' logs, ends.
fail() {
  local what="$1"; shift
  printf '  \033[31mFAIL\033[0m %s\n' "$what"
  local c
  for c in "$@"; do
    printf '  --- logs of %s (last 40 lines) ---\n' "$c"
    podman logs --tail 40 "$RUN-$c" 2>&1 | sed 's/^/  | /' || true
  done
  exit 1
}

# Containers this script killed on purpose (not a failure when stopped).
KILLED=" "
# The first of CONTAINER... that stopped although nobody killed it.
stopped_one() {
  local c
  for c in "$@"; do
    case "$KILLED" in *" $c "*) continue ;; esac
    [ "$(podman inspect -f '{{.State.Status}}' "$RUN-$c" 2>/dev/null)" = running ] || { echo "$c"; return; }
  done
}

# check SECONDS WHAT "CONTAINERS" COMMAND... — polls COMMAND until it succeeds
# (PASS with the time taken) or the limit passes or one of CONTAINERS stops
# (FAIL with their logs).
check() {
  local limit="$1" what="$2" logs="$3"; shift 3
  local t0 polls=0 dead; t0=$(date +%s%N)
  until "$@" >/dev/null 2>&1; do
    # shellcheck disable=SC2086
    [ "$(ms_since "$t0")" -lt $((limit * 1000)) ] || fail "$what (not within $limit s)" $logs
    polls=$((polls + 1))
    if [ $((polls % 10)) -eq 0 ]; then
      # shellcheck disable=SC2086
      dead="$(stopped_one $logs)"
      # shellcheck disable=SC2086
      [ -z "$dead" ] || fail "$what ($dead stopped)" $logs
    fi
    sleep 0.1
  done
  ok "$what ($(ms_since "$t0") ms)"
}

secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32; }

# ---------------------------------------------------------------- images
say "images (scripts/images.sh from $BINARY)"
cp "$BINARY" "$WORK/aegis" # a concurrent rebuild cannot change it under us
AEGIS="$WORK/aegis"
VERSION="$("$AEGIS" --version | awk '{print $2}')"
IMAGE="aegis:$VERSION"
NATS_IMAGE="aegis-nats:2.15.1"
for img in "$IMAGE" "$NATS_IMAGE"; do
  podman image exists "$img" || NEW_IMAGES+=("$img")
done
t0=$(date +%s%N)
scripts/images.sh --binary "$AEGIS" --ui-dir "$UI_DIR" | sed 's/^/  /'
ok "built $IMAGE and $NATS_IMAGE ($(ms_since "$t0") ms)"

# ---------------------------------------------------------------- network
# A /24 of 10.89.0.0/16 that no other podman network uses.
for _ in 1 2 3 4 5 6 7 8; do
  SUBNET_PREFIX="10.89.$((RANDOM % 200 + 20))"
  podman network create --subnet "$SUBNET_PREFIX.0/24" --label "aegis-check=$RUN" "$NET" >/dev/null 2>&1 && break
  SUBNET_PREFIX=""
done
[ -n "$SUBNET_PREFIX" ] || { echo "podman-check: cannot create a podman network" >&2; exit 1; }
declare -A IP=(
  [nats-0]=$SUBNET_PREFIX.10 [nats-1]=$SUBNET_PREFIX.11 [nats-2]=$SUBNET_PREFIX.12
  [nats-intruder]=$SUBNET_PREFIX.19
  [init]=$SUBNET_PREFIX.20 [monitor]=$SUBNET_PREFIX.21
  [order-0]=$SUBNET_PREFIX.30 [order-1]=$SUBNET_PREFIX.31
  [pricing-0]=$SUBNET_PREFIX.32 [risk-0]=$SUBNET_PREFIX.33
)
HOSTS=()
for n in nats-0 nats-1 nats-2 monitor; do HOSTS+=(--add-host "$n:${IP[$n]}"); done
echo "  network $NET ($SUBNET_PREFIX.0/24)"

# ---------------------------------------------------------------- secrets
SYS_PASSWORD="$(secret)"
# The routes' password, as the chart's `route-password`: letters and digits.
ROUTE_PASSWORD="$(secret)"
ADMIN_TOKEN="$(secret)"
VIEWER_TOKEN="$(secret)"
# One NATS user per role, as in the chart: role -> user name.
declare -A USER_OF=(
  [order]=svc-order-service [pricing]=svc-pricing-service [risk]=svc-risk-service
  [monitor]=monitor [operator]=operator
)
declare -A PASSWORD_OF=()
for role in "${!USER_OF[@]}"; do PASSWORD_OF[$role]="$(secret)"; done
# The variable nats-server reads a user's password from (permissions.rs's
# password_variable: PASSWORD_ and the name in upper case, - as _).
password_var() { local u="${1^^}"; echo "PASSWORD_${u//[^A-Z0-9]/_}"; }
umask 077
# Secrets reach the containers through env files, never a command line.
{
  echo "$(password_var sys)=$SYS_PASSWORD"
  for role in "${!USER_OF[@]}"; do
    echo "$(password_var "${USER_OF[$role]}")=${PASSWORD_OF[$role]}"
  done
  # As the chart's StatefulSet: the password quoted for the config (an
  # env file keeps the quotes), and each route's URL logging in with it.
  echo "ROUTE_PASSWORD=\"$ROUTE_PASSWORD\""
  for i in 0 1 2; do echo "ROUTE_URL_$i=nats://route:$ROUTE_PASSWORD@nats-$i:6222"; done
} >"$WORK/nats-server.env"
# <role>.env: how an aegis process of that role connects (its own user and inboxes).
for role in "${!USER_OF[@]}"; do
  cat >"$WORK/$role.env" <<EOF
AEGIS_NATS_URL=nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222
AEGIS_NATS_USER=${USER_OF[$role]}
AEGIS_NATS_PASSWORD=${PASSWORD_OF[$role]}
AEGIS_NATS_INBOX_PREFIX=_INBOX_${USER_OF[$role]}
AEGIS_NATS_REPLICAS=3
AEGIS_STARTUP_TIMEOUT=60s
AEGIS_LOG=info
EOF
done
cat >>"$WORK/monitor.env" <<EOF
AEGIS_ADMIN_TOKEN=$ADMIN_TOKEN
AEGIS_VIEWER_TOKEN=$VIEWER_TOKEN
AEGIS_SESSION_SECRET=$(secret)$(secret)
AEGIS_NATS_SYSTEM_USER=sys
AEGIS_NATS_SYSTEM_PASSWORD=$SYS_PASSWORD
AEGIS_ENVIRONMENT=podman
EOF
umask 022

# ---------------------------------------------------------------- run helpers
# run NAME IMAGE [podman options...] -- [args...]: a detached container with
# the chart's securityContext (non-root, read-only root, no capabilities).
run() {
  local name="$1" image="$2"; shift 2
  local opts=()
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  podman run -d --name "$RUN-$name" --hostname "$name" --label "aegis-check=$RUN" \
    --network "$NET" --ip "${IP[$name]}" "${HOSTS[@]}" \
    --read-only --cap-drop ALL --security-opt no-new-privileges --user 65532:65532 \
    "${opts[@]}" "$image" "$@" >/dev/null
}
# The host port podman published for a container port.
port_of() { podman port "$RUN-$1" "$2" | head -n1 | sed 's/.*://'; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }
is_200() { [ "$(http_code "$@")" = 200 ]; }
# The monitor's /ready; the checks of a 503 answer are kept in
# not-ready.log (each distinct answer once) to say what it waited for.
monitor_ready() {
  local code why
  rm -f "$WORK/ready.json"
  code="$(curl -s -o "$WORK/ready.json" -w '%{http_code}' --max-time 2 "$API/ready" || true)"
  [ "$code" = 200 ] && return 0
  case "$code" in
    000) why="no answer within 2 s" ;;
    *) why="HTTP $code $(json 'd.get("details", d).get("checks", d)' <"$WORK/ready.json" 2>/dev/null || true)" ;;
  esac
  grep -qxF "$why" "$WORK/not-ready.log" 2>/dev/null || echo "$why" >>"$WORK/not-ready.log"
  return 1
}
# Prints what the monitor reported while not ready, and forgets it.
not_ready_report() {
  [ -s "$WORK/not-ready.log" ] && sed 's/^/  | not ready: /' "$WORK/not-ready.log"
  rm -f "$WORK/not-ready.log"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
api() { curl -sf --max-time 3 -H "Authorization: Bearer $ADMIN_TOKEN" "$API$1"; }

# ---------------------------------------------------------------- NATS
say "NATS x3 (JetStream cluster)"
for i in 0 1 2; do
  mkdir -p "$WORK/nats-$i/data" "$WORK/nats-$i/run"
  cat >"$WORK/nats-$i/nats-server.conf" <<EOF
server_name: nats-$i
listen: 0.0.0.0:4222
http: 0.0.0.0:8222
pid_file: /var/run/nats/nats.pid
jetstream {
  store_dir: /data
  max_memory_store: 256MB
  max_file_store: 1GB
}
include accounts.conf
lame_duck_grace_period: 1s
lame_duck_duration: 30s
cluster {
  name: aegis
  listen: 0.0.0.0:6222
  authorization {
    user: route
    password: \$ROUTE_PASSWORD
  }
  routes: [
    \$ROUTE_URL_0
    \$ROUTE_URL_1
    \$ROUTE_URL_2
  ]
}
EOF
  "$AEGIS" nats-config --format conf >"$WORK/nats-$i/accounts.conf"
  chmod 0644 "$WORK/nats-$i/nats-server.conf" "$WORK/nats-$i/accounts.conf"
  run "nats-$i" "$NATS_IMAGE" --env-file "$WORK/nats-server.env" \
    -v "$WORK/nats-$i:/etc/nats:ro" \
    -v "$WORK/nats-$i/data:/data:U" -v "$WORK/nats-$i/run:/var/run/nats:U" \
    -p 127.0.0.1::4222 -p 127.0.0.1::8222 \
    -- --config /etc/nats/nats-server.conf
done
NATS_HOST_URL="$(for i in 0 1 2; do printf 'nats://127.0.0.1:%s,' "$(port_of "nats-$i" 4222)"; done)"
NATS_HOST_URL="${NATS_HOST_URL%,}"
for i in 0 1 2; do
  mon="$(port_of "nats-$i" 8222)"
  check 60 "nats-$i /healthz 200 (JetStream ready, routes to its peers)" "nats-$i" \
    is_200 "http://127.0.0.1:$mon/healthz"
done
# Routes to both peers (by server name: pooled routes count one).
routed() { [ "$(curl -sf --max-time 2 "http://127.0.0.1:$1/routez" | json 'len({r.get("remote_name") for r in d.get("routes") or []})')" -ge 2 ]; }
for i in 0 1 2; do
  check 30 "nats-$i routed to both peers as user route" "nats-$i" routed "$(port_of "nats-$i" 8222)"
done

# A server that knows the cluster's addresses but not the route password.
mkdir -p "$WORK/nats-intruder"
cat >"$WORK/nats-intruder/nats-server.conf" <<EOF
server_name: nats-intruder
listen: 0.0.0.0:4222
cluster {
  name: aegis
  listen: 0.0.0.0:6222
  routes: [nats://route:wrong@nats-0:6222, nats://nats-1:6222]
}
EOF
chmod 0644 "$WORK/nats-intruder/nats-server.conf"
run nats-intruder "$NATS_IMAGE" -v "$WORK/nats-intruder:/etc/nats:ro" -- --config /etc/nats/nats-server.conf
refused() {
  local i
  podman logs "$RUN-nats-intruder" 2>&1 | grep -q "Authorization Violation" || return 1
  for i in 0 1; do
    ! curl -sf --max-time 2 "http://127.0.0.1:$(port_of "nats-$i" 8222)/routez" | grep -q nats-intruder || return 1
  done
}
check 15 "a server without the route password is refused (Authorization Violation) and routed by none" \
  "nats-intruder nats-0 nats-1" refused
podman rm -f -t 0 "$RUN-nats-intruder" >/dev/null
# Where the route password shows, if anywhere (a server's log, /varz, /routez).
route_password_shown() {
  local i page
  for i in 0 1 2; do
    podman logs "$RUN-nats-$i" 2>&1 | grep -qF "$ROUTE_PASSWORD" && { echo "the log of nats-$i"; return; }
    for page in varz routez; do
      curl -sf --max-time 2 "http://127.0.0.1:$(port_of "nats-$i" 8222)/$page" | grep -qF "$ROUTE_PASSWORD" \
        && { echo "/$page of nats-$i"; return; }
    done
  done
  return 0
}
shown="$(route_password_shown)"
# No logs with this failure: they may hold the password.
[ -z "$shown" ] || fail "the route password is shown in $shown"
ok "the route password is in no server log, /varz or /routez"

# ---------------------------------------------------------------- init
say "aegis init --showcase --replicas 3"
t0=$(date +%s%N)
podman run --name "$RUN-init" --hostname init --label "aegis-check=$RUN" \
  --network "$NET" --ip "${IP[init]}" "${HOSTS[@]}" \
  --read-only --cap-drop ALL --security-opt no-new-privileges --user 65532:65532 \
  --env-file "$WORK/operator.env" "$IMAGE" init --showcase --replicas 3 >"$WORK/init.log" 2>&1 \
  || { cat "$WORK/init.log" | sed 's/^/  | /'; fail "aegis init --showcase --replicas 3 exited non-zero" nats-0 nats-1 nats-2; }
sed 's/^/  | /' "$WORK/init.log"
ok "aegis init --showcase --replicas 3 created and checked every bucket and stream ($(ms_since "$t0") ms)"

# ---------------------------------------------------------------- monitor, services
say "monitor and services"
run monitor "$IMAGE" --env-file "$WORK/monitor.env" -p 127.0.0.1::8100 \
  -- api --bind 0.0.0.0 --port 8100 --ui-dir /usr/share/aegis/ui
API="http://127.0.0.1:$(port_of monitor 8100)"
INSTANCES=(order-0 order-1 pricing-0 risk-0)
for inst in "${INSTANCES[@]}"; do
  run "$inst" "$IMAGE" --env-file "$WORK/${inst%-*}.env" \
    -e "AEGIS_INSTANCE_ID=$inst" -e AEGIS_HEALTH_LISTEN=0.0.0.0:8081 -p 127.0.0.1::8081 \
    -- service "${inst%-*}"
done
echo "  monitor API on $API, NATS for the host on $NATS_HOST_URL"

check 60 "monitor /ready 200 (NATS connected, buckets present, views loaded)" monitor monitor_ready
not_ready_report || true
for inst in "${INSTANCES[@]}"; do
  check 60 "$inst /readyz 200 (connected, registered)" "$inst" \
    is_200 "http://127.0.0.1:$(port_of "$inst" 8081)/readyz"
done

# Instance ids the monitor lists, one per line, and their status.
listed() { api /api/instances | json '"\n".join(sorted(i["instanceId"] + " " + i["status"] for i in (d if isinstance(d, list) else d.get("instances", []))))'; }
all_listed() {
  local out inst; out="$(listed)" || return 1
  for inst in "$@"; do grep -q "^$inst " <<<"$out" || return 1; done
}
check 15 "GET /api/instances (admin token) lists ${INSTANCES[*]}" "monitor ${INSTANCES[*]}" \
  all_listed "${INSTANCES[@]}"
listed | sed 's/^/  | /'
unauthorized() { [ "$(http_code "$API/api/instances")" = 401 ]; }
check 5 "GET /api/instances without a token is refused (401)" monitor unauthorized

ui_served() {
  curl -sf --max-time 2 "$API/" -o "$WORK/index.html" && cmp -s "$WORK/index.html" "$UI_DIR/index.html"
}
check 10 "the UI page served at / (the image's /usr/share/aegis/ui/index.html, byte for byte)" monitor ui_served

# ---------------------------------------------------------------- failover: order leader
# The ACTIVE order instance with the highest epoch (a killed leader's record
# may still say ACTIVE until the monitor sees it gone).
leader() {
  api /api/instances/order-service | json 'max([i for i in d if i["status"]=="ACTIVE"], key=lambda i: i.get("epoch") or 0, default={}).get("instanceId", "")'
}
has_leader() { [ -n "$(leader)" ]; }
check 30 "order-service has an ACTIVE leader" "order-0 order-1" has_leader
LEADER="$(leader)"
echo "  leader: $LEADER"

ORDER_N=0
: >"$WORK/calls.log"
# One create_order with a new client order id, idempotent as it is by that
# id (the SDK asks again within the deadline when the leader answers that
# its store is briefly out); every attempt's output goes to calls.log, the
# last one's to call.out.
create_order() {
  ORDER_N=$((ORDER_N + 1))
  local rc=0
  AEGIS_NATS_USER=operator AEGIS_NATS_PASSWORD="${PASSWORD_OF[operator]}" AEGIS_NATS_INBOX_PREFIX=_INBOX_operator \
    "$AEGIS" call order-service create_order --active --idempotent --timeout-ms 3000 --nats-url "$NATS_HOST_URL" \
    "{\"symbol\":\"AAPL\",\"side\":\"BUY\",\"quantity\":10,\"client_order_id\":\"$RUN-$ORDER_N\"}" \
    >"$WORK/call.out" 2>&1 || rc=$?
  { echo "--- create_order $ORDER_N: exit $rc"; cat "$WORK/call.out"; } >>"$WORK/calls.log"
  return "$rc"
}
# Failed attempts since the mark, for the record.
calls_mark() { CALLS_FROM=$(($(wc -l <"$WORK/calls.log" 2>/dev/null || echo 0) + 1)); }
calls_failed() {
  local n
  n="$(tail -n +"$CALLS_FROM" "$WORK/calls.log" | grep -c '^--- .*exit [1-9]' || true)"
  # Only the failed attempts' own lines: the one that succeeded printed
  # the order, which is no failure.
  [ "$n" -eq 0 ] || { echo "  $n attempt(s) failed first:"; tail -n +"$CALLS_FROM" "$WORK/calls.log" |
    awk '/^--- /{failed = ($NF != "0"); next} failed' | sort | uniq -c | sed 's/^/  | /'; }
}
calls_mark
check 15 "create_order through the leader (aegis call from the host)" "$LEADER" create_order
grep -i 'served by' "$WORK/call.out" | sed 's/^/  | /' || true

say "failover: kill the order leader's container ($LEADER)"
KILLED+="$LEADER "
podman kill --signal KILL "$RUN-$LEADER" >/dev/null
OTHER="$([ "$LEADER" = order-0 ] && echo order-1 || echo order-0)"
new_leader() { [ "$(leader)" = "$OTHER" ]; }
check 15 "$OTHER became ACTIVE" "$OTHER monitor" new_leader
calls_mark
check 15 "create_order through the new leader" "$OTHER" create_order
calls_failed
grep -i 'served by' "$WORK/call.out" | sed 's/^/  | /' || true
served_by_other() { grep -q "$OTHER" "$WORK/call.out"; }
served_by_other || fail "create_order was not served by $OTHER: $(cat "$WORK/call.out")" "$OTHER"
ok "it was served by $OTHER"

# As Kubernetes would, start the killed instance again: it must rejoin as
# STANDBY, not take the leadership back.
podman start "$RUN-$LEADER" >/dev/null
KILLED="${KILLED/ $LEADER / }"
standby() { listed | grep -q "^$LEADER STANDBY"; }
check 60 "$LEADER restarted and rejoined as STANDBY" "$LEADER" standby
still_other() { [ "$(leader)" = "$OTHER" ]; }
still_other || fail "the leadership moved again after $LEADER came back" "$OTHER $LEADER"
ok "$OTHER is still the leader"

# ---------------------------------------------------------------- failover: NATS node
say "failover: kill a NATS node"
# The node with the most clients, so the kill moves the most connections.
busiest="" most=-1
for i in 0 1 2; do
  n="$(curl -sf --max-time 2 "http://127.0.0.1:$(port_of "nats-$i" 8222)/varz" | json 'd["connections"]')"
  if [ "$n" -gt "$most" ]; then busiest="nats-$i"; most="$n"; fi
done
# Client connections of the nodes still running (the monitor's system user
# included); all back when they add up to what the three had.
total=0
for i in 0 1 2; do
  total=$((total + $(curl -sf --max-time 2 "http://127.0.0.1:$(port_of "nats-$i" 8222)/varz" | json 'd["connections"]')))
done
echo "  $busiest has $most of $total client connections; killing it"
KILLED+="$busiest "
podman kill --signal KILL "$RUN-$busiest" >/dev/null
reconnected() {
  local sum=0 i n
  for i in 0 1 2; do
    [ "nats-$i" = "$busiest" ] && continue
    n="$(curl -sf --max-time 2 "http://127.0.0.1:$(port_of "nats-$i" 8222)/varz" | json 'd["connections"]')" || return 1
    sum=$((sum + n))
  done
  [ "$sum" -ge "$total" ]
}
check 30 "its $most clients reconnected to the other two nodes ($total connections there)" \
  "monitor ${INSTANCES[*]}" reconnected
for inst in "${INSTANCES[@]}"; do
  check 30 "$inst /readyz 200" "$inst" is_200 "http://127.0.0.1:$(port_of "$inst" 8081)/readyz"
done
check 30 "monitor /ready 200" monitor monitor_ready
not_ready_report || true
check 15 "every instance still listed" "monitor ${INSTANCES[*]}" all_listed "${INSTANCES[@]}"
listed | sed 's/^/  | /'
calls_mark
check 30 "create_order still served (two of three NATS nodes)" "order-0 order-1" create_order
grep -i 'served by' "$WORK/call.out" | sed 's/^/  | /' || true
calls_failed
echo "  order-service leader now: $(leader)"
