"""The ``kserve`` deploy target: create or patch an InferenceService, wait for it, smoke-test it.

Rollout, with everything that fails giving the InferenceService's conditions in the error:

- **first deploy**: the InferenceService ``<model_name>`` is created (no canary: there is nothing to
  compare with), waited for, smoke-tested, and deleted again on failure;
- **new model, no canary** (``canary_traffic_percent: 0``): the predictor is patched to the new
  ``storageUri``, waited for until the new pods serve, smoke-tested; on failure the previous
  ``storageUri`` is restored;
- **new model, canary, Standard mode** (KServe's ``spec.canary``, v0.20.0 and later): a canary entry
  ``m<hash>`` with the new model is added next to the untouched stable predictor; once its Deployment
  is available (``status.canaryStatuses[].ready`` and condition ``CanaryPredictorReady``), the canary's
  own Service is smoke-tested; success promotes it the way KServe documents (the stable predictor
  takes the canary's ``name`` and ``model``, the canary entry is removed: its pods become the stable
  ones without a restart), failure removes the canary entry (the stable predictor never changed);
- **new model, canary, Knative mode**: ``predictor.canaryTrafficPercent`` sends that share of the
  traffic to the new revision; success promotes it to 100%, failure restores the previous model.

What KServe v0.20.0 does with a Standard-mode canary (read from its controller): each canary is its
own Deployment and Service ``<isvc>-<canary name>-predictor``; ``trafficPercent`` sizes the canary
(``ceil(stable minReplicas * percent / 100)`` fixed replicas, taken off the stable's minReplicas,
which stays at least 1) but routes no requests: the InferenceService's address and its Service
select the stable pods only (weighted HTTPRoute backends came after v0.20.0). So this step tests the
canary through its own Service; clients of the InferenceService see the new model at promotion.

Readiness in Standard mode is judged from what that controller writes: ``status.observedGeneration``
is the stable *Deployment's* observed generation (not the InferenceService's ``metadata.generation``),
so a rollout counts as done when the address names the expected predictor Service, ``PredictorReady``
is True with reason ``NewReplicaSetAvailable`` (the Deployment's rollout finished, not just old pods
still available) and, after a patch of the stable predictor, the observed generation moved past the
one before the patch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import numpy as np

from components.common.errors import ConfigError, KfpTabularError
from components.common.logs import get_logger

log = get_logger("deploy")
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODEL_FORMAT = "kfp-tabular"
# The serving runtime's container. The v0.20.0 CRD requires spec.canary[].predictor.model.name (the
# embedded container's name; the stable predictor's is optional); KServe merges a container of the
# same name into the runtime's, so naming it changes nothing in the pod.
CONTAINER = "kserve-container"
ROLLED_OUT = "NewReplicaSetAvailable"  # PredictorReady's reason once the Deployment's rollout is complete
DNS_LABEL_MAX = 63


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


def model_spec(storage_uri: str, settings: KServeSettings) -> dict:
    return {
        "modelFormat": {"name": MODEL_FORMAT, "version": "1"},
        "runtime": settings.runtime,
        "protocolVersion": "v2",
        "storageUri": storage_uri,
        "resources": settings.resources,
    }


def inference_service(name: str, storage_uri: str, settings: KServeSettings) -> dict:
    predictor: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "minReplicas": settings.min_replicas,
        "maxReplicas": settings.max_replicas,
        "model": model_spec(storage_uri, settings),
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


def predictor_service(isvc_name: str, predictor_name: str = "") -> str:
    """The Deployment and Service KServe makes for a predictor (``constants.PredictorServiceName``)."""
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def canary_name(storage_uri: str, taken: str) -> str:
    """A canary ``predictor.name`` for this model, distinct from the stable predictor's name ``taken``."""
    for salt in range(100):
        digest = hashlib.sha256(
            f"{storage_uri}#{salt}".encode() if salt else storage_uri.encode()
        ).hexdigest()
        if (name := f"m{digest[:8]}") != taken:
            return name
    raise AssertionError("unreachable: 100 distinct hashes")


def canary_entry(name: str, storage_uri: str, settings: KServeSettings) -> dict:
    """A ``spec.canary`` item: the stable predictor's model with the new ``storageUri``. No replica
    fields: a canary has fixed replicas sized by its share, and KServe refuses maxReplicas/scaleTarget."""
    model = {"name": CONTAINER, **model_spec(storage_uri, settings)}
    return {
        "predictor": {"name": name, "serviceAccountName": settings.service_account, "model": model},
        "trafficPercent": settings.canary_traffic_percent,
    }


