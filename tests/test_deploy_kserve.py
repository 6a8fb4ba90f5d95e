"""The kserve deploy target against a fake Kubernetes API on 127.0.0.1 (no cluster): create, patch,
wait, timeout, smoke-test failure, rollback, and canaries in both deployment modes.

The fake stores InferenceServices, applies JSON merge patches, bumps generations, and refuses (HTTP 422)
every object that the KServe v0.20.0 CRD schema or the webhook's canary rules refuse. Behind each
InferenceService it keeps the Deployments KServe v0.20.0's controller makes (Standard mode: one per
predictor, ``<isvc>[-<name>]-predictor``, a canary its own) and reports them the way that controller
does: ``status.observedGeneration`` is the stable Deployment's, ``PredictorReady`` is True with reason
``MinimumReplicasAvailable`` while old pods still serve during a rollout and ``NewReplicaSetAvailable``
once it is done, ``status.canaryStatuses`` and ``CanaryPredictorReady`` report canaries, the address
names the stable predictor's Service; the first read after a patch still shows the status from before
it (the controller has not reconciled yet). Requests to ``http://<service>.<namespace>.svc.cluster.local``
reach whatever model that Service's pods serve at that moment (503 while none)."""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
import yaml

from components.common.errors import ConfigError
from components.deploy.kserve import (
    DeployError,
    KServeSettings,
    canary_entry,
    deploy_kserve,
    inference_service,
    predictor_service,
    smoke_test,
)
from tests.test_manifests import crd_schemas

NS, NAME = "kfp-tabular", "penguins"
ROWS = [{"island": "Dream", "bill_length_mm": 49.0}, {"island": "Biscoe", "bill_length_mm": 48.6}]
EXPECTED = [
    {"label": "Chinstrap", "probabilities": {"Adelie": 0.01, "Chinstrap": 0.98, "Gentoo": 0.01}},
    {"label": "Gentoo", "probabilities": {"Adelie": 0.0, "Chinstrap": 0.0, "Gentoo": 1.0}},
]
WRONG = [dict(EXPECTED[0], label="Adelie"), EXPECTED[1]]
ISVC_KEY = ("serving.kserve.io/v1beta1", "InferenceService")


def merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch, as the API server applies it to custom objects."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def webhook_errors(obj: dict) -> list[str]:
    """The canary rules of KServe v0.20.0's validating webhook (validateCanarySpecs)."""
    spec, errors = obj["spec"], []
    canaries = spec.get("canary") or []
    if not canaries:
        return errors
    if obj["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode") != "Standard":
        errors.append("canary is only supported in Standard deployment mode")
    if not (spec["predictor"].get("model") or {}).get("storageUri"):
        errors.append("canary requires a stable predictor with a model")
    names = [c["predictor"].get("name", "") for c in canaries]
    if "" in names or len(set(names)) != len(names) or spec["predictor"].get("name", "") in names:
        errors.append(f"canary predictor names {names} must be set, distinct, and not the stable's")
    for c in canaries:
        if set(c["predictor"]) & {"maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "workerSpec"}:
            errors.append(f"canary {c['predictor'].get('name')} must not set autoscaling fields")
    if sum(c["trafficPercent"] for c in canaries) > 100:
        errors.append("sum of canary trafficPercent values must be <= 100")
    return errors


class FakeCluster:
    """A Kubernetes API for inferenceservices, KServe v0.20.0's view of them, and the endpoints behind them."""

    def __init__(self, answers: dict[str, list], ready_after: int | None = 2, broken: tuple = ()):
        self.answers = answers  # storageUri -> the predictions its pods give
        self.ready_after = ready_after  # controller passes (status reads) until new pods serve; None: never
        self.broken = set(broken)  # storageUris whose pods never become available
        self.schema = crd_schemas()[ISVC_KEY]
        self.objects: dict[str, dict] = {}
        self.stale: dict | None = None  # what the first read after a patch shows: the controller lags
        self.deployments: dict[str, dict] = {}  # name -> {uri, generation, age, serving}
        self.requests: list[tuple[str, str, dict | None]] = []
        self.lock = threading.Lock()
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self):
                length = int(self.headers.get("content-length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(*cluster.handle("GET", self.path, None))

            def do_POST(self):
                self._send(*cluster.handle("POST", self.path, self._body()))

            def do_PATCH(self):
                self._send(*cluster.handle("PATCH", self.path, self._body()))

            def do_DELETE(self):
                self._send(*cluster.handle("DELETE", self.path, self._body()))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def api(self):
        from kubernetes import client

        config = client.Configuration()
        config.host = self.url
        return client.CustomObjectsApi(client.ApiClient(config))

    def post(self, url: str, body: dict):
        """The deploy step's HTTP client inside the cluster: ``<service>.<namespace>.svc...`` resolves here."""
        parts = urlsplit(url)
        return httpx.post(f"{self.url}/svc/{parts.hostname}{parts.path}", json=body, timeout=10)

    def add(self, storage_uri: str, mode: str = "Standard", canary: str = "") -> None:
        """An InferenceService that has served ``storage_uri`` for a while. Its generation and its
        Deployment's are deliberately unrelated, as on a cluster after a few rollouts."""
        obj = inference_service(NAME, storage_uri, KServeSettings(deployment_mode=mode))
        obj["metadata"]["generation"] = 7
        if canary:
            obj["spec"]["canary"] = [
                canary_entry("mleftover", canary, KServeSettings(canary_traffic_percent=5))
            ]
        self.validate(obj)
        self.objects[NAME] = obj
        for name, uri in self.desired(obj).items():
            self.deployments[name] = {"uri": uri, "generation": 3, "age": 10**6, "serving": uri}

    def storage_uri(self) -> str:
        return self.objects[NAME]["spec"]["predictor"]["model"]["storageUri"]

    def validate(self, obj: dict) -> None:
        errors = [e.message for e in jsonschema.Draft7Validator(self.schema).iter_errors(obj)]
        errors += webhook_errors(obj)
        if errors:
            raise ValueError("; ".join(errors))

    @staticmethod
    def standard(obj: dict) -> bool:
        return obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"

    def desired(self, obj: dict) -> dict[str, str]:
        """Deployment name -> storageUri, as the controller derives them from the spec."""
        name, spec = obj["metadata"]["name"], obj["spec"]
        if not self.standard(obj):  # Knative: one service; revisions and traffic are not modelled
            return {name: spec["predictor"]["model"]["storageUri"]}
        wanted = {
            predictor_service(name, spec["predictor"].get("name", "")): spec["predictor"]["model"][
                "storageUri"
            ]
        }
        for canary in spec.get("canary") or []:
            wanted[predictor_service(name, canary["predictor"]["name"])] = canary["predictor"]["model"][
                "storageUri"
            ]
        return wanted

    def reconcile(self, obj: dict) -> None:
        """One pass of the controller and of the Deployments' pods."""
        wanted = self.desired(obj)
        for name in [n for n in self.deployments if n not in wanted]:
            del self.deployments[name]  # orphans: a removed canary, the old stable after a promotion
        for name, uri in wanted.items():
            deployment = self.deployments.setdefault(
                name, {"uri": uri, "generation": 1, "age": 0, "serving": None}
            )
            if deployment["uri"] != uri:  # a new pod template: rolling update, old pods keep serving
                deployment.update(uri=uri, generation=deployment["generation"] + 1, age=0)
            deployment["age"] += 1
            if (
                self.ready_after is not None
                and uri not in self.broken
                and deployment["age"] >= self.ready_after
            ):
                deployment["serving"] = uri

    def with_status(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        name, spec = obj["metadata"]["name"], obj["spec"]
        if not self.standard(obj):
            deployment = self.deployments[name]
            ready = deployment["serving"] == deployment["uri"]
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"],
                "conditions": [
                    {"type": "PredictorReady", "status": str(ready)},
                    {"type": "Ready", "status": str(ready)},
                ],
                "address": {"url": f"http://{name}.{NS}.svc.cluster.local"},
            }
            return obj
        stable_name = predictor_service(name, spec["predictor"].get("name", ""))
        stable = self.deployments[stable_name]
        if stable["serving"] == stable["uri"]:
            predictor = {"status": "True", "reason": "NewReplicaSetAvailable", "message": "rolled out"}
        elif stable["serving"]:
            predictor = {"status": "True", "reason": "MinimumReplicasAvailable", "message": "rolling update"}
        else:
            predictor = {
                "status": "False",
                "reason": "ModelLoadFailed",
                "message": f"storage initializer cannot read {stable['uri']}",
            }
        conditions = [
            {"type": "IngressReady", "status": "True"},
            {"type": "PredictorReady", **predictor},
            {"type": "Ready", **predictor},
        ]
        status = {
            "observedGeneration": stable["generation"],
            "deploymentMode": "Standard",
            "address": {"url": f"http://{stable_name}.{NS}.svc.cluster.local"},
            "conditions": conditions,
        }
        canaries = spec.get("canary") or []
        if canaries:
            status["canaryStatuses"] = [
                {
                    "name": c["predictor"]["name"],
                    "ready": self.deployments[predictor_service(name, c["predictor"]["name"])]["serving"]
                    is not None,
                    "trafficPercent": c["trafficPercent"],
                }
                for c in canaries
            ]
            ready = all(c["ready"] for c in status["canaryStatuses"])
            conditions.append(
                {
                    "type": "CanaryPredictorReady",
                    "status": str(ready),
                    "reason": "AllCanariesReady" if ready else "CanariesNotReady",
                }
            )
        obj["status"] = status
        jsonschema.Draft7Validator(self.schema).validate(obj)  # the fake's status has the CRD's shape
        return obj

    def endpoint(self, host: str, path: str):
        service = host.split(".", 1)[0]
        deployment = self.deployments.get(service)
        if deployment is None or deployment["serving"] is None:
            return 503, {"error": f"no endpoints available for service {service}"}
        if not re.fullmatch(r"/v1/models/[^/]+:predict", path):
            return 404, {"error": f"no route {path}"}
        return 200, {"predictions": self.answers[deployment["serving"]]}

    def handle(self, verb: str, path: str, body: dict | None):
        with self.lock:
            self.requests.append((verb, path, body))
            service = re.fullmatch(r"/svc/([^/]+)(/.*)", path)
            if service:
                return self.endpoint(service.group(1), service.group(2))
            match = re.fullmatch(
                rf"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices(?:/([^/?]+))?.*", path
            )
            if not match:
                return 404, {"kind": "Status", "code": 404, "message": f"no route {path}"}
            name = match.group(1)
            if verb == "POST":
                obj = copy.deepcopy(body)
                obj["metadata"]["generation"] = 1
                return self.store(obj, created=True)
            if name not in self.objects:
                return 404, {
                    "kind": "Status",
                    "code": 404,
                    "reason": "NotFound",
                    "message": f"{name} not found",
                }
            obj = self.objects[name]
            if verb == "DELETE":
                del self.objects[name]
                self.deployments.clear()
                return 200, {"kind": "Status", "status": "Success"}
            if verb == "PATCH":
                changed = merge(copy.deepcopy(obj), body)
                if changed["spec"] == obj["spec"]:
                    return self.store(changed)
                changed["metadata"]["generation"] += 1
                stale = {**self.with_status(obj), "metadata": changed["metadata"], "spec": changed["spec"]}
                status, stored = self.store(changed)
                if status == 200:
                    self.stale = stale
                return status, stored
            if self.stale is not None:  # the new spec with the status of the old one
                stale, self.stale = self.stale, None
                return 200, stale
            self.reconcile(obj)
            return 200, self.with_status(obj)

    def store(self, obj: dict, created: bool = False):
        try:
            self.validate(obj)
        except ValueError as exc:
            return 422, {"kind": "Status", "code": 422, "reason": "Invalid", "message": str(exc)}
        self.objects[obj["metadata"]["name"]] = obj
        return (201 if created else 200), obj

    def patches(self) -> list[dict]:
        return [body for verb, _, body in self.requests if verb == "PATCH"]

    def smoke_hosts(self) -> list[str]:
        return [path.split("/")[2] for _, path, _ in self.requests if path.endswith(":predict")]

    def close(self):
        self.server.shutdown()


def settings(**kw) -> KServeSettings:
    return KServeSettings(**{"timeout_seconds": 2.0, "poll_seconds": 0.01, **kw})


def run(cluster: FakeCluster, uri: str, **kw):
    return deploy_kserve(
        name=NAME,
        storage_uri=uri,
        settings=settings(**kw),
        api=cluster.api(),
        smoke_rows=ROWS,
        expected=EXPECTED,
        post=cluster.post,
    )


def host(service: str) -> str:
    return f"{service}.{NS}.svc.cluster.local"


@pytest.fixture
def cluster_factory():
    made = []

    def make(**kw):
        made.append(FakeCluster(**kw))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_create_on_fake_api_waits_for_ready_and_smoke_tests(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED})
    result = run(cluster, "s3://m/v1")
    assert (result.status, result.url) == ("created", f"http://{host('penguins-predictor')}")
    created = next(body for verb, _, body in cluster.requests if verb == "POST")
    assert created["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert created["spec"]["predictor"]["model"]["modelFormat"]["name"] == "kfp-tabular"
    jsonschema.Draft7Validator(crd_schemas()[ISVC_KEY]).validate(created)
    smoke = [body for verb, path, body in cluster.requests if path.endswith(":predict")]
    assert smoke == [{"instances": ROWS}]


def test_create_with_a_canary_share_on_fake_api_is_a_plain_create(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED})
    assert run(cluster, "s3://m/v1", canary_traffic_percent=10).status == "created"
    assert "canary" not in cluster.objects[NAME]["spec"] and not cluster.patches()


def test_patch_existing_on_fake_api_waits_until_the_new_pods_serve(cluster_factory):
    """Old pods keep the InferenceService Ready during the rolling update, and its observedGeneration is
    the Deployment's (3 -> 4), not the InferenceService's (7 -> 8): the step waits for the rollout."""
    cluster = cluster_factory(answers={"s3://m/v1": WRONG, "s3://m/v2": EXPECTED}, ready_after=4)
    cluster.add("s3://m/v1")
    result = run(cluster, "s3://m/v2")
    assert (result.status, result.previous_storage_uri) == ("updated", "s3://m/v1")
    assert cluster.storage_uri() == "s3://m/v2"
    assert cluster.patches() == [{"spec": {"predictor": {"model": {"storageUri": "s3://m/v2"}}}}]
    assert cluster.smoke_hosts() == [host("penguins-predictor")]  # answered by v2: v1 answers WRONG


def test_same_model_on_fake_api_is_unchanged(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED})
    cluster.add("s3://m/v1")
    assert run(cluster, "s3://m/v1").status == "unchanged"
    assert not [verb for verb, _, _ in cluster.requests if verb in ("PATCH", "POST")]


