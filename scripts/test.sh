#!/usr/bin/env bash
# Runs every test of the project, as CI does: installs what is missing
# (nats-server into .tools/, the UI's npm packages, Debian's chromium for the
# browser tests), checks formatting, lints and the API docs' links, runs the UI's lint, type check,
# component tests and build, then the Helm chart's offline checks (render,
# validate, policies), then the Rust unit, integration and doc tests,
# then the UI's browser tests against the `aegis` binary the Rust tests
# just built, and last the podman run of the topology from images of that
# binary (scripts/podman-check.sh; installs podman when missing). Integration and browser tests start their own nats-server
# processes (free ports, temporary directories).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export NEXT_TELEMETRY_DISABLED=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
started=$SECONDS
timed() {
  local name="$1" t0=$SECONDS rc=0
  shift
  # `|| rc=$?` keeps the step's status: under `set -e` inside an `||` list a
  # failing command would otherwise be ignored and the printf's 0 returned.
  "$@" || rc=$?
  printf '   (%s: %d s)\n' "$name" "$((SECONDS - t0))"
  return "$rc"
}

# A fresh clone builds everything once: incremental artifacts would only
# add to the disk it takes. Cargo may rebuild the workspace's own crates
# when this setting differs from the last build's, so set
# CARGO_INCREMENTAL=1 to keep incremental builds while working locally.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Free disk where the build, the tests' temporary directories and podman's
# images go (a full disk fails tests in ways that look like their own
# faults), at the start and, whatever happens, at the end.
disk() {
  local dir avail seen=" "
  for dir in "$ROOT" "${TMPDIR:-/tmp}" \
    "$(podman info --format '{{.Store.GraphRoot}}' 2>/dev/null || true)"; do
    [ -n "$dir" ] && [ -d "$dir" ] || continue
    avail=$(df -Pk "$dir" 2>/dev/null | awk 'NR==2 {print $4}') || true
    [ -n "$avail" ] || continue
    # One line per filesystem.
    case "$seen" in *" $(stat -c %d "$dir") "*) continue ;; esac
    seen="$seen$(stat -c %d "$dir") "
    printf '   free disk at %s: %d MiB\n' "$dir" "$((avail / 1024))"
    if [ "$avail" -lt $((6 * 1024 * 1024)) ]; then
      echo "   warning: under 6 GiB free at $dir; the build, the tests' NATS stores or the images may run out" >&2
    fi
  done
}
trap 'rc=$?; disk; [ -d target ] && printf "   target dir: %s\n" "$(du -sh target 2>/dev/null | cut -f1)"; exit $rc' EXIT

step "bootstrap"
disk
scripts/bootstrap.sh --ui --browser

step "format (cargo fmt --check)"
cargo fmt --all -- --check

step "lints (cargo clippy -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

step "docs (cargo doc: a broken or private link in the API docs fails)"
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D rustdoc::broken_intra_doc_links -D rustdoc::private_intra_doc_links" \
  cargo doc --workspace --no-deps --quiet

step "ui: lint, type check, component tests, build"
(
  cd ui
  timed "ui lint" npm run --silent lint
  timed "ui typecheck" npm run --silent typecheck
  timed "ui component tests" npm run --silent test
  timed "ui build" npm run --silent build
)

step "deploy: render, validate, policies"
timed "deploy checks" scripts/deploy-check.sh

step "tests (cargo test --workspace)"
rust=0
cargo test --workspace --no-fail-fast || rust=$?

# After the Rust tests: they built target/debug/aegis, which the browser
# tests run (`aegis up --single-node`); nothing is built twice.
step "ui: browser tests (chromium, against target/debug/aegis)"
ui=0
(cd ui && timed "ui browser tests" npm run --silent e2e) || ui=$?

# The images from the same binary and UI export, and the chart's topology
# as containers: registration, the UI, failovers (scripts/podman-check.sh).
step "podman: images and the topology as containers (against target/debug/aegis)"
podman=0
timed "podman check" scripts/podman-check.sh --binary target/debug/aegis --ui-dir ui/out || podman=$?

step "done in $((SECONDS - started)) s"
if [ "$rust" -ne 0 ] || [ "$ui" -ne 0 ] || [ "$podman" -ne 0 ]; then
  echo "failed: cargo test exit $rust, browser tests exit $ui, podman check exit $podman" >&2
  exit 1
fi