def condition(isvc: dict, kind: str) -> dict | None:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def is_true(isvc: dict, kind: str) -> bool:
    return (condition(isvc, kind) or {}).get("status") == "True"


def canary_statuses(isvc: dict) -> list[dict]:
    return (isvc.get("status") or {}).get("canaryStatuses") or []


def conditions_text(isvc: dict) -> str:
    conditions = (isvc.get("status") or {}).get("conditions") or []
    text = (
        "; ".join(
            f"{c.get('type')}={c.get('status')}"
            + (f" ({c.get('reason')}: {c.get('message')})" if c.get("reason") or c.get("message") else "")
            for c in conditions
        )
        or "no status conditions yet"
    )
    for canary in canary_statuses(isvc):
        text += (
            f"; canary {canary.get('name')}: ready={canary.get('ready')}, "
            f"trafficPercent={canary.get('trafficPercent')}"
        )
    return text


def address_service(isvc: dict) -> str:
    """The Service the InferenceService's address names (Standard mode: the stable predictor's)."""
    url = ((isvc.get("status") or {}).get("address") or {}).get("url") or ""
    return (urlsplit(url).hostname or "").split(".", 1)[0]


def service_url(isvc: dict, service: str, namespace: str) -> str:
    """The URL of ``service`` in the InferenceService's namespace, shaped like the stable address KServe
    writes (``http://<service>.<namespace>.svc.<cluster domain>``, with its port if it has one)."""
    url = urlsplit(((isvc.get("status") or {}).get("address") or {}).get("url") or "")
    host = url.hostname or ""
    suffix = host.split(".", 1)[1] if host.count(".") >= 2 else f"{namespace}.svc.cluster.local"
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme or 'http'}://{service}.{suffix}{port}"


def observed_generation(isvc: dict | None) -> int:
    return int(((isvc or {}).get("status") or {}).get("observedGeneration") or 0)


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
        """A JSON merge patch (``None`` deletes a field, a list replaces the whole list)."""
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)

    def delete(self, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)


Check = Callable[[dict], bool]


def knative_ready(generation: int) -> Check:
    return lambda isvc: is_true(isvc, "Ready") and observed_generation(isvc) >= generation


def standard_ready(service: str, after_generation: int | None = None) -> Check:
    """Standard mode: the address names ``service``, its Deployment finished rolling out and, after a
    patch of that Deployment, the observed generation moved past ``after_generation``."""

    def check(isvc: dict) -> bool:
        predictor = condition(isvc, "PredictorReady") or {}
        return (
            is_true(isvc, "Ready")
            and predictor.get("status") == "True"
            and predictor.get("reason") == ROLLED_OUT
            and address_service(isvc) == service
            and (after_generation is None or observed_generation(isvc) > after_generation)
        )

    return check


def canary_ready(name: str) -> Check:
    """The canary's Deployment has an available replica (what v0.20.0 reports as ``ready``)."""

    def check(isvc: dict) -> bool:
        entry = next((c for c in canary_statuses(isvc) if c.get("name") == name), None)
        return (
            entry is not None
            and entry.get("ready") is True
            and is_true(isvc, "CanaryPredictorReady")
            and is_true(isvc, "Ready")
        )

    return check


def without_canary(ready: Check) -> Check:
    """No canary left in the status (the controller saw the entry go) and ``ready``."""
    return lambda isvc: (
        not canary_statuses(isvc) and condition(isvc, "CanaryPredictorReady") is None and ready(isvc)
    )


