# kfp-tabular: the two commands a new user needs are `make run` and `make test`.
# Both install what they need first: uv (pinned, into .tools/ unless one is on PATH), then the
# locked environment (.venv, from uv.lock).

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
RUN := $(UV) run --frozen --all-extras
ARGS ?=

# The demo's model name (<source>-<target>, see the run summary); `make serve MODEL=<name>` for yours.
MODEL ?= penguins-species
PORT ?= 8080
UI_PORT ?= 5000
# Local tracking and registry (MLflow): one SQLite file and an artifact folder in ./mlflow, as `make run` makes them.
TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow/mlflow.db
# Container images: `make images REGISTRY=my.registry/team TAG=1.2.0`. The compiled pipeline refers to
# $(REGISTRY)/pipeline:$(TAG) (compile with the same KFP_TABULAR_REGISTRY / KFP_TABULAR_TAG).
REGISTRY ?= ghcr.io/kfp-tabular
TAG ?= 0.1.0
# The engine: podman if installed, else docker (override with ENGINE=docker).
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || (command -v docker >/dev/null 2>&1 && echo docker))

# The cluster path (kind): pinned upstream versions.
include manifests/versions.env
KIND_CLUSTER ?= kfp-tabular
# Pipeline runs' service account (manifests/base/rbac.yaml), in KFP's namespace.
RUN_SERVICE_ACCOUNT ?= kfp-tabular-runner
CERT_MANAGER_RELEASE := https://github.com/cert-manager/cert-manager/releases/download/$(CERT_MANAGER_VERSION)
KSERVE_RELEASE := https://github.com/kserve/kserve/releases/download/$(KSERVE_VERSION)
KFP_MANIFESTS := github.com/kubeflow/pipelines/manifests/kustomize
# `make images-kind`: where $(ENGINE) saves each image for `kind load image-archive` (deleted once loaded).
IMAGE_ARCHIVES ?= $(or $(TMPDIR),/tmp)/kfp-tabular-images
need = @command -v $(1) >/dev/null 2>&1 || { echo "error: $(1) not found on PATH: $(2)" >&2; exit 1; }
# $(call wait-webhook,WHO,FILE): a server-side dry run of FILE (created nowhere) passes through WHO's admission
# webhook, so it succeeds only once that webhook answers with its CA bundle injected; every 5 s, for 5 minutes.
wait-webhook = @echo "waiting for $(1)'s admission webhook to answer (server-side dry run of $(2))"; \
	for i in $$(seq 60); do kubectl create --dry-run=server -f $(2) >/dev/null 2>&1 && exit 0; sleep 5; done; \
	kubectl create --dry-run=server -f $(2)
# $(call load-image,NAME): $(ENGINE)'s own copy of the image, saved to an archive and loaded into the kind node.
load-image = @echo "loading $(REGISTRY)/$(1):$(TAG) from $(ENGINE) into kind cluster $(KIND_CLUSTER)"; \
	mkdir -p $(IMAGE_ARCHIVES) && $(ENGINE) save -o $(IMAGE_ARCHIVES)/$(1).tar $(REGISTRY)/$(1):$(TAG) \
	&& kind load image-archive --name $(KIND_CLUSTER) $(IMAGE_ARCHIVES)/$(1).tar; \
	status=$$?; rm -f $(IMAGE_ARCHIVES)/$(1).tar; exit $$status

.PHONY: help run test test-fast sync lint format compile check-compile bench bench-serving bench-batch wrk serve predict predict-batch images ui rollback versions \
	clean cluster images-kind deploy deploy-cert-manager deploy-kserve deploy-kfp deploy-manifests upload \
	run-cluster predict-cluster ui-cluster rollback-cluster undeploy test-cluster

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' Makefile | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

run: sync  ## run the whole pipeline locally (kfp.local) on the demo data; ARGS="--config my.yaml" for yours
	$(RUN) python -m pipelines.local_run $(ARGS)

serve: sync  ## serve the registry's champion of $(MODEL) on 127.0.0.1:$(PORT), following it as it moves
	$(RUN) python -m components.serving --model_name $(MODEL) --model_uri models:/$(MODEL)@champion \
	  --tracking_uri $(TRACKING_URI) --host 127.0.0.1 --http_port $(PORT)

ui: sync  ## the MLflow UI on 127.0.0.1:$(UI_PORT): every run, its metrics and reports, the registered versions
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT) (experiment $(MODEL); Models tab: versions and the champion alias)"
	$(RUN) mlflow ui --backend-store-uri $(TRACKING_URI) --host 127.0.0.1 --port $(UI_PORT)

rollback: sync  ## make the previous champion of $(MODEL) the champion again (TO=<version> for another); `make serve` follows
	$(RUN) python -m components.registry rollback --model-name $(MODEL) --tracking-uri $(TRACKING_URI) $(if $(TO),--to $(TO))

versions: sync  ## list the registered versions of $(MODEL), the champion and its history
	$(RUN) python -m components.registry versions --model-name $(MODEL) --tracking-uri $(TRACKING_URI)

