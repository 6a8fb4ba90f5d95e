"""The ``kserve`` deploy target: create or patch an InferenceService, wait for it, smoke-test it.

Rollout, with everything that fails giving the InferenceService's conditions in the error:

1. the InferenceService ``<model_name>`` is created, or patched to the new ``storageUri`` (the
   previous one is remembered); with ``canary_traffic_percent`` (Knative mode only, as in KServe),
   the new model first gets that share of the traffic;
2. wait until it is Ready for the new generation, up to ``timeout_seconds``;
3. smoke test: rows of the test split go to the endpoint (V1), the answers must equal the
   evaluation's in-process predictions of the same artifact;
4. success: a canary is promoted to 100%; failure: the previous model is restored (or the new
   InferenceService deleted if there was none) and the deploy step fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from components.common.errors import ConfigError, KfpTabularError
from components.common.logs import get_logger

log = get_logger("deploy")
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_FORMAT = "kfp-tabular"


class DeployError(KfpTabularError):
    """The InferenceService did not become Ready, or its answers were wrong."""


@dataclass
class KServeSettings:
    namespace: str = "kfp-tabular"
    runtime: str = "kfp-tabular"
    service_account: str = "kfp-tabular-predictor"
    deployment_mode: str = "Standard"  # or "Knative"
    canary_traffic_percent: int = 0  # 0: replace the model at once
    timeout_seconds: float = 600.0
    poll_seconds: float = 5.0
    min_replicas: int = 1
    max_replicas: int = 2
    resources: dict = field(
        default_factory=lambda: {
            "requests": {"cpu": "250m", "memory": "512Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    )

    def check(self) -> None:
        if self.deployment_mode not in ("Standard", "Knative"):
            raise ConfigError(f"deployment_mode must be Standard or Knative, not {self.deployment_mode!r}")
        if not 0 <= self.canary_traffic_percent < 100:
            raise ConfigError("canary_traffic_percent must be in 0..99 (0: no canary)")
        if self.canary_traffic_percent and self.deployment_mode != "Knative":
            raise ConfigError(
                "a canary traffic share needs KServe's Knative (serverless) deployment mode; in Standard mode "
                "set canary_traffic_percent to 0 (the new model is smoke-tested, and rolled back on failure)"
            )


@dataclass
class KServeDeployment:
    name: str
    namespace: str
    url: str
    storage_uri: str
    status: str  # "created" | "updated" | "unchanged"
    previous_storage_uri: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inference_service(name: str, storage_uri: str, settings: KServeSettings) -> dict:
    predictor: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "model": {
            "modelFormat": {"name": MODEL_FORMAT, "version": "1"},
            "runtime": settings.runtime,
            "protocolVersion": "v2",
            "storageUri": storage_uri,
            "resources": settings.resources,
        },
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "kfp-tabular"},
            "annotations": {"serving.kserve.io/deploymentMode": settings.deployment_mode},
        },
        "spec": {"predictor": predictor},
    }


def conditions_text(isvc: dict) -> str:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    if not conditions:
        return "no status conditions yet"
    return "; ".join(
        f"{c.get('type')}={c.get('status')}"
        + (f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") or c.get("message") else "")
        for c in conditions
    )


class InferenceServices:
    """The few calls the deploy step makes, over ``kubernetes.client.CustomObjectsApi`` (plain dicts)."""

    def __init__(self, api, namespace: str):
        self.api, self.namespace = api, namespace

    def get(self, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, body: dict) -> dict:
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def patch(self, name: str, patch: dict) -> dict:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)


def wait_ready(services: InferenceServices, name: str, generation: int, settings: KServeSettings) -> dict:
    deadline = time.monotonic() + settings.timeout_seconds
    while True:
        isvc = services.get(name) or {}
        status = isvc.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        if ready and status.get("observedGeneration", generation) >= generation:
            return isvc
        if time.monotonic() > deadline:
            raise DeployError(
                f"InferenceService {settings.namespace}/{name} not Ready after {settings.timeout_seconds:.0f}s: "
                f"{conditions_text(isvc)}"
            )
        time.sleep(settings.poll_seconds)


def endpoint(isvc: dict) -> str:
    status = isvc.get("status") or {}
    url = (status.get("address") or {}).get("url") or status.get("url")
    if not url:
        raise DeployError(
            f"InferenceService {isvc['metadata']['name']} is Ready but has no URL: {conditions_text(isvc)}"
        )
    return url.rstrip("/")


def smoke_test(
    url: str, name: str, rows: list[dict], expected: list[dict], post: Callable, tolerance: float = 1e-6
) -> None:
    """V1 request with ``rows``; the answers must match ``expected`` (labels exactly, numbers within tolerance)."""
    response = post(f"{url}/v1/models/{name}:predict", {"instances": rows})
    if response.status_code != 200:
        raise DeployError(f"smoke test: {url} answered HTTP {response.status_code}: {response.text[:500]}")
    got = response.json().get("predictions")
    if not isinstance(got, list) or len(got) != len(expected):
        raise DeployError(
            f"smoke test: expected {len(expected)} predictions from {url}, got {str(got)[:200]}"
        )
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        if isinstance(b, dict):
            same = a.get("label") == b["label"] and all(
                abs(a.get("probabilities", {}).get(k, np.inf) - v) <= tolerance
                for k, v in b["probabilities"].items()
            )
        else:
            same = abs(float(a) - float(b)) <= tolerance * max(1.0, abs(float(b)))
        if not same:
            raise DeployError(f"smoke test: row {i} answered {a}, the evaluated model answers {b}")


def deploy_kserve(
    *,
    name: str,
    storage_uri: str,
    settings: KServeSettings,
    api,
    smoke_rows: list[dict],
    expected: list[dict],
    post: Callable,
) -> KServeDeployment:
    settings.check()
    services = InferenceServices(api, settings.namespace)
    current = services.get(name)
    if current is None:
        log.info("creating InferenceService %s/%s -> %s", settings.namespace, name, storage_uri)
        created = services.create(inference_service(name, storage_uri, settings))
        generation = created.get("metadata", {}).get("generation", 1)
        try:
            isvc = wait_ready(services, name, generation, settings)
            url = endpoint(isvc)
            smoke_test(url, name, smoke_rows, expected, post)
        except DeployError as exc:
            log.error("rollout failed (%s); deleting the new InferenceService %s", exc, name)
            services.delete(name)
            raise DeployError(f"{exc}; the new InferenceService was deleted") from exc
        log.info("InferenceService %s Ready at %s; smoke test passed", name, url)
        return KServeDeployment(name, settings.namespace, url, storage_uri, "created")

    previous = current["spec"]["predictor"]["model"]["storageUri"]
    if previous == storage_uri and not current["spec"]["predictor"].get("canaryTrafficPercent"):
        isvc = wait_ready(services, name, current["metadata"].get("generation", 1), settings)
        return KServeDeployment(name, settings.namespace, endpoint(isvc), storage_uri, "unchanged", previous)

    predictor_patch: dict[str, Any] = {"model": {"storageUri": storage_uri}}
    if settings.canary_traffic_percent:
        predictor_patch["canaryTrafficPercent"] = settings.canary_traffic_percent
    log.info(
        "patching InferenceService %s: %s -> %s%s",
        name,
        previous,
        storage_uri,
        f" (canary {settings.canary_traffic_percent}%)" if settings.canary_traffic_percent else "",
    )
    patched = services.patch(name, {"spec": {"predictor": predictor_patch}})
    try:
        isvc = wait_ready(services, name, patched.get("metadata", {}).get("generation", 1), settings)
        url = endpoint(isvc)
        smoke_test(url, name, smoke_rows, expected, post)
        if settings.canary_traffic_percent:
            log.info("canary passed: promoting %s to 100%%", storage_uri)
            promoted = services.patch(name, {"spec": {"predictor": {"canaryTrafficPercent": 100}}})
            wait_ready(services, name, promoted.get("metadata", {}).get("generation", 1), settings)
    except DeployError as exc:
        log.error("rollout failed (%s); rolling back to %s", exc, previous)
        rollback: dict[str, Any] = {"model": {"storageUri": previous}}
        if settings.canary_traffic_percent:
            rollback["canaryTrafficPercent"] = 100
        restored = services.patch(name, {"spec": {"predictor": rollback}})
        try:
            wait_ready(services, name, restored.get("metadata", {}).get("generation", 1), settings)
            note = f"rolled back to {previous}"
        except DeployError as again:
            note = f"rollback to {previous} did not become Ready either: {again}"
        raise DeployError(f"{exc}; {note}") from exc
    log.info("InferenceService %s serves %s at %s; smoke test passed", name, storage_uri, url)
    return KServeDeployment(name, settings.namespace, url, storage_uri, "updated", previous)
