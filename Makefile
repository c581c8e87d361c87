# The two README commands: `make demo` and `make test`. Each sets itself up (venv + pinned deps) and is
# safe to re-run. torch 2.13.0 is installed first: it resolves to the CPU wheel on local disk, and the
# project's torch range is satisfied by it, so pip never downloads a CUDA build.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED ?= 0
export MLFLOW_DISABLE_TELEMETRY ?= true
export DS_ACCELERATOR ?= cpu
export PYTHONUNBUFFERED := 1
# No credentials here: the local stack generates its own S3 key and Ray token under .asva/ (`asva stack env`).
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-all test-reliability demo reproduce stack-up stack-down stack-status bench rehearsal lint ui-check clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# Debian's chromium for the browser checks (no browser download); needs root, as on CI.
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	  || echo "warning: could not install chromium; browser checks will be skipped"

# The default suite, what CI runs: every tier (tests/unit, tests/learning, tests/integration, tests/reliability;
# see tests/conftest.py) but the tests marked slow.
test: setup chromium
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The service-free tier alone: tests/unit (no Ray, no S3 or MLflow server; tiny models), a few minutes on 2 cores.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests/unit $(PYTEST_ARGS)

test-reliability: setup
	$(PY) -m pytest -q tests/reliability $(PYTEST_ARGS)

test-all: setup chromium
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(PY) -m asva_platform.dev.demo

# The paper's evaluation of the authors' released checkpoint, our row beside the paper's (docs/metrics.md): after
# `asva fetch all --dest $(WEIGHTS)`, on the Ray cluster $$RAY_ADDRESS names (else the local stack: `make stack-up`).
# REPRODUCE_ARGS=--dry-run checks the inputs and prints the GPU-hour estimate only.
WEIGHTS ?= weights
REPRODUCE_ARGS ?=
reproduce: setup
	$(PY) -m sweeps.reproduce --weights $(WEIGHTS) $(REPRODUCE_ARGS)

stack-up: setup
	$(PY) -m asva_platform.cli stack up

stack-down: setup
	$(PY) -m asva_platform.cli stack down

stack-status: setup
	$(PY) -m asva_platform.cli stack status

bench: setup
	$(PY) -m bench

# The paper's recipe at its true size through every job on the local stack (frames, clips and steps cut; every
# network full size, random-init): about an hour on 2 cores, ~20 GB of RAM; never part of `make test`.
rehearsal: setup
	$(PY) -m bench.rehearsal

# The formatter's check, then the linter: `ruff format .` fixes the first, `ruff check --fix .` most of the second.
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

# After `make demo`: open the links it printed in headless Chromium and check what a person would see (runs
# table with the sweep's trials, descriptions, the Sync plot, the comparison page playing); screenshots in out/ui-check/.
ui-check: setup chromium
	ASVA_UI_CHECK_LINKS=$${ASVA_UI_CHECK_LINKS:-$${ASVA_STATE_DIR:-.asva}/demo-toy/links.json} ASVA_UI_CHECK_OUT=out/ui-check \
	  $(PY) -m pytest -q tests/integration/test_ui_check.py

clean:
	rm -rf .pytest_cache .ruff_cache
