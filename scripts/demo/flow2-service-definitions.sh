#!/usr/bin/env bash
# Flow 2 — CRUD of service definitions through the management API of a
# running `aegis up`: create, read, update with optimistic concurrency,
# history, validation, roles, delete.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NAME="demo-flow2-$(date +%s)"

expect() { # expect STATUS "RESPONSE" DESCRIPTION
  if [ "${2%% *}" = "$1" ]; then ok "$3 → $1"; else bad "$3: expected $1, got ${2:0:200}"; fi
}

say "1. Create $NAME"
r="$(api POST /api/services "{\"service_name\":\"$NAME\",\"owner\":\"trading-desk\",\"description\":\"Flow 2 demo\",\"version\":\"1.0.0\"}")"
expect 201 "$r" "POST /api/services"
echo "  ${r#* }"
expect 409 "$(api POST /api/services "{\"service_name\":\"$NAME\",\"owner\":\"x\",\"description\":\"y\",\"version\":\"1.0.0\"}")" "creating it again"

say "2. Read it back"
r="$(api GET "/api/services/$NAME" "" "$VIEWER_TOKEN")"
expect 200 "$r" "GET as viewer"
rev="$(api GET "/api/services/$NAME/revision" | cut -d' ' -f2- | json 'd["revision"]')"
ok "revision $rev"

say "3. Update with the current revision, then with a stale one"
r="$(api PUT "/api/services/$NAME" "{\"version\":\"1.1.0\",\"revision\":$rev}")"
expect 200 "$r" "PUT with revision $rev"
echo "$r" | grep -q '"1.1.0"' && ok "version is 1.1.0" || bad "version not updated"
expect 409 "$(api PUT "/api/services/$NAME" "{\"owner\":\"someone-else\",\"revision\":$rev}")" "PUT with the stale revision $rev"
expect 400 "$(api PUT "/api/services/$NAME" '{}')" "PUT with nothing to change"

say "4. Validation and roles"
expect 422 "$(api POST /api/services '{"service_name":"Bad--Name","owner":"x","description":"y","version":"01.0.0"}')" "invalid name and version"
expect 403 "$(api POST /api/services "{\"service_name\":\"$NAME-v\",\"owner\":\"x\",\"description\":\"y\",\"version\":\"1.0.0\"}" "$VIEWER_TOKEN")" "a viewer cannot write"
expect 401 "$(api GET /api/services "" "not-a-token")" "a wrong token"

say "5. History and delete"
r="$(api GET "/api/services/$NAME/history")"
expect 200 "$r" "GET history"
n=$(echo "${r#* }" | json 'len(d)')
[ "$n" -ge 2 ] && ok "history has $n entries (create, update)" || bad "history has $n entries"
expect 204 "$(api DELETE "/api/services/$NAME")" "DELETE"
expect 404 "$(api GET "/api/services/$NAME")" "GET after delete"

finish "Flow 2 (service definitions)"
