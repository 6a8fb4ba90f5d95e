# kfp-tabular: the two commands a new user needs are `make run` and `make test`.
# Both install what they need first: uv (pinned, into .tools/ unless one is on PATH), then the
# locked environment (.venv, from uv.lock).

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --frozen --all-extras
ARGS ?=

MODEL ?= penguins
PORT ?= 8080
# Container images: `make images REGISTRY=my.registry/team TAG=1.2.0`. The compiled pipeline refers to
# $(REGISTRY)/pipeline:$(TAG) (compile with the same KFP_TABULAR_REGISTRY / KFP_TABULAR_TAG).
REGISTRY ?= ghcr.io/kfp-tabular
TAG ?= 0.1.0
# The engine: podman if installed, else docker (override with ENGINE=docker).
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || (command -v docker >/dev/null 2>&1 && echo docker))

.PHONY: help run test test-fast sync lint format compile check-compile bench bench-serving serve predict images clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: sync  ## run the whole pipeline locally (kfp.local) on the demo data; ARGS="--config my.yaml" for yours
	$(RUN) python -m pipelines.local_run $(ARGS)

serve: sync  ## serve the newest locally deployed model (after `make run`) on 127.0.0.1:$(PORT)
	$(RUN) python -m components.serving --model_name $(MODEL) --model_repository model_repository --host 127.0.0.1 --http_port $(PORT)

predict: sync  ## send an example V1 and V2 request from the demo data to `make serve`
	$(RUN) python -m components.serving.example_request --url http://127.0.0.1:$(PORT) --model_name $(MODEL)

test: sync  ## lint, compiled-YAML freshness, then every test (slow pipeline runs included)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) python -m pipelines.compile --check
	$(RUN) pytest

test-fast: sync  ## unit tests only (no whole-pipeline runs)
	$(RUN) pytest -m "not slow"

sync: $(UV)  ## install the locked environment into .venv
	$(UV) sync --frozen --all-extras

.tools/bin/uv:
	@echo "installing uv $(UV_VERSION) into .tools/ (no uv on PATH)"
	$(PYTHON) -m venv .tools || { echo "error: '$(PYTHON) -m venv' failed; install Python 3.11 with venv (Debian: python3-venv)" >&2; exit 1; }
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

lint: sync  ## ruff check and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: sync  ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

compile: sync  ## compile the pipeline to pipelines/tabular_pipeline.yaml (upload it to the KFP dashboard)
	$(RUN) python -m pipelines.compile

check-compile: sync  ## fail if the committed pipeline YAML is stale
	$(RUN) python -m pipelines.compile --check

bench: sync  ## pipeline benchmark (10k, 100k, 1M rows); writes docs/benchmarks.md
	$(RUN) python -m benchmarks.pipeline_benchmark --rows 10000 100000 1000000 --out docs/benchmarks.md

bench-serving: sync  ## serving benchmark (ours vs KServe no-op vs in-process vs stock sklearnserver)
	$(RUN) python -m benchmarks.serving_benchmark --out docs/benchmarks.md

images:  ## build the pipeline and serving images ($(REGISTRY)/{pipeline,serving}:$(TAG)) with $(ENGINE)
	@test -n "$(ENGINE)" || { echo "error: no container engine: install Docker (or podman), or set ENGINE=" >&2; exit 1; }
	@echo "building $(REGISTRY)/pipeline:$(TAG) and $(REGISTRY)/serving:$(TAG) with $(ENGINE)"
	$(ENGINE) build -f images/pipeline/Dockerfile -t $(REGISTRY)/pipeline:$(TAG) .
	$(ENGINE) build -f images/serving/Dockerfile -t $(REGISTRY)/serving:$(TAG) .

clean:  ## remove local run outputs and the local model repository
	rm -rf local_outputs model_repository benchmarks/out
