#!/usr/bin/env bash
# Load benchmark of the monitor API with wrk (Debian's `wrk` package):
#   1. GET /api/instances with 100 registered SDK instances, and
#   2. POST + DELETE /api/services (each connection creates a definition,
#      then deletes one it created; every create is an atomic KV create and
#      every delete a compare-and-set).
# Starts a private nats-server, the monitor (release build of the `serve`
# example) and 100 real SDK instances (the `fake_instances` example), all on
# loopback; everything stops on exit. Fails when any request errs or answers
# with anything but the expected status.
#
#   scripts/load-api.sh                      20 s per scenario, 2 threads, 32 connections
#   LOAD_DURATION=60s LOAD_CONNECTIONS=64 scripts/load-api.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TOOLS="${AEGIS_TOOLS_DIR:-$ROOT/.tools}"
DURATION="${LOAD_DURATION:-20s}"
THREADS="${LOAD_THREADS:-2}"
CONNECTIONS="${LOAD_CONNECTIONS:-32}"
INSTANCES="${LOAD_INSTANCES:-100}"

say() { printf '\033[1mload-api:\033[0m %s\n' "$*"; }

command -v wrk >/dev/null || { echo "load-api: wrk is missing: apt-get install -y wrk" >&2; exit 1; }
scripts/bootstrap.sh >/dev/null
NATS_BIN="${AEGIS_NATS_SERVER:-}"
[ -z "$NATS_BIN" ] && [ -x "$TOOLS/bin/nats-server" ] && NATS_BIN="$TOOLS/bin/nats-server"
[ -z "$NATS_BIN" ] && NATS_BIN="$(command -v nats-server)"

say "building the monitor and the instance population (release)"
cargo build -q --release -p aegis-monitor --example serve --example fake_instances

WORK="$(mktemp -d)"
# Processes stop newest first (instances and monitor before NATS), and the
# run fails if one is left behind.
source "$ROOT/scripts/lib/procs.sh"
cleanup() { stop_all; local s=$?; rm -rf "$WORK"; return "$s"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # url, what
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "load-api: $2 did not come up" >&2
  return 1
}

NATS_PORT="$(free_port)"
NATS_MON="$(free_port)"
start_bg nats "$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON" -sd "$WORK/js" >"$WORK/nats.log" 2>&1
wait_for "http://127.0.0.1:$NATS_MON/healthz" "nats-server"
NATS_URL="nats://127.0.0.1:$NATS_PORT"

API_PORT="$(free_port)"
TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
AEGIS_ADMIN_TOKEN="$TOKEN" AEGIS_NATS_URL="$NATS_URL" AEGIS_API_PORT="$API_PORT" \
  AEGIS_API_BIND=127.0.0.1 AEGIS_LOG="${AEGIS_LOG:-warn,aegis_monitor=warn}" \
  start_bg monitor env target/release/examples/serve >"$WORK/monitor.log" 2>&1
API="http://127.0.0.1:$API_PORT"
wait_for "$API/ready" "the monitor"

start_bg instances target/release/examples/fake_instances "$NATS_URL" "$INSTANCES" >"$WORK/instances.log" 2>&1
count=0
for _ in $(seq 1 600); do
  count="$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/api/instances" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
  [ "$count" -ge "$INSTANCES" ] && break
  sleep 0.1
done
[ "$count" -ge "$INSTANCES" ] || { echo "load-api: only $count of $INSTANCES instances registered" >&2; exit 1; }
bytes="$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/api/instances" | wc -c)"
say "$count instances registered; GET /api/instances answers $bytes bytes"

cat >"$WORK/count.lua" <<'LUA'
-- Counts answers other than the expected statuses (wrk only reports >= 400).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  unexpected = 0
end
function response(status, headers, body)
  if status ~= 200 then unexpected = unexpected + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("unexpected") end
  io.write(string.format("UNEXPECTED %d\n", n))
end
LUA

cat >"$WORK/crud.lua" <<'LUA'
-- Each thread creates definitions and deletes the ones whose create has
-- returned 201, so a DELETE never races its own POST.
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  token = args[1]
  created, seq, unexpected, posts, deletes = {}, 0, 0, 0, 0
end
function request()
  local auth = { ["Authorization"] = "Bearer " .. token }
  if #created > 0 then
    local name = table.remove(created, 1)
    return wrk.format("DELETE", "/api/services/" .. name, auth)
  end
  seq = seq + 1
  local name = string.format("load-t%d-%d", tid, seq)
  auth["Content-Type"] = "application/json"
  local body = string.format(
    '{"service_name":"%s","owner":"load","description":"load benchmark","version":"1.0.0"}', name)
  return wrk.format("POST", "/api/services", auth, body)
end
function response(status, headers, body)
  if status == 201 then
    posts = posts + 1
    table.insert(created, string.match(body, '"service_name":"([^"]+)"'))
  elseif status == 204 then
    deletes = deletes + 1
  else
    unexpected = unexpected + 1
  end
end
function done(summary, latency, requests)
  local u, p, d = 0, 0, 0
  for _, t in ipairs(threads) do
    u = u + t:get("unexpected"); p = p + t:get("posts"); d = d + t:get("deletes")
  end
  io.write(string.format("CREATED %d DELETED %d UNEXPECTED %d\n", p, d, u))
end
LUA

failed=0
run() { # name, lua, path
  say "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency  $1"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$2" "$API$3" -- "$TOKEN" | tee "$WORK/out.txt"
  if grep -Eq 'Socket errors|Non-2xx' "$WORK/out.txt" || ! grep -q 'UNEXPECTED 0$' "$WORK/out.txt"; then
    say "$1: ERRORS"; failed=1
  fi
}
run "GET /api/instances ($count instances)" "$WORK/count.lua" /api/instances
run "POST + DELETE /api/services" "$WORK/crud.lua" /api/services

left="$(curl -fsS -H "Authorization: Bearer $TOKEN" "$API/api/services" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
say "definitions left (created but not yet deleted when time ran out): $left"
if grep -q 'panicked' "$WORK/monitor.log"; then say "the monitor panicked"; failed=1; fi
say "machine: $(nproc) cores, $(uname -sr); nats-server $("$NATS_BIN" --version | awk '{print $2}')"
exit "$failed"
