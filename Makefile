# One entry point for everything. Targets create .venv on their own.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACK := integrations/coda-pack
SEEDS ?= 10000

.PHONY: demo test test-python test-pack lint fmt bench soak check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## demo: emulator + real daemon on SQLite, edits on both sides, live output (Ctrl-C stops)
demo: $(STAMP)
	$(BIN)/coda-sync demo

## test: lint, type-check, Pack tests (npm ci first: the Python e2e suite drives the Pack too),
## then every Python test (PostgreSQL ones when CODA_SYNC_TEST_PG_URL is set)
test: lint test-pack test-python

test-python: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider

test-pack:
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(PACK) && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run --silent build; \
	else echo "npm not found: skipping the Coda Pack tests (install Node.js 20)"; fi

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format daemon tests bench
	$(BIN)/ruff check --fix daemon tests bench

## bench: API-cost, wall-time, local-cost and latency figures -> bench/results/perf.json
bench: $(STAMP)
	$(BIN)/python -m bench.perf

## soak: long deterministic simulation -> bench/results/reliability.json
soak: $(STAMP)
	$(BIN)/python -m tests.simulation.soak --seeds $(SEEDS) --workers $$(nproc)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
