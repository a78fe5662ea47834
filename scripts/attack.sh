#!/usr/bin/env bash
# The scripted attack on the bus of `aegis up` (issue 12): starts a
# single-node showcase in a temporary state directory, then tries each abuse
# as an outsider (no, guessed or another role's credentials) and as a wrong
# role (pricing-service's and the monitor's own credentials from the
# showcase's credentials file), printing each attempt with the NATS server's
# refusal, and finally shows that the operator's create_order still reaches
# the elected leader. It is the integration test crates/aegis/tests/attack.rs
# (also run by `make test`); this script only shows its output.
# docs/security.md records a run.
#
#   scripts/attack.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
"$ROOT/scripts/bootstrap.sh" >/dev/null  # nats-server; idempotent
cargo test -p aegis --test attack -- --nocapture --test-threads 1 2>&1 \
  | grep -v -E '^\s+(Compiling|Finished|Running|Blocking)|^running 1 test$|^$'