def test_same_model_on_fake_api_removes_a_leftover_canary(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v0": EXPECTED})
    cluster.add("s3://m/v1", canary="s3://m/v0")
    assert run(cluster, "s3://m/v1").status == "unchanged"
    assert cluster.patches() == [{"spec": {"canary": None}}]
    assert list(cluster.deployments) == ["penguins-predictor"]


def test_wait_timeout_on_fake_api_names_the_conditions_and_removes_the_new_service(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED}, ready_after=None)
    with pytest.raises(DeployError) as info:
        run(cluster, "s3://m/v1", timeout_seconds=0.3)
    message = str(info.value)
    assert (
        "not Ready after" in message and "ModelLoadFailed" in message and "cannot read s3://m/v1" in message
    )
    assert NAME not in cluster.objects and "was deleted" in message


def test_smoke_failure_on_fake_api_rolls_back(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/bad": WRONG})
    cluster.add("s3://m/v1")
    with pytest.raises(DeployError, match=r"smoke test: row 0 answered .*Adelie.*; rolled back to s3://m/v1"):
        run(cluster, "s3://m/bad")
    assert cluster.storage_uri() == "s3://m/v1"
    assert cluster.deployments["penguins-predictor"]["serving"] == "s3://m/v1"


def test_smoke_test_turns_a_connection_failure_into_a_deploy_error():
    def refuse(url, body):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(DeployError, match="did not answer: ConnectError: connection refused"):
        smoke_test("http://penguins-predictor.kfp-tabular.svc.cluster.local", NAME, ROWS, EXPECTED, refuse)


def test_standard_canary_on_fake_api_is_smoke_tested_on_its_own_service_then_promoted(cluster_factory):
    # v1 answers WRONG: a smoke test that reached the stable pods instead of the canary's would fail
    cluster = cluster_factory(answers={"s3://m/v1": WRONG, "s3://m/v2": EXPECTED})
    cluster.add("s3://m/v1")
    result = run(cluster, "s3://m/v2", canary_traffic_percent=10)

    add, promote = cluster.patches()
    (entry,) = add["spec"]["canary"]
    canary = entry["predictor"]["name"]
    assert re.fullmatch(r"m[0-9a-f]{8}", canary) and add == {"spec": {"canary": [entry]}}
    assert entry["trafficPercent"] == 10 and entry["predictor"]["model"]["storageUri"] == "s3://m/v2"
    assert not {"minReplicas", "maxReplicas", "scaleTarget"} & set(entry["predictor"])
    assert promote == {
        "spec": {"predictor": {"name": canary, "model": entry["predictor"]["model"]}, "canary": None}
    }
    service = f"penguins-{canary}-predictor"
    assert cluster.smoke_hosts() == [host(service), host(service)]  # the canary, then the promoted address
    assert (result.status, result.url, result.previous_storage_uri) == (
        "updated",
        f"http://{host(service)}",
        "s3://m/v1",
    )
    spec = cluster.objects[NAME]["spec"]
    assert (
        "canary" not in spec and spec["predictor"]["name"] == canary and cluster.storage_uri() == "s3://m/v2"
    )
    # the canary's Deployment became the stable one without a new pod template; the old one is gone
    assert list(cluster.deployments) == [service] and cluster.deployments[service]["generation"] == 1


def test_standard_canary_on_fake_api_replaces_a_ready_leftover_canary(cluster_factory):
    """The first read after the patch still shows the leftover canary ready: only ours counts."""
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v0": WRONG, "s3://m/v2": EXPECTED})
    cluster.add("s3://m/v1", canary="s3://m/v0")
    assert run(cluster, "s3://m/v2", canary_traffic_percent=10).status == "updated"
    (entry,) = cluster.patches()[0]["spec"]["canary"]
    assert entry["predictor"]["name"] != "mleftover" and cluster.storage_uri() == "s3://m/v2"
    assert list(cluster.deployments) == [f"penguins-{entry['predictor']['name']}-predictor"]


def test_successive_standard_canaries_on_fake_api_get_distinct_names(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v2": EXPECTED, "s3://m/v3": EXPECTED})
    cluster.add("s3://m/v1")
    first = run(cluster, "s3://m/v2", canary_traffic_percent=20)
    second = run(cluster, "s3://m/v3", canary_traffic_percent=20)
    assert first.url != second.url and second.previous_storage_uri == "s3://m/v2"
    names = [
        p["spec"]["canary"][0]["predictor"]["name"] for p in cluster.patches() if p["spec"].get("canary")
    ]
    assert len(set(names)) == 2 and cluster.objects[NAME]["spec"]["predictor"]["name"] == names[1]
    # a plain update after promotions: observedGeneration now counts the promoted Deployment's generations
    assert run(cluster, "s3://m/v1").status == "updated" and cluster.storage_uri() == "s3://m/v1"


def test_standard_canary_smoke_failure_on_fake_api_removes_the_canary(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/bad": WRONG})
    cluster.add("s3://m/v1")
    before = copy.deepcopy(cluster.objects[NAME]["spec"])
    with pytest.raises(
        DeployError,
        match=r"smoke test: row 0 answered .*Adelie.*; canary m[0-9a-f]{8} removed, s3://m/v1 still serves all "
        r"traffic \(rolled back\)",
    ):
        run(cluster, "s3://m/bad", canary_traffic_percent=10)
    add, remove = cluster.patches()
    assert add["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == "s3://m/bad"
    assert remove == {"spec": {"canary": None}}
    assert cluster.objects[NAME]["spec"] == before  # the stable predictor was never touched
    assert list(cluster.deployments) == ["penguins-predictor"]


def test_standard_canary_promotion_failure_on_fake_api_restores_the_previous_predictor(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v2": EXPECTED})
    cluster.add("s3://m/v1")
    before = copy.deepcopy(cluster.objects[NAME]["spec"])
    calls = []

    def post(url, body):  # the canary answers; the promoted address does not
        calls.append(url)
        if len(calls) > 1:
            raise httpx.ConnectError("connection refused")
        return cluster.post(url, body)

    with pytest.raises(DeployError, match=r"did not answer: ConnectError.*; rolled back to s3://m/v1"):
        deploy_kserve(
            name=NAME,
            storage_uri="s3://m/v2",
            settings=settings(canary_traffic_percent=10),
            api=cluster.api(),
            smoke_rows=ROWS,
            expected=EXPECTED,
            post=post,
        )
    assert cluster.patches()[-1] == {
        "spec": {"predictor": {"name": None, "model": {"name": None, **before["predictor"]["model"]}}}
    }
    assert cluster.objects[NAME]["spec"] == before
    served = {name: (d["uri"], d["serving"]) for name, d in cluster.deployments.items()}
    assert served == {"penguins-predictor": ("s3://m/v1", "s3://m/v1")}  # recreated: the orphan was deleted


def test_standard_canary_that_never_becomes_ready_on_fake_api_names_the_canary_status(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v2": EXPECTED}, broken=("s3://m/v2",))
    cluster.add("s3://m/v1")
    with pytest.raises(DeployError) as info:
        run(cluster, "s3://m/v2", canary_traffic_percent=10, timeout_seconds=0.3)
    message = str(info.value)
    assert re.search(r"canary m[0-9a-f]{8} of InferenceService kfp-tabular/penguins not Ready after", message)
    assert (
        "CanaryPredictorReady=False (CanariesNotReady" in message
        and "ready=False, trafficPercent=10" in message
    )
    assert "removed, s3://m/v1 still serves all traffic" in message
    assert "canary" not in cluster.objects[NAME]["spec"] and cluster.storage_uri() == "s3://m/v1"


def test_knative_canary_on_fake_api_is_promoted_on_success(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v2": EXPECTED})
    cluster.add("s3://m/v1", mode="Knative")
    result = run(cluster, "s3://m/v2", deployment_mode="Knative", canary_traffic_percent=10)
    assert result.status == "updated"
    assert [p["spec"]["predictor"] for p in cluster.patches()] == [
        {"model": {"storageUri": "s3://m/v2"}, "canaryTrafficPercent": 10},
        {"canaryTrafficPercent": 100},
    ]


def test_knative_canary_on_fake_api_is_rolled_back_on_failure(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/bad": WRONG})
    cluster.add("s3://m/v1", mode="Knative")
    with pytest.raises(DeployError, match="rolled back to s3://m/v1"):
        run(cluster, "s3://m/bad", deployment_mode="Knative", canary_traffic_percent=10)
    predictor = cluster.objects[NAME]["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://m/v1" and predictor["canaryTrafficPercent"] == 100


def test_canary_share_is_accepted_in_both_modes_and_bounded():
    settings(canary_traffic_percent=10).check()  # Standard: spec.canary (KServe v0.20.0)
    settings(canary_traffic_percent=10, deployment_mode="Knative").check()
    with pytest.raises(ConfigError, match="0..99"):
        settings(canary_traffic_percent=100).check()


class _OneService:
    """A CustomObjectsApi that knows one InferenceService and takes no changes."""

    def __init__(self, name):
        self.obj = inference_service(name, "s3://m/v1", KServeSettings())

    def get_namespaced_custom_object(self, *args):
        return self.obj


def test_canary_needs_a_short_enough_model_name():
    name = "p" * 50  # the canary's Service "<name>-m<8 hex>-predictor" would exceed a DNS label
    with pytest.raises(ConfigError, match="longer than 63"):
        deploy_kserve(
            name=name,
            storage_uri="s3://m/v2",
            settings=settings(canary_traffic_percent=10),
            api=_OneService(name),
            smoke_rows=ROWS,
            expected=EXPECTED,
            post=None,
        )


def test_crd_requires_a_canary_model_name_and_the_fake_api_enforces_it(cluster_factory):
    """The v0.20.0 CRD keeps ``required: [modelFormat, name]`` on spec.canary[].predictor.model (KServe's
    Makefile strips ``required`` only two levels below spec), so the API server refuses a canary model
    without the container name; the stable predictor's model needs none."""
    schema = crd_schemas()[ISVC_KEY]
    isvc = inference_service(NAME, "s3://m/v1", KServeSettings())
    isvc["spec"]["canary"] = [
        canary_entry("m12345678", "s3://m/v2", KServeSettings(canary_traffic_percent=10))
    ]
    jsonschema.Draft7Validator(schema).validate(isvc)
    del isvc["spec"]["canary"][0]["predictor"]["model"]["name"]
    with pytest.raises(jsonschema.ValidationError, match="'name' is a required property"):
        jsonschema.Draft7Validator(schema).validate(isvc)

    from kubernetes.client.exceptions import ApiException

    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED})
    cluster.add("s3://m/v1")
    api = cluster.api()
    for bad in (
        {"spec": {"canary": isvc["spec"]["canary"]}},  # no model name
        {"spec": {"canary": [dict(isvc["spec"]["canary"][0], trafficPercent=101)]}},
        {"spec": {"predictor": {"minReplicas": "one"}}},
    ):
        with pytest.raises(ApiException) as info:
            api.patch_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", NS, "inferenceservices", NAME, bad
            )
        assert info.value.status == 422
    knative = inference_service("other", "s3://m/v1", KServeSettings(deployment_mode="Knative"))
    knative["spec"]["canary"] = [canary_entry("m1", "s3://m/v2", KServeSettings(canary_traffic_percent=10))]
    with pytest.raises(ApiException, match="only supported in Standard"):
        api.create_namespaced_custom_object("serving.kserve.io", "v1beta1", NS, "inferenceservices", knative)


def test_role_allows_exactly_the_verbs_the_target_uses(cluster_factory):
    """The Role in manifests/ grants exactly what the deploy step called on the fake API."""
    from tests.conftest import REPO

    role = next(
        d for d in yaml.safe_load_all((REPO / "manifests/base/rbac.yaml").read_text()) if d["kind"] == "Role"
    )
    (rule,) = role["rules"]
    answers = {"s3://m/v1": EXPECTED, "s3://m/v2": EXPECTED, "s3://m/bad": WRONG}
    cluster = cluster_factory(answers=answers, ready_after=2)
    with pytest.raises(DeployError, match="was deleted"):
        run(cluster, "s3://m/bad")  # a failed first deploy
    run(cluster, "s3://m/v1")
    with pytest.raises(DeployError, match="rolled back"):
        run(cluster, "s3://m/bad")
    run(cluster, "s3://m/v2", canary_traffic_percent=10)
    with pytest.raises(DeployError, match="rolled back"):
        run(cluster, "s3://m/bad", canary_traffic_percent=10)
    verbs = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete"}
    used = {verbs[v] for v, path, _ in cluster.requests if "/inferenceservices" in path}
    assert rule["resources"] == ["inferenceservices"] and used == set(rule["verbs"])


def test_canary_url_has_the_shape_of_the_stable_address():
    from components.deploy.kserve import service_url

    def isvc(url):
        return {"status": {"address": {"url": url}}}

    stable = "http://penguins-predictor.kfp-tabular.svc.example.org"
    assert (
        service_url(isvc(stable), "penguins-m1-predictor", NS)
        == "http://penguins-m1-predictor.kfp-tabular.svc.example.org"
    )
    headless = "http://penguins-predictor.kfp-tabular.svc.cluster.local:8080"  # serviceClusterIPNone
    assert service_url(isvc(headless), "penguins-m1-predictor", NS).endswith("svc.cluster.local:8080")
    assert (
        service_url({}, "penguins-m1-predictor", NS) == f"http://penguins-m1-predictor.{NS}.svc.cluster.local"
    )
