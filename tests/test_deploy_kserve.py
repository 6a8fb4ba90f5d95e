"""The kserve deploy target against a fake Kubernetes API on 127.0.0.1 (no cluster): create, patch,
wait, timeout, smoke-test failure, rollback and canary. The fake stores InferenceServices, applies
merge patches, bumps generations, reports Ready after a few reads, and serves each model's endpoint."""

from __future__ import annotations

import copy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jsonschema
import pytest
import yaml

from components.common.errors import ConfigError
from components.deploy.kserve import DeployError, KServeSettings, deploy_kserve, inference_service
from tests.test_manifests import crd_schemas

NS, NAME = "kfp-tabular", "penguins"
ROWS = [{"island": "Dream", "bill_length_mm": 49.0}, {"island": "Biscoe", "bill_length_mm": 48.6}]
EXPECTED = [
    {"label": "Chinstrap", "probabilities": {"Adelie": 0.01, "Chinstrap": 0.98, "Gentoo": 0.01}},
    {"label": "Gentoo", "probabilities": {"Adelie": 0.0, "Chinstrap": 0.0, "Gentoo": 1.0}},
]
WRONG = [dict(EXPECTED[0], label="Adelie"), EXPECTED[1]]


def merge(target: dict, patch: dict) -> dict:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class FakeCluster:
    """A Kubernetes API for inferenceservices, and the model endpoints behind them."""

    def __init__(self, answers: dict[str, list], ready_after: int | None = 2):
        self.answers = answers  # storageUri -> the predictions its endpoint gives
        self.ready_after = ready_after  # reads after a change until Ready (None: never)
        self.objects: dict[str, dict] = {}
        self.reads: dict[str, int] = {}
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

    def add(self, storage_uri: str) -> None:
        obj = inference_service(NAME, storage_uri, KServeSettings())
        obj["metadata"]["generation"] = 1
        self.objects[NAME], self.reads[NAME] = obj, 10**6

    def storage_uri(self) -> str:
        return self.objects[NAME]["spec"]["predictor"]["model"]["storageUri"]

    def handle(self, verb: str, path: str, body: dict | None):
        with self.lock:
            self.requests.append((verb, path, body))
            model = re.fullmatch(r"/endpoint/(\d+)/v1/models/(.+):predict", path)
            if model:
                uri = list(self.answers)[int(model.group(1))]
                return 200, {"predictions": self.answers[uri]}
            match = re.fullmatch(
                rf"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices(?:/([^/?]+))?.*", path
            )
            if not match:
                return 404, {"kind": "Status", "code": 404, "message": f"no route {path}"}
            name = match.group(1)
            if verb == "POST":
                obj = copy.deepcopy(body)
                obj["metadata"]["generation"] = 1
                self.objects[obj["metadata"]["name"]], self.reads[obj["metadata"]["name"]] = obj, 0
                return 201, obj
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
                return 200, {"kind": "Status", "status": "Success"}
            if verb == "PATCH":
                merge(obj, body)
                obj["metadata"]["generation"] += 1
                self.reads[name] = 0
                return 200, obj
            self.reads[name] += 1
            return 200, self.with_status(obj, self.reads[name])

    def with_status(self, obj: dict, reads: int) -> dict:
        obj = copy.deepcopy(obj)
        ready = self.ready_after is not None and reads >= self.ready_after
        uri = obj["spec"]["predictor"]["model"]["storageUri"]
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [
                {
                    "type": "PredictorReady",
                    "status": str(ready),
                    **(
                        {}
                        if ready
                        else {
                            "reason": "ModelLoadFailed",
                            "message": f"storage initializer cannot read {uri}",
                        }
                    ),
                },
                {"type": "Ready", "status": str(ready)},
            ],
        }
        if ready:
            obj["status"]["address"] = {"url": f"{self.url}/endpoint/{list(self.answers).index(uri)}"}
        return obj

    def close(self):
        self.server.shutdown()


def post(url, body):
    return httpx.post(url, json=body, timeout=10)


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
        post=post,
    )


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
    assert (result.status, result.url) == ("created", f"{cluster.url}/endpoint/0")
    created = next(body for verb, _, body in cluster.requests if verb == "POST")
    assert created["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert created["spec"]["predictor"]["model"]["modelFormat"]["name"] == "kfp-tabular"
    schemas = crd_schemas()
    jsonschema.Draft7Validator(schemas[("serving.kserve.io/v1beta1", "InferenceService")]).validate(created)
    smoke = [body for verb, path, body in cluster.requests if path.endswith(":predict")]
    assert smoke == [{"instances": ROWS}]


def test_patch_existing_on_fake_api(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v2": EXPECTED})
    cluster.add("s3://m/v1")
    result = run(cluster, "s3://m/v2")
    assert (result.status, result.previous_storage_uri) == ("updated", "s3://m/v1")
    assert cluster.storage_uri() == "s3://m/v2"
    patches = [body for verb, _, body in cluster.requests if verb == "PATCH"]
    assert patches == [{"spec": {"predictor": {"model": {"storageUri": "s3://m/v2"}}}}]


def test_same_model_on_fake_api_is_unchanged(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED})
    cluster.add("s3://m/v1")
    assert run(cluster, "s3://m/v1").status == "unchanged"
    assert not [verb for verb, _, _ in cluster.requests if verb in ("PATCH", "POST")]


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


def test_canary_on_fake_api_is_promoted_on_success(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/v2": EXPECTED})
    cluster.add("s3://m/v1")
    result = run(cluster, "s3://m/v2", deployment_mode="Knative", canary_traffic_percent=10)
    assert result.status == "updated"
    patches = [body["spec"]["predictor"] for verb, _, body in cluster.requests if verb == "PATCH"]
    assert patches == [
        {"model": {"storageUri": "s3://m/v2"}, "canaryTrafficPercent": 10},
        {"canaryTrafficPercent": 100},
    ]


def test_canary_on_fake_api_is_rolled_back_on_failure(cluster_factory):
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/bad": WRONG})
    cluster.add("s3://m/v1")
    with pytest.raises(DeployError, match="rolled back to s3://m/v1"):
        run(cluster, "s3://m/bad", deployment_mode="Knative", canary_traffic_percent=10)
    predictor = cluster.objects[NAME]["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://m/v1" and predictor["canaryTrafficPercent"] == 100


def test_canary_needs_knative_mode():
    with pytest.raises(ConfigError, match="Knative"):
        settings(canary_traffic_percent=10).check()


def test_role_allows_every_verb_the_target_uses(cluster_factory):
    """The Role in manifests/ grants exactly what the deploy step called on the fake API."""
    from tests.conftest import REPO

    role = next(
        d for d in yaml.safe_load_all((REPO / "manifests/base/rbac.yaml").read_text()) if d["kind"] == "Role"
    )
    allowed = set(role["rules"][0]["verbs"])
    cluster = cluster_factory(answers={"s3://m/v1": EXPECTED, "s3://m/bad": WRONG}, ready_after=2)
    run(cluster, "s3://m/v1")
    with pytest.raises(DeployError):
        run(cluster, "s3://m/bad")
    verbs = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete"}
    used = {verbs[v] for v, path, _ in cluster.requests if "/inferenceservices" in path}
    assert used <= allowed and used >= {"get", "create", "patch"}
