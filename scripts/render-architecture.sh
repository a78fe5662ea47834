#!/usr/bin/env bash
# Renders the Mermaid diagram of docs/architecture.md (its first ```mermaid
# block, the one source) to docs/architecture.svg: plain SVG text, no HTML
# inside (htmlLabels off), so viewers other than browsers show it too.
# Installs @mermaid-js/mermaid-cli (pinned) into the tools folder once, and
# drives the system's chromium (no browser download).
#
#   scripts/render-architecture.sh [--png FILE]   (also a PNG, to look at)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${AEGIS_TOOLS_DIR:-$ROOT/.tools}/mermaid-cli"
MMDC_VERSION=12.2.0
PNG=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --png) PNG="${2:?--png needs a file}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "render-architecture: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
[ -n "$browser" ] || { echo "render-architecture: chromium is required (Debian: apt-get install chromium)" >&2; exit 1; }
command -v npm >/dev/null || { echo "render-architecture: npm is required" >&2; exit 1; }
if [ ! -x "$TOOLS/node_modules/.bin/mmdc" ] || ! grep -q "\"version\": \"$MMDC_VERSION\"" "$TOOLS/node_modules/@mermaid-js/mermaid-cli/package.json"; then
  mkdir -p "$TOOLS"
  (cd "$TOOLS" && PUPPETEER_SKIP_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error "@mermaid-js/mermaid-cli@$MMDC_VERSION")
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The first mermaid block of the document, without its fences.
awk '/^```mermaid$/ {on=1; next} on && /^```$/ {exit} on {print}' "$ROOT/docs/architecture.md" >"$work/diagram.mmd"
[ -s "$work/diagram.mmd" ] || { echo "render-architecture: no \`\`\`mermaid block in docs/architecture.md" >&2; exit 1; }
printf '{"executablePath": "%s", "args": ["--no-sandbox", "--disable-gpu"]}\n' "$browser" >"$work/puppeteer.json"
mmdc="$TOOLS/node_modules/.bin/mmdc"
"$mmdc" -q -p "$work/puppeteer.json" -i "$work/diagram.mmd" -o "$ROOT/docs/architecture.svg" -b white
if grep -q foreignObject "$ROOT/docs/architecture.svg"; then
  echo "render-architecture: the SVG holds HTML labels; keep \"htmlLabels\": false in the diagram's init line" >&2
  exit 1
fi
[ -z "$PNG" ] || "$mmdc" -q -p "$work/puppeteer.json" -i "$work/diagram.mmd" -o "$PNG" -b white -s 1.5
echo "docs/architecture.svg written"
