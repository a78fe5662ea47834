#!/usr/bin/env bash
# Flow 1 — monitor health. Against a running `aegis up`: kill the ACTIVE
# order-service instance and a pricing instance, and check what an operator
# sees through the monitor API: a STANDBY becomes ACTIVE, the killed
# instances are shown down at once (UNHEALTHY, with the reason: its NATS
# connection closed, or a deposed leader's claim), then come back healthy
# (the showcase restarts them under the same id).
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
# "STATUS reason" of an instance as the API shows it; "missing" when not listed.
shown() { r="$(api GET "/api/instances/$1/$2" "" "$VIEWER_TOKEN")"
  [ "${r%% *}" = 200 ] && echo "${r#* }" | json 'd["status"] + " " + (d.get("statusReason") or "-")' || echo missing; }
down() { case "$(shown "$1" "$2")" in UNHEALTHY*|missing) true ;; *) false ;; esac; }
healthy() { case "$(shown "$1" "$2")" in ACTIVE*|STANDBY*) true ;; *) false ;; esac; }
old_leader="$(leader_of)"
[ -n "$old_leader" ] && ok "order-service leader is $old_leader" || bad "no ACTIVE order-service instance"

say "2. Kill the order-service leader ($old_leader) with SIGKILL"
"$AEGIS" chaos kill "$old_leader" --state-dir "$STATE"
new_leader_differs() { l="$(leader_of)"; [ -n "$l" ] && [ "$l" != "$old_leader" ]; }
wait_for 2 "a STANDBY became ACTIVE" new_leader_differs || true
echo "  new leader: $(leader_of)"
o_down() { down order-service "$old_leader"; }
wait_for 2 "$old_leader is shown down" o_down || true
echo "  shown as: $(shown order-service "$old_leader")"
o_back() { healthy order-service "$old_leader"; }
wait_for 30 "$old_leader is back (restarted by the showcase)" o_back || true
role="$(api GET "/api/instances/order-service/$old_leader" "" "$VIEWER_TOKEN" | cut -d' ' -f2- | json 'd["status"]')"
[ "$role" = STANDBY ] && ok "$old_leader rejoined as STANDBY" || bad "$old_leader came back as $role"

say "3. Orders keep working through the new leader"
out="$("$AEGIS" call order-service create_order --active --nats-url "$NATS_URL" \
  "{\"symbol\":\"MSFT\",\"side\":\"buy\",\"quantity\":5,\"client_order_id\":\"flow1-$(date +%s)\"}" 2>&1)" \
  && ok "create_order served: $(echo "$out" | grep 'served by')" || bad "create_order failed: $out"

say "4. Kill a load-balanced instance (pricing-1)"
"$AEGIS" chaos kill pricing-1 --state-dir "$STATE"
p_down() { down pricing-service pricing-1; }
wait_for 2 "pricing-1 is shown down" p_down || true
echo "  shown as: $(shown pricing-service pricing-1)"
p_back() { healthy pricing-service pricing-1; }
wait_for 30 "pricing-1 is back" p_back || true
events="$(api GET "/api/instances/order-service/$(leader_of)/events" "" "$VIEWER_TOKEN" | cut -d' ' -f2-)"
echo "$events" | grep -q '"elected"' && ok "the new leader's events show its election" || bad "no election event for the new leader"

finish "Flow 1 (monitor health)"
