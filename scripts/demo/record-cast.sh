#!/usr/bin/env bash
# Records docs/demo/showcase.cast: scripts/demo/cast.sh run by asciinema (the
# recorder from PyPI, installed into the tools folder once), without a
# terminal. Then checks that no secret of the run is in the cast: the value
# of every token, password and secret key in .aegis/credentials (monitor
# tokens, NATS passwords, the session key) is searched for, and a hit deletes
# the cast and fails.
#
# Needs the ports of `make up` free (4222-4224, 6222-6224, 8222-8224, 8100).
#
#   scripts/demo/record-cast.sh [--debug] [OUTPUT]   (default docs/demo/showcase.cast)
#     --debug  the debug build's `aegis up` instead of `make up` (no release build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export CAST_PROFILE=release
if [ "${1:-}" = --debug ]; then CAST_PROFILE=debug; shift; fi
OUT="${1:-docs/demo/showcase.cast}"
TOOLS="${AEGIS_TOOLS_DIR:-$ROOT/.tools}"
VENV="$TOOLS/asciinema-venv"
ASCIINEMA_VERSION=2.4.0
if ! "$VENV/bin/asciinema" --version 2>/dev/null | grep -qx "asciinema $ASCIINEMA_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "asciinema==$ASCIINEMA_VERSION"
fi
# The binary and the UI first, so the cast shows the showcase starting, not
# compiling.
make --no-print-directory ui/out/index.html >/dev/null
if [ "$CAST_PROFILE" = release ]; then cargo build --release -p aegis --quiet; else cargo build -p aegis --quiet; fi

tmp="$OUT.tmp"
ok="$tmp.ok"
rm -f "$tmp" "$ok"
# asciinema exits 0 whatever its command does: the command leaves a mark
# when it succeeded, and a cast without one is refused.
"$VENV/bin/asciinema" rec --quiet --overwrite --cols 132 --rows 36 --idle-time-limit 2 \
  --title "Aegis: make up, aegis status, an order flow across a chaos kill, demo flows 1 and 2" \
  --command "scripts/demo/cast.sh && touch '$ok'" "$tmp" </dev/null
if [ ! -e "$ok" ]; then
  echo "record-cast: scripts/demo/cast.sh failed; its output is in $tmp (no cast written)" >&2
  exit 1
fi
rm -f "$ok"

# No secret of this run may be in the cast.
leaks=0
while IFS='=' read -r key value; do
  # The secrets: tokens, passwords, the session key (user names and the
  # inbox prefix are not secret, and appear in what the demo shows).
  case "$key" in *TOKEN*|*PASSWORD*|*SECRET*) ;; *) continue ;; esac
  [ -n "$value" ] || continue
  if grep -qF -- "$value" "$tmp"; then
    echo "record-cast: the value of $key is in the cast" >&2
    leaks=$((leaks + 1))
  fi
done <.aegis/credentials
if [ "$leaks" -ne 0 ]; then rm -f "$tmp"; exit 1; fi
mv "$tmp" "$OUT"
secs="$(python3 -c 'import json,sys; print(round(json.loads(open(sys.argv[1]).readlines()[-1])[0]))' "$OUT")"
echo "record-cast: $OUT written ($secs s, no value of .aegis/credentials in it)"
