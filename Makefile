# Aegis — the two commands of the README, and a few helpers.
#   make up     the local showcase (NATS + services), Ctrl-C stops it
#   make test   every test: format, lints, unit and integration tests
.PHONY: up test bootstrap build bench-rpc bench-events lint fmt

CARGO ?= cargo
export CARGO_TERM_COLOR ?= auto

up: bootstrap
	$(CARGO) build --release -p aegis
	./target/release/aegis up

test:
	scripts/test.sh

bootstrap:
	scripts/bootstrap.sh

build:
	$(CARGO) build --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench-rpc: bootstrap
	$(CARGO) run --release -p aegis -- bench rpc --json docs/results/bench-rpc.json

bench-events: bootstrap
	$(CARGO) run --release -p aegis -- bench events --json docs/results/bench-events.json