predict-batch: sync  ## score INPUT (CSV/Parquet file, folder or prefix) into OUTPUT with the champion of $(MODEL) (MODEL_URI= for another; ARGS= more options)
	@test -n "$(INPUT)" -a -n "$(OUTPUT)" || { echo "usage: make predict-batch INPUT=<table, folder or prefix> OUTPUT=<folder or .parquet> [MODEL_URI=models:/<name>/<version>] [ARGS='--passthrough-columns id --on-bad-rows quarantine']" >&2; exit 1; }
	$(RUN) python -m pipelines.batch_run --model-uri $(or $(MODEL_URI),models:/$(MODEL)@champion) \
	  --mlflow-tracking-uri $(TRACKING_URI) --input-uri $(INPUT) --output-uri $(OUTPUT) $(ARGS)

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

compile: sync  ## compile the pipelines to pipelines/{tabular,batch_predict}_pipeline.yaml (upload them to the KFP dashboard)
	$(RUN) python -m pipelines.compile

check-compile: sync  ## fail if a committed pipeline YAML is stale
	$(RUN) python -m pipelines.compile --check

bench: sync  ## pipeline benchmark (10k, 100k, 1M rows); writes docs/benchmarks.md
	$(RUN) python -m benchmarks.pipeline_benchmark --rows 10000 100000 1000000 --out docs/benchmarks.md

bench-serving: sync wrk  ## serving benchmark (ours vs KServe no-op vs in-process vs stock sklearnserver)
	$(RUN) python -m benchmarks.serving_benchmark --experiments --out docs/benchmarks.md

bench-batch: sync  ## batch prediction benchmark (1M and 10M rows, linear and boosted, vs the scikit-learn pipeline); writes docs/benchmarks.md
	$(RUN) python -m benchmarks.batch_benchmark --rows 1000000 10000000 --out docs/benchmarks.md

