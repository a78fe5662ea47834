#!/usr/bin/env bash
# Runs every test of the project, as CI does: installs what is missing
# (nats-server into .tools/), checks formatting and lints, then runs the unit,
# integration and doc tests. Integration tests start their own nats-server
# processes (one per test, free ports, temporary directories).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
started=$SECONDS

step "bootstrap"
scripts/bootstrap.sh

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "tests (cargo test --workspace)"
cargo test --workspace --no-fail-fast

step "done in $((SECONDS - started)) s"