def wait_for(
    services: InferenceServices, name: str, settings: KServeSettings, check: Check, what: str = ""
) -> dict:
    deadline = time.monotonic() + settings.timeout_seconds
    while True:
        isvc = services.get(name) or {}
        if check(isvc):
            return isvc
        if time.monotonic() > deadline:
            raise DeployError(
                f"{what}InferenceService {settings.namespace}/{name} not Ready after "
                f"{settings.timeout_seconds:.0f}s: {conditions_text(isvc)} (its pods: kubectl get pods -n "
                f"{settings.namespace} -l serving.kserve.io/inferenceservice={name})"
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
    try:
        response = post(f"{url}/v1/models/{name}:predict", {"instances": rows})
    except Exception as exc:  # connection refused, DNS, timeout: the endpoint does not answer
        raise DeployError(f"smoke test: {url} did not answer: {type(exc).__name__}: {exc}") from exc
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


@dataclass
class _Rollout:
    """One call of ``deploy_kserve``: the service, the new model and how to smoke-test an endpoint."""

    services: InferenceServices
    name: str
    storage_uri: str
    settings: KServeSettings
    smoke: Callable[[str], None]

    @property
    def knative(self) -> bool:
        return self.settings.deployment_mode == "Knative"

    def wait(self, check: Check, what: str = "") -> dict:
        return wait_for(self.services, self.name, self.settings, check, what)

    def done(self, url: str, status: str, previous: str = "") -> KServeDeployment:
        return KServeDeployment(self.name, self.settings.namespace, url, self.storage_uri, status, previous)

    def roll_back(
        self, exc: DeployError, patch: dict, check: Callable[[dict], Check], done: str, failed: str
    ) -> NoReturn:
        """Apply ``patch``, wait for ``check(patched object)``, and fail with ``exc`` and how that went."""
        restored = self.services.patch(self.name, patch)
        try:
            self.wait(check(restored))
            note = done
        except DeployError as again:
            note = f"{failed}: {again}"
        raise DeployError(f"{exc}; {note}") from exc


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
    run = _Rollout(
        InferenceServices(api, settings.namespace),
        name,
        storage_uri,
        settings,
        (lambda url: smoke_test(url, name, smoke_rows, expected, post))
        if smoke_rows
        else (
            lambda url: log.info(
                "no smoke-test rows given (a rollback to a known version): %s not tested", url
            )
        ),
    )
    current = run.services.get(name)
    if current is None:
        return _create(run)
    predictor = current["spec"]["predictor"]
    previous = predictor["model"]["storageUri"]
    if previous == storage_uri and not predictor.get("canaryTrafficPercent"):
        return _unchanged(run, current)
    if settings.canary_traffic_percent and not run.knative:
        return _standard_canary(run, current)
    return _replace(run, current)


def _create(run: _Rollout) -> KServeDeployment:
    name, settings = run.name, run.settings
    log.info("creating InferenceService %s/%s -> %s", settings.namespace, name, run.storage_uri)
    created = run.services.create(inference_service(name, run.storage_uri, settings))
    ready = (
        knative_ready(created.get("metadata", {}).get("generation", 1))
        if run.knative
        else standard_ready(predictor_service(name))
    )
    try:
        url = endpoint(run.wait(ready))
        run.smoke(url)
    except DeployError as exc:
        log.error("rollout failed (%s); deleting the new InferenceService %s", exc, name)
        run.services.delete(name)
        raise DeployError(f"{exc}; the new InferenceService was deleted") from exc
    log.info("InferenceService %s Ready at %s; smoke test passed", name, url)
    return run.done(url, "created")


def _unchanged(run: _Rollout, current: dict) -> KServeDeployment:
    """The model is already the stable one; a canary left over from an interrupted run is removed."""
    stable = predictor_service(run.name, current["spec"]["predictor"].get("name", ""))
    if run.knative:
        ready = knative_ready(current["metadata"].get("generation", 1))
    else:
        ready = standard_ready(stable)
        if current["spec"].get("canary"):
            log.warning("removing a leftover canary from InferenceService %s", run.name)
            run.services.patch(run.name, {"spec": {"canary": None}})
            ready = without_canary(ready)
    url = endpoint(run.wait(ready))
    return run.done(url, "unchanged", run.storage_uri)


def _replace(run: _Rollout, current: dict) -> KServeDeployment:
    """Patch the stable predictor to the new model (Knative: as a canary revision when a share is set)."""
    name, settings = run.name, run.settings
    spec = current["spec"]
    previous = spec["predictor"]["model"]["storageUri"]
    stable = predictor_service(name, spec["predictor"].get("name", ""))
    knative_canary = run.knative and settings.canary_traffic_percent

    def rolled_out(patched: dict, before: int) -> Check:
        if run.knative:
            return knative_ready(patched.get("metadata", {}).get("generation", 1))
        return standard_ready(stable, after_generation=before)

    body: dict[str, Any] = {"spec": {"predictor": {"model": {"storageUri": run.storage_uri}}}}
    if knative_canary:
        body["spec"]["predictor"]["canaryTrafficPercent"] = settings.canary_traffic_percent
    if spec.get("canary"):
        body["spec"]["canary"] = None  # a Standard-mode canary left over from an interrupted run
    log.info(
        "patching InferenceService %s: %s -> %s%s",
        name,
        previous,
        run.storage_uri,
        f" (canary {settings.canary_traffic_percent}%)" if knative_canary else "",
    )
    patched = run.services.patch(name, body)
    try:
        url = endpoint(run.wait(rolled_out(patched, observed_generation(current))))
        run.smoke(url)
        if knative_canary:
            log.info("canary passed: promoting %s to 100%%", run.storage_uri)
            promoted = run.services.patch(name, {"spec": {"predictor": {"canaryTrafficPercent": 100}}})
            run.wait(knative_ready(promoted.get("metadata", {}).get("generation", 1)))
    except DeployError as exc:
        log.error("rollout failed (%s); rolling back to %s", exc, previous)
        rollback: dict[str, Any] = {"model": {"storageUri": previous}}
        if knative_canary:
            rollback["canaryTrafficPercent"] = 100
        before = observed_generation(run.services.get(name))
        run.roll_back(
            exc,
            {"spec": {"predictor": rollback}},
            lambda restored: rolled_out(restored, before),
            f"rolled back to {previous}",
            f"rollback to {previous} did not become Ready either",
        )
    log.info("InferenceService %s serves %s at %s; smoke test passed", name, run.storage_uri, url)
    return run.done(url, "updated", previous)


def _standard_canary(run: _Rollout, current: dict) -> KServeDeployment:
    """KServe's Standard-mode canary: add, wait, smoke-test its own Service, then promote or remove it."""
    name, settings = run.name, run.settings
    predictor = current["spec"]["predictor"]
    previous, stable_name = predictor["model"]["storageUri"], predictor.get("name", "")
    canary = canary_name(run.storage_uri, taken=stable_name)
    canary_service = predictor_service(name, canary)
    if len(canary_service) > DNS_LABEL_MAX:
        raise ConfigError(
            f"a canary of {name!r} needs a Service named {canary_service!r}, longer than {DNS_LABEL_MAX} "
            f"characters: use a shorter model_name, or canary_traffic_percent 0"
        )
    entry = canary_entry(canary, run.storage_uri, settings)
    if current["spec"].get("canary"):
        log.warning("replacing a leftover canary of InferenceService %s", name)
    log.info(
        "InferenceService %s: canary %s -> %s (%d%%) next to %s",
        name,
        canary,
        run.storage_uri,
        settings.canary_traffic_percent,
        previous,
    )
    run.services.patch(name, {"spec": {"canary": [entry]}})
    try:
        isvc = run.wait(canary_ready(canary), f"canary {canary} of ")
        run.smoke(service_url(isvc, canary_service, settings.namespace))
    except DeployError as exc:
        log.error("canary failed (%s); removing canary %s", exc, canary)
        run.roll_back(
            exc,
            {"spec": {"canary": None}},
            lambda _: without_canary(lambda isvc: is_true(isvc, "Ready")),
            f"canary {canary} removed, {previous} still serves all traffic (rolled back)",
            f"removing canary {canary} did not finish",
        )

    log.info("canary %s passed: promoting it to the stable predictor", canary)
    promoted = entry["predictor"]["model"]
    run.services.patch(name, {"spec": {"predictor": {"name": canary, "model": promoted}, "canary": None}})
    try:
        url = endpoint(run.wait(without_canary(standard_ready(canary_service))))
        run.smoke(url)
    except DeployError as exc:
        log.error("promotion failed (%s); restoring %s", exc, previous)
        model = {key: None for key in promoted if key not in predictor["model"]} | predictor["model"]
        run.roll_back(
            exc,
            {"spec": {"predictor": {"name": stable_name or None, "model": model}}},
            lambda _: standard_ready(predictor_service(name, stable_name)),
            f"rolled back to {previous}",
            f"rollback to {previous} did not become Ready either",
        )
    log.info("InferenceService %s serves %s at %s; smoke tests passed", name, run.storage_uri, url)
    return run.done(url, "updated", previous)
