#!/usr/bin/env bash
# Verifies the Helm chart offline (issue 13 item 4): renders deploy/helm/aegis
# with every value set under deploy/helm/test-values/, lints it, validates
# each manifest strictly against Kubernetes 1.29-1.33, runs the policy checks
# and the negative tests (scripts/deploy/check.py says what each does).
# Needs no cluster and no helm binary: installs helm-python-sdk and
# kubernetes-validate (pinned, scripts/deploy/requirements.txt) from PyPI into
# a virtualenv under the tools folder, once; a second run reuses it.
#
#   scripts/deploy-check.sh          (make test-deploy; a step of make test)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${AEGIS_TOOLS_DIR:-$ROOT/.tools}"
VENV="$TOOLS/deploy-venv"
REQS="$ROOT/scripts/deploy/requirements.txt"

say() { printf '\033[1mdeploy-check:\033[0m %s\n' "$*"; }

# The pinned nats-server parses the rendered server config.
"$ROOT/scripts/bootstrap.sh" >/dev/null

# The venv is current when it was built from this very requirements file.
if [ -x "$VENV/bin/python" ] && cmp -s "$REQS" "$VENV/requirements.txt"; then
  say "python tools present in $VENV"
else
  if [ "$(uname -m)" != "x86_64" ]; then
    echo "deploy-check: helm-python-sdk's wheel is for x86_64 Linux; on $(uname -m) render with a helm binary instead" >&2
    exit 1
  fi
  py="$(command -v python3 || true)"
  [ -n "$py" ] || { echo "deploy-check: python3 (3.10+, with venv) is required (see README prerequisites)" >&2; exit 1; }
  say "installing helm-python-sdk and kubernetes-validate (pinned) into $VENV"
  rm -rf "$VENV"
  "$py" -m venv "$VENV" || {
    echo "deploy-check: python3 -m venv failed; on Debian install python3-venv" >&2
    exit 1
  }
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQS"
  cp "$REQS" "$VENV/requirements.txt"
fi

nats_server="${AEGIS_NATS_SERVER:-}"
[ -n "$nats_server" ] || { [ -x "$TOOLS/bin/nats-server" ] && nats_server="$TOOLS/bin/nats-server"; } || true
[ -n "$nats_server" ] || nats_server="$(command -v nats-server || true)"

# No __pycache__ in the source tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" "$ROOT/scripts/deploy/check.py" ${nats_server:+--nats-server "$nats_server"}