wrk:  # the serving benchmark's load generator (a system package)
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk (the serving benchmark's HTTP load generator)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if command -v apt-get >/dev/null 2>&1; then $$SUDO apt-get install -y -q wrk || { $$SUDO apt-get update -q && $$SUDO apt-get install -y -q wrk; }; \
	  elif command -v dnf >/dev/null 2>&1; then $$SUDO dnf install -y wrk; \
	  elif command -v brew >/dev/null 2>&1; then brew install wrk; \
	  else echo "error: install wrk (https://github.com/wg/wrk) and run again" >&2; exit 1; fi; }

images:  ## build the pipeline and serving images ($(REGISTRY)/{pipeline,serving}:$(TAG)) with $(ENGINE)
	@test -n "$(ENGINE)" || { echo "error: no container engine: install Docker (or podman), or set ENGINE=" >&2; exit 1; }
	@echo "building $(REGISTRY)/pipeline:$(TAG) and $(REGISTRY)/serving:$(TAG) with $(ENGINE)"
	$(ENGINE) build -f images/pipeline/Dockerfile -t $(REGISTRY)/pipeline:$(TAG) .
	$(ENGINE) build -f images/serving/Dockerfile -t $(REGISTRY)/serving:$(TAG) .

cluster:  ## create the kind cluster (manifests/kind/cluster.yaml, node $(KIND_NODE_IMAGE)) unless it exists
	$(call need,kind,https://kind.sigs.k8s.io/docs/user/quick-start/#installation)
	@if kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
	  echo "kind cluster $(KIND_CLUSTER) exists; kubectl context kind-$(KIND_CLUSTER)"; \
	  kind export kubeconfig --name $(KIND_CLUSTER); \
	else \
	  echo "creating kind cluster $(KIND_CLUSTER)"; \
	  kind create cluster --name $(KIND_CLUSTER) --config manifests/kind/cluster.yaml --image $(KIND_NODE_IMAGE) --wait 120s; \
	fi

images-kind: images  ## build the images, then load $(ENGINE)'s copies into the kind node (save + kind load image-archive)
	$(call need,kind,https://kind.sigs.k8s.io/docs/user/quick-start/#installation)
	$(call load-image,pipeline)
	$(call load-image,serving)

# `make deploy` in four steps, each safe to run again (apply, never create or patch; every wait is on the state
# the next step needs). Run one step alone to resume after a failure: its prerequisites are re-applied unchanged.
deploy: deploy-manifests  ## install cert-manager, KServe (Standard mode), KFP standalone and our manifests; waits for each
	@echo "done: KFP UI with 'kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80', then http://localhost:8080"

deploy-cert-manager:  ## step 1 of deploy: cert-manager, until its webhook answers (KServe's Certificates and Issuer go through it)
	$(call need,kubectl,https://kubernetes.io/docs/tasks/tools/)
	@echo "installing cert-manager $(CERT_MANAGER_VERSION)"
	kubectl apply -f $(CERT_MANAGER_RELEASE)/cert-manager.yaml
	kubectl wait --for=condition=Available deployment --all -n cert-manager --timeout=300s
	$(call wait-webhook,cert-manager,manifests/checks/cert-manager-webhook.yaml)

deploy-kserve: deploy-cert-manager  ## step 2 of deploy: KServe's CRDs, its namespace, then the rest (as KServe's own install scripts)
	$(call need,kubectl,https://kubernetes.io/docs/tasks/tools/)
	@echo "installing KServe $(KSERVE_VERSION) in the Standard deployment mode (no Knative): CRDs first"
	kubectl apply --server-side --force-conflicts --field-manager=kfp-tabular-crds -f $(KSERVE_RELEASE)/kserve-crds.yaml
	kubectl wait --for=condition=Established --timeout=120s -f $(KSERVE_RELEASE)/kserve-crds.yaml
	kubectl apply --server-side -f manifests/kserve/namespace.yaml
	kubectl apply --server-side -k manifests/kserve
	kubectl wait --for=condition=Available deployment/kserve-controller-manager -n kserve --timeout=300s
	$(call wait-webhook,KServe,manifests/checks/kserve-webhook.yaml)

deploy-kfp:  ## step 3 of deploy: KFP standalone, its cluster-scoped resources (CRDs), then the rest
	$(call need,kubectl,https://kubernetes.io/docs/tasks/tools/)
	@echo "installing Kubeflow Pipelines $(KFP_VERSION) (standalone)"
	kubectl apply -k "$(KFP_MANIFESTS)/cluster-scoped-resources?ref=$(KFP_VERSION)"
	kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
	kubectl apply -k "$(KFP_MANIFESTS)/env/platform-agnostic?ref=$(KFP_VERSION)"
	kubectl wait --for=condition=Available deployment --all -n kubeflow --timeout=900s

deploy-manifests: deploy-kserve deploy-kfp  ## step 4 of deploy: ours (ClusterServingRuntime, RBAC in kubeflow, the MLflow server); waits for MLflow
	$(call need,kubectl,https://kubernetes.io/docs/tasks/tools/)
	@echo "installing kfp-tabular (namespace, RBAC, storage credentials, ClusterServingRuntime, MLflow server)"
	kubectl apply -k manifests/overlays/kind
	@echo "waiting for the MLflow server (runs track to it and register there: it must be up before run-cluster)"
	kubectl rollout status deployment/mlflow -n kfp-tabular --timeout=300s

upload: check-compile  ## upload pipelines/tabular_pipeline.yaml to KFP as pipeline "kfp-tabular" (a new version only if it changed)
	$(RUN) python -m pipelines.cluster upload

run-cluster:  ## start a run of the newest pipeline version (deploy_target=kserve, service account kfp-tabular-runner) and wait for it
	$(RUN) python -m pipelines.cluster run --wait --model_name $(MODEL) --service_account $(RUN_SERVICE_ACCOUNT)

predict-cluster:  ## port-forward to the InferenceService and send an example V1 and V2 request
	$(RUN) python -m pipelines.cluster predict --model_name $(MODEL)

ui-cluster:  ## the cluster's MLflow UI on 127.0.0.1:$(UI_PORT) (a port-forward to svc/mlflow; Ctrl-C ends it)
	$(call need,kubectl,https://kubernetes.io/docs/tasks/tools/)
	@echo "MLflow UI of the cluster: http://127.0.0.1:$(UI_PORT) (experiment $(MODEL); Models tab: versions and the champion alias). Ctrl-C ends it."
	kubectl port-forward -n kfp-tabular svc/mlflow $(UI_PORT):5000

rollback-cluster:  ## the previous champion of $(MODEL) champion again (TO=<version> for another), its InferenceService pointed at it
	$(call need,kubectl,https://kubernetes.io/docs/tasks/tools/)
	$(RUN) python -m pipelines.cluster rollback --model_name $(MODEL) $(if $(TO),--to $(TO))

undeploy:  ## delete our InferenceServices and manifests, the MLflow database too (KFP and its MinIO, KServe, cert-manager stay)
	$(call need,kubectl,https://kubernetes.io/docs/tasks/tools/)
	@echo "deleting the InferenceServices in kfp-tabular, then the kfp-tabular manifests (waits until they are gone)"
	@echo "this deletes the MLflow server's database (runs, registry) with its PersistentVolumeClaim; the files in MinIO's mlflow bucket stay"
	@if kubectl get crd inferenceservices.serving.kserve.io >/dev/null 2>&1; then \
	  kubectl delete inferenceservices.serving.kserve.io --all -n kfp-tabular --ignore-not-found --wait --timeout=300s; \
	fi
	kubectl delete -k manifests/overlays/kind --ignore-not-found --wait --timeout=300s

test-cluster: sync  ## the e2e test on the current kubectl context (skips when no cluster is reachable)
	$(RUN) pytest -m cluster -v

clean:  ## remove local run outputs and the local MLflow store (runs, registry, artifacts)
	rm -rf local_outputs mlflow benchmarks/out
