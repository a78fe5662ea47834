# Aegis — the two commands of the README, and a few helpers.
#   make up     the local showcase (NATS + services + monitor UI), Ctrl-C stops it
#               (UP_ARGS="--admit-service NAME" adds flags of `aegis up`)
#   make test   every test: format, lints, unit, integration and browser tests,
#               the Helm chart's offline checks (make test-deploy) and the
#               topology under podman (make test-podman)
.PHONY: up test test-deploy test-podman images bootstrap build ui bench-rpc bench-events bench-ui screenshots lint fmt

CARGO ?= cargo
export CARGO_TERM_COLOR ?= auto
export NEXT_TELEMETRY_DISABLED = 1

# The UI's static export is rebuilt when it is missing or older than any of
# its sources; `make up` serves it.
UI_SOURCES := $(shell find ui/app ui/components ui/hooks ui/lib -type f 2>/dev/null) \
	ui/package.json ui/package-lock.json ui/next.config.ts ui/postcss.config.mjs ui/tsconfig.json

up: bootstrap ui/out/index.html
	$(CARGO) build --release -p aegis
	./target/release/aegis up --ui-dir ui/out $(UP_ARGS)

test:
	scripts/test.sh

# The Helm chart, offline: render with every value set, lint, validate
# against Kubernetes 1.29-1.33, policy checks and negative tests (also a step
# of `make test`).
test-deploy:
	scripts/deploy-check.sh

# The images the chart runs, aegis:<version> and aegis-nats:2.15.1, built
# here with podman from a release binary and the UI export (no registry).
images: ui/out/index.html
	$(CARGO) build --release -p aegis
	scripts/images.sh --binary target/release/aegis --ui-dir ui/out

# The chart's topology as containers under podman, from images of the debug
# binary: registration, the UI, failovers (also the last step of `make test`).
test-podman: ui/out/index.html
	$(CARGO) build -p aegis
	scripts/podman-check.sh --binary target/debug/aegis --ui-dir ui/out

bootstrap:
	scripts/bootstrap.sh

build:
	$(CARGO) build --workspace

ui: ui/out/index.html

ui/out/index.html: $(UI_SOURCES)
	scripts/bootstrap.sh --ui
	cd ui && npm run --silent build
	touch $@

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd ui && npm run --silent lint && npm run --silent typecheck

fmt:
	$(CARGO) fmt --all

bench-rpc: bootstrap
	$(CARGO) run --release -p aegis -- bench rpc --json docs/results/bench-rpc.json

bench-events: bootstrap
	$(CARGO) run --release -p aegis -- bench events --json docs/results/bench-events.json

# The dashboard with 1,000 instances heart-beating at 1 Hz (docs/performance.md).
bench-ui: ui/out/index.html
	scripts/bootstrap.sh --browser
	$(CARGO) build --release -p aegis
	$(CARGO) build --release -p aegis-monitor --example fake_instances
	cd ui && AEGIS_BIN=../target/release/aegis BENCH_JSON=../docs/results/bench-ui.json npm run --silent bench

# docs/screenshots/: dashboard, detail tabs and manage at 1440x900 and 390x844.
screenshots: ui/out/index.html
	scripts/bootstrap.sh --browser
	$(CARGO) build -p aegis
	cd ui && npm run --silent screenshots
