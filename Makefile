# Tollgate — two commands do everything on a fresh machine:
#   make demo   build, start the demo stack, send sample traffic, print the cost report
#   make test   every test (unit, service, real Envoy + real .wasm end-to-end)
# Also: make up / make down (demo stack in the background), make bench, make setup,
#       make docs (README config reference from schemas/), make plots (benches/results/plots/).

CARGO ?= cargo
WASM  := target/wasm32-wasip1/release/tollgate_filter.wasm

.PHONY: all setup wasm build test demo up down bench fmt lint clean docs plots

all: build

setup:
	@scripts/setup.sh

wasm: setup
	$(CARGO) build --release --target wasm32-wasip1 -p tollgate-filter

build: wasm
	$(CARGO) build --release -p tollgate-tests --bin sim-provider --bin sim-pool -p tollgate-cache-service --bin tollgate-cache-service

test: wasm
	$(CARGO) test --workspace
	.venv/bin/python -m unittest discover -s tests/packaging

up: build
	@scripts/stack.sh up

down:
	@scripts/stack.sh down

demo: up
	@echo
	@.venv/bin/python scripts/demo_traffic.py http://127.0.0.1:$${TOLLGATE_PORT:-10000} http://127.0.0.1:$${TOLLGATE_POOL_PORT:-10001} http://127.0.0.1:$${TOLLGATE_POOL_BASE_PORT:-8200}
	@sleep 0.5
	@echo
	@python3 scripts/report.py http://127.0.0.1:$${TOLLGATE_ADMIN_PORT:-9901}
	@echo
	@echo "The stack is still running: point an SDK at http://127.0.0.1:$${TOLLGATE_PORT:-10000} (stats: http://127.0.0.1:$${TOLLGATE_ADMIN_PORT:-9901}/stats/prometheus). 'make down' stops it."
	@echo "Cost dashboard: http://127.0.0.1:$${TOLLGATE_CACHE_PORT:-8090}/dashboard?token=$${TOLLGATE_ADMIN_TOKEN:-demo-admin-token}"

bench: build
	@benches/run.sh

# README.md's configuration reference, generated from schemas/*.schema.json, and
# docs/architecture.svg (stdlib Python).
docs:
	python3 scripts/gen_config_reference.py
	python3 docs/architecture.py

# PNG plots of the committed benchmark results (matplotlib in .venv: make setup installs it).
plots:
	.venv/bin/python benches/plot.py

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# The benchmark-only builds of the filter (benches/phases.sh) must keep compiling too.
	$(CARGO) clippy -p tollgate-filter --target wasm32-wasip1 --features phase-timing,io-floor,free-count -- -D warnings

clean: down
	$(CARGO) clean
	rm -rf .tollgate
