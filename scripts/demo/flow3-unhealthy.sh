#!/usr/bin/env bash
# Flow 3 — unhealthy, not dead. Against a running `aegis up`: make the
# order-service leader unhealthy with `aegis chaos unhealthy` (an operator
# drill on its control subject): a STANDBY becomes ACTIVE within 1 s while
# an order flow keeps working without a failed call; make a pricing
# instance unhealthy: calls stop going to it, and the monitor and
# `aegis status` say why and since when; restore both.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$ROOT/scripts/lib/procs.sh"
WORK="$(mktemp -d)"
trap 'stop_all; rm -rf "$WORK"' EXIT

instances() { api GET "/api/instances/$1" "" "$VIEWER_TOKEN" | cut -d' ' -f2-; }
leader_of() { instances order-service | json 'next((i["instanceId"] for i in d if i["status"]=="ACTIVE"), "")'; }
field() { api GET "/api/instances/$1/$2" "" "$VIEWER_TOKEN" | cut -d' ' -f2- | json "d.get('$3') or ''"; }

# A stream of orders, one `aegis call` after another, each line "ok" or
# "fail <error>", until $WORK/stop exists.
order_flow() {
  local n=0 out
  while [ ! -f "$WORK/stop" ]; do
    n=$((n + 1))
    if out="$("$AEGIS" call order-service create_order --active --nats-url "$NATS_URL" \
      "{\"symbol\":\"AAPL\",\"side\":\"buy\",\"quantity\":1,\"client_order_id\":\"flow3-$$-$n\"}" 2>&1)"; then
      echo "ok $(echo "$out" | sed -n 's/^served by //p')" >>"$WORK/orders"
    else
      echo "fail $(echo "$out" | tail -1)" >>"$WORK/orders"
    fi
  done
}

say "1. The showcase is healthy"
old_leader="$(leader_of)"
[ -n "$old_leader" ] && ok "order-service leader is $old_leader" || bad "no ACTIVE order-service instance"
standbys=$(instances order-service | json 'sum(1 for i in d if i["status"]=="STANDBY")')
[ "$standbys" -ge 1 ] && ok "$standbys healthy STANDBY instance(s) to take over" || bad "no STANDBY order-service instance"

say "2. An order flow runs while the leader ($old_leader) is made unhealthy"
start_bg order-flow order_flow
wait_for 10 "orders are flowing" test -s "$WORK/orders" || true
"$AEGIS" chaos unhealthy order-service --nats-url "$NATS_URL" | sed 's/^/  /'
moved() { l="$(leader_of)"; [ -n "$l" ] && [ "$l" != "$old_leader" ]; }
wait_for 1 "a STANDBY became ACTIVE in the monitor" moved || true
new_leader="$(leader_of)"
echo "  new leader: $new_leader"
reason="$(field order-service "$old_leader" statusReason)"
[ "$reason" = operator ] && ok "$old_leader is shown UNHEALTHY, reason: operator, since $(field order-service "$old_leader" statusSince)" \
  || bad "$old_leader shows reason '$reason' (status $(field order-service "$old_leader" status))"
sleep 2 # orders keep flowing through the new leader
touch "$WORK/stop"
flow_done() { ! proc_alive "${PROC_PIDS[0]}"; }
wait_for 15 "the order flow stopped" flow_done || true
total=$(wc -l <"$WORK/orders"); failed=$(grep -c '^fail' "$WORK/orders" || true)
by_new=$(grep -c "^ok $new_leader\$" "$WORK/orders" || true)
[ "$failed" -eq 0 ] && ok "$total orders, 0 failed ($by_new served by $new_leader)" \
  || bad "$failed of $total orders failed: $(grep -m3 '^fail' "$WORK/orders" | tr '\n' ' ')"
[ "$by_new" -ge 1 ] && ok "the new leader served orders" || bad "no order reached $new_leader"

say "3. Make pricing-1 unhealthy: calls stop going to it"
"$AEGIS" chaos unhealthy pricing-1 --for 5m --nats-url "$NATS_URL" | sed 's/^/  /'
p_out() { [ "$(field pricing-service pricing-1 statusReason)" = operator ]; }
wait_for 2 "pricing-1 is shown UNHEALTHY, reason: operator" p_out || true
echo "  $("$AEGIS" status --nats-url "$NATS_URL" | grep -E "^SERVICE|$old_leader|pricing-1")" | sed '2,$s/^/  /'
# Each `aegis call` is a fresh process whose round-robin starts at a random
# selectable instance: about half of 20 would reach pricing-1 were it offered.
to_sick=0
for i in $(seq 1 20); do
  served="$("$AEGIS" call pricing-service get_price '{"symbol":"AAPL"}' --nats-url "$NATS_URL" 2>&1 | sed -n 's/^served by //p')"
  [ "$served" = pricing-1 ] && to_sick=$((to_sick + 1))
done
[ "$to_sick" -eq 0 ] && ok "20 get_price calls, none served by pricing-1" || bad "$to_sick of 20 calls went to the unhealthy pricing-1"

say "4. Restore both"
"$AEGIS" chaos healthy "$old_leader" --nats-url "$NATS_URL" | sed 's/^/  /'
"$AEGIS" chaos healthy pricing-1 --nats-url "$NATS_URL" | sed 's/^/  /'
o_back() { [ "$(field order-service "$old_leader" status)" = STANDBY ] && [ -z "$(field order-service "$old_leader" statusReason)" ]; }
wait_for 3 "$old_leader is a healthy STANDBY (leadership stays with $new_leader)" o_back || true
[ "$(leader_of)" = "$new_leader" ] && ok "$new_leader still leads" || bad "the leader is now $(leader_of)"
p_back() { [ "$(field pricing-service pricing-1 status)" = ACTIVE ]; }
wait_for 3 "pricing-1 is ACTIVE again" p_back || true
back=0
for i in $(seq 1 20); do
  served="$("$AEGIS" call pricing-service get_price '{"symbol":"AAPL"}' --nats-url "$NATS_URL" 2>&1 | sed -n 's/^served by //p')"
  [ "$served" = pricing-1 ] && back=$((back + 1))
done
[ "$back" -ge 1 ] && ok "pricing-1 serves again: $back of 20 get_price calls" || bad "no call reached pricing-1 after it recovered"

finish "Flow 3 (unhealthy)"
