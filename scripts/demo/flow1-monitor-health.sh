#!/usr/bin/env bash
# Flow 1 — monitor health. Against a running `aegis up`: kill the ACTIVE
# order-service instance and a pricing instance, and check what an operator
# sees through the monitor API: a STANDBY becomes ACTIVE, the killed
# instances go missing, then come back (the showcase restarts them).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

say "1. The showcase is healthy"
summary="$(api GET /api/instances/health/summary "" "$VIEWER_TOKEN")"
echo "  $summary"
[ "${summary%% *}" = 200 ] && ok "health summary answers 200" || bad "health summary: $summary"
total=$(echo "${summary#* }" | json 'd["total"]')
[ "$total" -ge 7 ] && ok "$total instances registered" || bad "expected at least 7 instances, got $total"

# The ACTIVE order instance with the highest epoch (a crashed leader's record
# stays ACTIVE until its TTL runs out; the new leader's epoch is higher).
leader_of() { api GET /api/instances/order-service "" "$VIEWER_TOKEN" | cut -d' ' -f2- \
  | json 'max([i for i in d if i["status"]=="ACTIVE"], key=lambda i: i.get("epoch") or 0, default={}).get("instanceId", "")'; }
instance_state() { api GET "/api/instances/$1/$2" "" "$VIEWER_TOKEN" | cut -d' ' -f1; }
old_leader="$(leader_of)"
[ -n "$old_leader" ] && ok "order-service leader is $old_leader" || bad "no ACTIVE order-service instance"

say "2. Kill the order-service leader ($old_leader) with SIGKILL"
"$AEGIS" chaos kill "$old_leader" --state-dir "$STATE"
new_leader_differs() { l="$(leader_of)"; [ -n "$l" ] && [ "$l" != "$old_leader" ]; }
wait_for 2 "a STANDBY became ACTIVE" new_leader_differs || true
echo "  new leader: $(leader_of)"
gone() { [ "$(instance_state order-service "$old_leader")" = 404 ]; }
wait_for 10 "$old_leader is missing from /api/instances (its registry TTL ran out)" gone || true
back() { [ "$(instance_state order-service "$old_leader")" = 200 ]; }
wait_for 30 "$old_leader is back (restarted by the showcase) as a STANDBY" back || true
role="$(api GET "/api/instances/order-service/$old_leader" "" "$VIEWER_TOKEN" | cut -d' ' -f2- | json 'd["status"]')"
[ "$role" = STANDBY ] && ok "$old_leader rejoined as STANDBY" || bad "$old_leader came back as $role"

say "3. Orders keep working through the new leader"
out="$("$AEGIS" call order-service create_order --active --nats-url "$NATS_URL" \
  "{\"symbol\":\"MSFT\",\"side\":\"BUY\",\"quantity\":5,\"client_order_id\":\"flow1-$(date +%s)\"}" 2>&1)" \
  && ok "create_order served: $(echo "$out" | grep 'served by')" || bad "create_order failed: $out"

say "4. Kill a load-balanced instance (pricing-1)"
"$AEGIS" chaos kill pricing-1 --state-dir "$STATE"
p_gone() { [ "$(instance_state pricing-service pricing-1)" = 404 ]; }
wait_for 10 "pricing-1 is missing" p_gone || true
p_back() { [ "$(instance_state pricing-service pricing-1)" = 200 ]; }
wait_for 30 "pricing-1 is back" p_back || true
events="$(api GET "/api/instances/order-service/$(leader_of)/events" "" "$VIEWER_TOKEN" | cut -d' ' -f2-)"
echo "$events" | grep -q '"elected"' && ok "the new leader's events show its election" || bad "no election event for the new leader"

finish "Flow 1 (monitor health)"
