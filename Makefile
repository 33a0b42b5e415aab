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

.PHONY: help install demo test test-slow test-all test-unit test-integration lint fmt mutate bench bench-quick lock clean

help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the pinned set (fast when nothing changed)

# Kubernetes tools (kubectl, kubernetes-validate, checkov, jsonschema) in their own venv:
# checkov pins many libraries that would fight the main lock. Used by the manifest tests.
.PHONY: k8s-tools k8s-check kind-up kind-down kind-deploy
K8S_VENV := .venv-k8s
K8S_STAMP := $(K8S_VENV)/.installed

$(K8S_STAMP): requirements-k8s.txt
	@test -x $(K8S_VENV)/bin/python || $(PYTHON) -m venv $(K8S_VENV)
	@echo '*' > $(K8S_VENV)/.gitignore
	$(K8S_VENV)/bin/python -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(K8S_VENV)/bin/python -m pip install --quiet -r requirements-k8s.txt
	@touch $(K8S_STAMP)

k8s-tools: $(K8S_STAMP)  ## create .venv-k8s with the pinned Kubernetes tools (requirements-k8s.txt)

k8s-check: install k8s-tools  ## render, schema-validate, policy-test and checkov the k8s/ manifests
	$(PY) -m pytest -q tests/unit/test_k8s_manifests.py

kind-up: k8s-tools  ## kind cluster from k8s/kind-cluster.yaml + KFP standalone + KubeRay operator (pinned)
	bash scripts/kind.sh up

kind-deploy: k8s-tools  ## load the images into kind, apply k8s/overlays/kind, print the URLs
	bash scripts/kind.sh deploy

kind-down:  ## delete the kind cluster
	bash scripts/kind.sh down

demo: install  ## the flywheel through a drift: flywheel vs frozen model vs oracle (~7-11 min)
	$(VENV)/bin/flywheel demo

test: install k8s-tools  ## unit + integration tests (real Ray, Feast, Redis, S3, bentoml serve), not the slow ones
	$(PY) -m pytest -q -m "not slow"

test-slow: install  ## the multi-cycle end-to-end runs (closed loop, string-id shop, v1->v2 service; ~8 min)
	$(PY) -m pytest -q -m slow

test-all: install k8s-tools  ## every test: make test + make test-slow
	$(PY) -m pytest -q

test-unit: install k8s-tools  ## fast tests only
	$(PY) -m pytest -q tests/unit

test-integration: install  ## integration tests only (slow ones included)
	$(PY) -m pytest -q -m integration

lint: install  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: install  ## format and auto-fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Mutation testing (MUTATION.md): the decision functions of the decision modules, against
# the unit tests in [tool.mutmut] of pyproject.toml. Not part of `make test`. Mutants are
# named <module>.x_<function>__mutmut_<n> (methods: xǁ<Class>ǁ<method>).
MUTATE_FUNCTIONS := \
  'flywheel.evaluate.x_auc__*' 'flywheel.evaluate.x_log_loss__*' \
  'flywheel.evaluate.x_calibration_bins__*' 'flywheel.evaluate.x_expected_calibration_error__*' \
  'flywheel.evaluate.x_ndcg_at_k__*' 'flywheel.evaluate.x_score_metrics__*' \
  'flywheel.evaluate.x_decide__*' 'flywheel.evaluate.x_decide_first_model__*' \
  'flywheel.evaluate.x_evaluate__*' 'flywheel.popularity.x_popularity_scores__*' \
  'flywheel.dataset.*' 'flywheel.ingest.checks.*' 'flywheel.ingest.validate.*' 'flywheel.ids.*' \
  'flywheel.serving.exploration.x_epsilon_greedy__*' 'flywheel.serving.records.x__prediction_records__*' \
  'flywheel.deploy.*' 'flywheel.k8s_deploy.*' 'flywheel.feast_asof.x_*'

mutate: install  ## mutation testing of the decision modules, unit tier; prints the survivors (MUTATION.md)
	rm -rf mutants
	@# One OpenMP thread: mutmut forks its workers, and a forked libgomp pool deadlocks.
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 $(MUTATE_FUNCTIONS) > mutants.log 2>&1 \
	  || { tail -c 4000 mutants.log; exit 1; }
	@tr '\r' '\n' < mutants.log | grep -E 'mutations/second' | tail -1
	@$(VENV)/bin/mutmut results | grep -v ': not checked' || echo 'no surviving mutant'

bench: install  ## all benchmarks at full size (about an hour); bench-out/*.json, see benchmarks/RESULTS.md
	$(PY) benchmarks/run_all.py

bench-quick: install  ## the smallest size of each benchmark (minutes)
	$(PY) benchmarks/run_all.py --quick

lock: install  ## regenerate constraints.txt from the current environment
	$(PY) -m pip freeze --exclude-editable | grep -v -iE '^(flywheel|pip|setuptools|wheel)==' \
	  | sed '1i # Lock file: the exact set a fresh make install resolves (pip install -c constraints.txt).\n# Regenerate with make lock after changing dependencies in pyproject.toml.' > constraints.txt

clean:  ## remove the workspace and caches (keeps .venv)
	rm -rf .flywheel bench-out .pytest_cache .ruff_cache .mypy_cache mutants mutants.log

# ---- container images, built offline (images/README.md) -----------------------------------
.PHONY: wheelhouse base-image images test-containers
DOCKER_SDK := docker==7.2.0

wheelhouse: install  ## wheels of flywheel + its locked dependencies into build/wheelhouse
	images/wheelhouse.sh

base-image:  ## flywheel/base:bookworm for the images (debootstrap + docker import; as root)
	images/dockerd.sh
	images/base/build-base.sh

images: wheelhouse base-image  ## build flywheel-platform:0.1.0 and flywheel-serving:0.1.0 (offline)
	images/build.sh

test-containers: images  ## a component in the platform image (kfp.local DockerRunner), Ray nodes vs KubeRay's httpGet :52365/api/healthz probes, /rank in serving
	@$(PY) -c 'import docker' 2>/dev/null || $(PY) -m pip install --quiet -c constraints.txt $(DOCKER_SDK)
	FLYWHEEL_CONTAINER_TESTS=1 $(PY) -m pytest -v -s tests/containers
