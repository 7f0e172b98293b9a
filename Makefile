# wva developer entry points. Every target creates the virtualenv on first use.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: help venv demo test lint typecheck unit test-e2e bench sync-crds clean

help:
	@echo "make demo      - run the whole autoscaler locally on an embedded environment"
	@echo "make test      - lint, type-check and run the test suite"
	@echo "make bench     - run the scale benchmark (writes bench/results/)"
	@echo "make test-e2e  - kind-based end-to-end tests (needs Docker, kind, helm; WVA_E2E=1)"

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/wva demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench

typecheck: $(STAMP)
	$(BIN)/mypy operator/wva

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test: lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider --ignore=tests/e2e $(PYTEST_ARGS)

test-e2e: $(STAMP)
	WVA_E2E=$${WVA_E2E:-1} $(BIN)/pytest -v tests/e2e

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

sync-crds:
	bash deploy/sync-crds.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist operator/*.egg-info
