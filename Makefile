# Flywheel: the one command surface. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP_VERSION := 26.3
# Ray, Feast and friends must not phone home or print progress bars in CI logs.
export RAY_USAGE_STATS_ENABLED := 0
export FEAST_USAGE := False
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := 1

.PHONY: help install demo test test-unit test-integration lint fmt bench bench-quick lock clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the pinned set (fast when nothing changed)

demo: install  ## run the main job on the local profile: simulate, ingest, features, Feast
	$(VENV)/bin/flywheel demo

test: install  ## all tests: unit + integration (real Ray, Feast, Redis when installed)
	$(PY) -m pytest -q

test-unit: install  ## fast tests only
	$(PY) -m pytest -q tests/unit

test-integration: install  ## integration tests only
	$(PY) -m pytest -q -m integration

lint: install  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install  ## format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install  ## all benchmarks at full size (about an hour); bench-out/*.json, see benchmarks/RESULTS.md
	$(PY) benchmarks/run_all.py

bench-quick: install  ## the smallest size of each benchmark (minutes)
	$(PY) benchmarks/run_all.py --quick

lock: install  ## regenerate constraints.txt from the current environment
	$(PY) -m pip freeze --exclude-editable | grep -v -iE '^(flywheel|pip|setuptools|wheel)==' \
	  | sed '1i # Lock file: the exact set a fresh make install resolves (pip install -c constraints.txt).\n# Regenerate with make lock after changing dependencies in pyproject.toml.' > constraints.txt

clean:  ## remove the workspace and caches (keeps .venv)
	rm -rf .flywheel bench-out .pytest_cache .ruff_cache .mypy_cache
