#!/usr/bin/env bash
# Builds the two images the Helm chart runs, here, from a locally built
# binary and without any base image or registry:
#
#   aegis:<version>     deploy/images/Containerfile.runtime (FROM scratch: the
#                       binary, its shared libraries, NSS modules, passwd,
#                       CA certificates, the UI export; see rootfs.sh)
#   aegis-nats:2.15.1   deploy/images/Containerfile.nats (FROM scratch: the
#                       pinned static nats-server)
#
# <version> is what `aegis --version` says (the chart's appVersion).
# Installs podman and runc when missing and root (scripts/lib/podman.sh).
# `make images` builds a release binary and calls this; with a registry, the
# multi-stage deploy/images/Containerfile builds everything instead.
#
#   scripts/images.sh [--binary PATH] [--ui-dir DIR]
#     --binary   the aegis binary (default target/release/aegis)
#     --ui-dir   the UI's static export (default ui/out)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=lib/podman.sh
source scripts/lib/podman.sh

BINARY=target/release/aegis
UI_DIR=ui/out
while [ "$#" -gt 0 ]; do
  case "$1" in
    --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
    --ui-dir) UI_DIR="${2:?--ui-dir needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "images: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1mimages:\033[0m %s\n' "$*"; }

[ -x "$BINARY" ] || { echo "images: $BINARY is missing; build it (cargo build --release -p aegis) or pass --binary" >&2; exit 1; }
[ -f "$UI_DIR/index.html" ] || { echo "images: $UI_DIR/index.html is missing; build the UI (make ui) or pass --ui-dir" >&2; exit 1; }
scripts/bootstrap.sh >/dev/null
NATS_BIN="${AEGIS_NATS_SERVER:-.tools/bin/nats-server}"
[ -x "$NATS_BIN" ] || NATS_BIN="$(command -v nats-server)"
ensure_podman

version="$("$BINARY" --version | awk '{print $2}')"
nats_version="$("$NATS_BIN" --version | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')"
[ -n "$version" ] && [ -n "$nats_version" ] || { echo "images: cannot read the versions of $BINARY and $NATS_BIN" >&2; exit 1; }

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

# build FILE TAG CONTEXT — builds, and removes the image the tag named
# before (a rebuild would otherwise leave it dangling) unless a container
# still uses it.
build() {
  local old new
  old="$(podman image inspect --format '{{.Id}}' "$2" 2>/dev/null || true)"
  podman build --quiet --file "$1" --tag "$2" "$3" >/dev/null
  new="$(podman image inspect --format '{{.Id}}' "$2")"
  if [ -n "$old" ] && [ "$old" != "$new" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
}

say "aegis:$version from $BINARY and $UI_DIR"
deploy/images/rootfs.sh "$BINARY" "$UI_DIR" "$ctx/aegis/rootfs"
build deploy/images/Containerfile.runtime "aegis:$version" "$ctx/aegis"

say "aegis-nats:$nats_version from $NATS_BIN"
mkdir -p "$ctx/nats/rootfs/usr/local/bin" "$ctx/nats/rootfs/etc" "$ctx/nats/dirs/data" "$ctx/nats/dirs/run"
cp -L "$NATS_BIN" "$ctx/nats/rootfs/usr/local/bin/nats-server"
chmod 0755 "$ctx/nats/rootfs/usr/local/bin/nats-server"
cp "$ctx/aegis/rootfs/etc/passwd" "$ctx/aegis/rootfs/etc/group" "$ctx/nats/rootfs/etc/"
build deploy/images/Containerfile.nats "aegis-nats:$nats_version" "$ctx/nats"

# Each image must start: a missing library or loader shows here, not in a pod.
podman run --rm --read-only "aegis:$version" --version >/dev/null \
  || { echo "images: aegis:$version does not run" >&2; exit 1; }
podman run --rm --read-only "aegis-nats:$nats_version" --version >/dev/null \
  || { echo "images: aegis-nats:$nats_version does not run" >&2; exit 1; }
podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
  | grep -E "^localhost/(aegis:$version|aegis-nats:$nats_version) " | sed 's/^/  /'
