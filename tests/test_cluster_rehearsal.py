"""The cluster path rehearsed without a cluster: every make target through `make -n` (nothing runs), checked for
the order of the steps that matters and for what keeps it safe to run twice; the KServe release as `make deploy`
applies it; the kind workflow; and (containers tier) the image archive `make images-kind` hands to kind.
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import re
import shlex
import subprocess
import tarfile
import threading

import pytest
import yaml

from components.images import PIPELINE_IMAGE, SERVING_IMAGE
from tests.conftest import REPO
from tests.test_manifests import kubectl, render

CLUSTER_TARGETS = [
    "cluster",
    "images-kind",
    "deploy",
    "upload",
    "run-cluster",
    "predict-cluster",
    "ui-cluster",
    "rollback-cluster",
    "undeploy",
    "test-cluster",
]
WORKFLOW = REPO / ".github/workflows/e2e-kind.yml"


def versions() -> dict[str, str]:
    text = (REPO / "manifests/versions.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def dry_run(target: str, **variables: str) -> list[str]:
    """The shell commands `make -n TARGET` would run, in order (a recipe line continued with \\ is one)."""
    argv = ["make", "-n", "--no-print-directory", target] + [f"{k}={v}" for k, v in variables.items()]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    joined = re.sub(r"\\\n\s*", " ", proc.stdout)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def position(lines: list[str], pattern: str) -> tuple[int, int]:
    """(line, column) of the first match of the regular expression; fails naming it when there is none."""
    for i, line in enumerate(lines):
        if match := re.search(pattern, line):
            return i, match.start()
    pytest.fail(f"no step matches {pattern!r} in:\n" + "\n".join(lines))


def in_order(lines: list[str], *patterns: str) -> None:
    """Each pattern's first match comes strictly after the previous one's."""
    where = [position(lines, p) for p in patterns]
    assert all(a < b for a, b in itertools.pairwise(where)), list(zip(patterns, where, strict=True))


@pytest.mark.parametrize("target", CLUSTER_TARGETS)
def test_every_cluster_target_rehearses(target):
    assert dry_run(target)


def test_deploy_installs_cert_manager_and_waits_until_its_webhook_answers():
    """KServe's Certificates and Issuer go through cert-manager's webhook: its Deployments being Available is not
    enough (the CA bundle can be injected later), so a server-side dry run through the webhook must pass first."""
    lines = dry_run("deploy")
    check = REPO / "manifests/checks/cert-manager-webhook.yaml"
    assert yaml.safe_load(check.read_text())["apiVersion"].startswith("cert-manager.io/")
    in_order(
        lines,
        r"kubectl apply -f \S+/cert-manager/releases/download/v[\d.]+/cert-manager\.yaml",
        r"kubectl wait --for=condition=Available deployment --all -n cert-manager",
        r"kubectl create --dry-run=server -f manifests/checks/cert-manager-webhook\.yaml",
        r"kubectl apply .*kserve-crds\.yaml",  # KServe's first step
        r"kubectl apply --server-side -k manifests/kserve$",  # its Certificates and Issuer
    )


def test_deploy_installs_kserve_crds_then_namespace_then_the_rest():
    """As KServe's own install scripts: its release asset kserve.yaml has no Namespace and bundles a
    ClusterStorageContainer next to that kind's CRD, so CRDs come first (until Established), then the namespace."""
    lines = dry_run("deploy")
    release = f"kserve/releases/download/{versions()['KSERVE_VERSION']}"
    in_order(
        lines,
        rf"kubectl apply --server-side .*-f \S+/{release}/kserve-crds\.yaml",
        rf"kubectl wait --for=condition=Established .*-f \S+/{release}/kserve-crds\.yaml",
        r"kubectl apply --server-side -f manifests/kserve/namespace\.yaml",
        r"kubectl apply --server-side -k manifests/kserve$",
        r"kubectl wait --for=condition=Available deployment/kserve-controller-manager -n kserve",
        r"kubectl create --dry-run=server -f manifests/checks/kserve-webhook\.yaml",
        r"kubectl apply -k manifests/overlays/kind",  # our ClusterServingRuntime goes through KServe's webhook
    )
    namespace = yaml.safe_load((REPO / "manifests/kserve/namespace.yaml").read_text())
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", "kserve")
    check = yaml.safe_load((REPO / "manifests/checks/kserve-webhook.yaml").read_text())
    assert check["kind"] == "ClusterServingRuntime"


def test_deploy_installs_kfp_crds_first_and_ours_last():
    lines = dry_run("deploy")
    ref = f"ref={versions()['KFP_VERSION']}"
    in_order(
        lines,
        rf"kubectl apply -k \S+/cluster-scoped-resources\?{ref}",
        r"kubectl wait --for condition=established .*crd/applications\.app\.k8s\.io",
        rf"kubectl apply -k \S+/env/platform-agnostic\?{ref}",
        r"kubectl wait --for=condition=Available deployment --all -n kubeflow",
        r"kubectl apply -k manifests/overlays/kind",  # RoleBindings to KFP's pipeline-runner Role in kubeflow
        r"^echo \"done: KFP UI",
    )


MUTATIONS = re.compile(r"\bkubectl (patch|edit|set|label|annotate|replace)\b")


@pytest.mark.parametrize("target", CLUSTER_TARGETS)
def test_no_target_mixes_server_side_apply_and_kubectl_patch(target):
    """A `kubectl patch` of a field that a server-side apply set hands the field to another manager, and the next
    apply fails with a conflict: a target that server-side applies must not also patch."""
    lines = dry_run(target)
    if any("--server-side" in line for line in lines):
        assert not [line for line in lines if MUTATIONS.search(line)]


@pytest.mark.parametrize("target", CLUSTER_TARGETS)
def test_targets_are_safe_to_run_twice(target):
    """Objects are applied, never created (a second create fails); deletes tolerate what is gone; the kind cluster
    is created only when it does not exist."""
    for line in dry_run(target):
        for create in re.findall(r"kubectl create [^;&|]*", line):
            assert "--dry-run=server" in create, line
        if "kind create cluster" in line:
            assert "kind get clusters" in line, line
        for delete in re.findall(r"kubectl delete [^;&|]*", line):
            assert "--ignore-not-found" in delete, line


def test_undeploy_deletes_inference_services_before_their_namespace():
    lines = dry_run("undeploy")
    in_order(
        lines,
        r"kubectl delete inferenceservices\S* --all -n kfp-tabular",
        r"kubectl delete -k manifests/overlays/kind",
    )


def test_undeploy_deletes_the_mlflow_database_and_says_so():
    """Decided: `make undeploy` removes the registry's database with everything else of ours (its claim is in the
    deleted manifests; kind's storage class deletes the volume with it), and warns first; MinIO's files stay."""
    lines = dry_run("undeploy")
    deleted = render("manifests/overlays/kind")
    assert ("PersistentVolumeClaim", "mlflow-data") in {(o["kind"], o["metadata"]["name"]) for o in deleted}
    in_order(
        lines,
        r"^echo .*deletes the MLflow server's database .*PersistentVolumeClaim",
        r"kubectl delete -k manifests/overlays/kind",
    )


# --- the MLflow server: up before any run; its UI and the registry's rollback through a port-forward -------


def mlflow_deployment() -> dict:
    return next(
        o
        for o in render("manifests/overlays/kind")
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlflow"
    )


def test_deploy_waits_for_the_mlflow_server_before_it_reports_done():
    """Runs track to the server from their first task: `make deploy` returns only once its rollout is complete (the
    new pod ready, also after a changed manifest), waiting at least as long as the pod's startup probe allows."""
    deployment = mlflow_deployment()
    name, namespace = deployment["metadata"]["name"], deployment["metadata"]["namespace"]
    lines = dry_run("deploy")
    in_order(
        lines,
        r"kubectl apply -k manifests/overlays/kind",
        rf"kubectl rollout status deployment/{name} -n {namespace} --timeout=\d+s",
        r"^echo \"done: KFP UI",
    )
    timeout = int(
        re.search(r"kubectl rollout status deployment/\S+ .*--timeout=(\d+)s", "\n".join(lines)).group(1)
    )
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    startup = server["startupProbe"]
    assert timeout >= startup["periodSeconds"] * startup["failureThreshold"]


def test_ui_cluster_forwards_to_the_tracking_service_and_prints_the_url():
    from pipelines.cluster import mlflow_service

    namespace, service, port = mlflow_service()  # from CLUSTER_TRACKING_URI, the pipeline's default
    assert (namespace, service, port) == ("kfp-tabular", "svc/mlflow", 5000)
    lines = dry_run("ui-cluster", UI_PORT="5123")
    in_order(
        lines,
        r"^echo \"MLflow UI of the cluster: http://127\.0\.0\.1:5123",
        rf"^kubectl port-forward -n {namespace} {service} 5123:{port}$",
    )


def test_rollback_cluster_runs_the_registry_rollback_through_a_port_forward():
    lines = dry_run("rollback-cluster", MODEL="m", TO="3")
    assert [line for line in lines if "pipelines.cluster rollback --model_name m --to 3" in line]
    lines = dry_run("rollback-cluster", MODEL="m")
    (line,) = [line for line in lines if "pipelines.cluster rollback" in line]
    assert line.endswith("--model_name m")


def test_rollback_subcommand_moves_the_champion_and_points_kserve_at_it(monkeypatch, tmp_path):
    """`python -m pipelines.cluster rollback` on a real registry (a local store standing in for the port-forward to the
    cluster's server): the port-forward asked for is the Service of CLUSTER_TRACKING_URI, the champion goes back,
    and the InferenceService is pointed (kserve target, the server's artifact destination) at it."""
    from components.registry import __main__ as registry_cli
    from components.registry import models as registry
    from components.registry.tracking import client, local_store
    from pipelines import cluster

    url = local_store(tmp_path)
    mlflow_client = client(url)
    mlflow_client.create_registered_model("m")
    run = mlflow_client.create_run(mlflow_client.create_experiment("m")).info
    for _ in range(2):
        mv = mlflow_client.create_model_version("m", f"{run.artifact_uri}/model", run_id=run.run_id)
        registry.promote(url, "m", str(mv.version), expected=None if str(mv.version) == "1" else "1")
    forwarded, pointed = [], []

    @contextlib.contextmanager
    def port_forward(namespace, target, remote_port):
        forwarded.append((namespace, target, remote_port))
        yield url

    monkeypatch.setattr(cluster, "port_forward", port_forward)
    monkeypatch.setattr(registry_cli, "point_inference_service", lambda *a: pointed.append(a))
    assert cluster.main(["rollback", "--model_name", "m"]) == 0
    assert registry.champion(url, "m").version == "1"
    assert forwarded == [("kfp-tabular", "svc/mlflow", 5000)]
    ((args, tracking_uri, version),) = pointed
    assert (tracking_uri, version, args.deploy_target) == (url, "1", "kserve")
    assert (args.kserve_namespace, args.artifacts_destination) == ("kfp-tabular", "s3://mlflow")


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_images_reach_kind_from_the_engine_that_built_them(engine):
    """`kind load docker-image` reads Docker's store whatever built the image (podman first, when both are
    installed): kind gets an archive the building engine saved instead."""
    lines = dry_run("images-kind", ENGINE=engine, IMAGE_ARCHIVES="/x")
    assert not [line for line in lines if "docker-image" in line]
    for image in (PIPELINE_IMAGE, SERVING_IMAGE):
        name = image.rsplit("/", 1)[1].split(":")[0]
        in_order(
            lines,
            rf"^{engine} build .* -t {re.escape(image)} ",
            rf"{engine} save -o /x/{name}\.tar {re.escape(image)}",
            rf"kind load image-archive --name kfp-tabular /x/{name}\.tar",
            rf"rm -f /x/{name}\.tar",
        )


@pytest.mark.containers
@pytest.mark.slow
def test_image_archive_for_kind_holds_the_name_the_cluster_pulls(images, tmp_path):
    """The serving image's archive, saved by the very command `make images-kind` runs, is tagged with the image
    the ClusterServingRuntime names (imagePullPolicy IfNotPresent on kind: that tag must be in the node)."""
    lines = dry_run("images-kind", IMAGE_ARCHIVES=str(tmp_path))  # the engine `make images` built with
    (save,) = [cmd for line in lines for cmd in re.findall(r"\S+ save -o \S+/serving\.tar \S+", line)]
    subprocess.run(shlex.split(save), check=True, timeout=600)
    with tarfile.open(tmp_path / "serving.tar") as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
    tags = [tag for entry in manifest for tag in entry.get("RepoTags") or []]
    runtime = next(o for o in render("manifests/overlays/kind") if o["kind"] == "ClusterServingRuntime")
    assert tags == [SERVING_IMAGE] == [runtime["spec"]["containers"][0]["image"]]


# --- the KServe release, as `make deploy-kserve` applies it ------------------------------------------------

KSERVE_URL = re.compile(r"https://github\.com/kserve/kserve/releases/download/(v[\d.]+)/kserve\.yaml")
# A stand-in for the release asset (its shape, not its content): the ConfigMap with KServe's default mode.
RELEASE_STAND_IN = [
    {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "inferenceservice-config", "namespace": "kserve"},
        "data": {
            "deploy": '{\n  "defaultDeploymentMode": "Serverless"\n}',
            "ingress": '{"ingressGateway": "x"}',
        },
    },
    {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterStorageContainer",
        "metadata": {"name": "default"},
        "spec": {"container": {"name": "storage-initializer", "image": "kserve/storage-initializer:v0.20.0"}},
    },
]


def test_kserve_release_is_applied_with_the_standard_mode_in_its_content(tmp_path):
    """The deployment mode is set in what is server-side applied (one field manager owns the ConfigMap), not
    patched afterwards. kustomize fetches the release URL itself: here the URL's host is a server on 127.0.0.1."""
    kustomization = (REPO / "manifests/kserve/kustomization.yaml").read_text()
    (release,) = KSERVE_URL.findall(kustomization)
    assert release == versions()["KSERVE_VERSION"]
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve/kserve.yaml").write_text(yaml.safe_dump_all(RELEASE_STAND_IN))
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "serve"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "kserve").mkdir()
        local = KSERVE_URL.sub(f"http://127.0.0.1:{server.server_port}/kserve.yaml", kustomization)
        (tmp_path / "kserve/kustomization.yaml").write_text(local)
        proc = subprocess.run(
            [kubectl(), "kustomize", str(tmp_path / "kserve")], capture_output=True, text=True, timeout=60
        )
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    rendered = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    config, storage = rendered
    assert json.loads(config["data"]["deploy"]) == {"defaultDeploymentMode": "Standard"}
    assert config["data"]["ingress"] == RELEASE_STAND_IN[0]["data"]["ingress"]
    assert storage == RELEASE_STAND_IN[1]  # everything else as released


# --- the kind workflow --------------------------------------------------------------------------------------


def workflow() -> dict:
    return yaml.load(WORKFLOW.read_text(), Loader=yaml.BaseLoader)  # `on:` stays a string key


def steps() -> list[dict]:
    (job,) = workflow()["jobs"].values()
    return job["steps"]


def step_index(predicate) -> int:
    found = [i for i, step in enumerate(steps()) if predicate(step)]
    assert found, "no such step"
    return found[0]


def test_workflow_runs_on_changes_to_everything_the_e2e_test_depends_on():
    paths = workflow()["on"]["push"]["paths"]
    for needed in ["tests/**", ".github/workflows/e2e-kind.yml", "Makefile", "manifests/**", "images/**"]:
        assert needed in paths
    for needed in ["pyproject.toml", "uv.lock", "components/**", "pipelines/**", ".dockerignore"]:
        assert needed in paths


def test_workflow_frees_disk_before_it_installs_or_builds_anything():
    """As KServe's and KFP's kind workflows do: the runner's preinstalled toolchains go first (the venv with
    TensorFlow, both images, their copies in the kind node, KFP's and KServe's images need the room)."""
    frees = step_index(lambda s: "rm -rf /usr/local/lib/android" in s.get("run", ""))
    text = steps()[frees]["run"]
    for big in ["/usr/share/dotnet", "/opt/ghc", "/usr/local/.ghcup"]:
        assert big in text
    first_install = step_index(lambda s: "setup-python" in s.get("uses", "") or "make" in s.get("run", ""))
    assert frees < first_install


def test_workflow_builds_the_images_once_and_drops_the_build_leftovers():
    runs = [s.get("run", "") for s in steps()]
    builds = [i for i, run in enumerate(runs) if re.search(r"make (images|images-kind)\b", run)]
    assert len(builds) == 1 and "images-kind" in runs[builds[0]]
    tests = next(i for i, run in enumerate(runs) if "make test-cluster" in run)
    prune = next(i for i, run in enumerate(runs) if "builder prune" in run)
    assert builds[0] < prune < tests
    e2e = (REPO / "tests/test_cluster_e2e.py").read_text()
    assert not re.search(r"make\(\s*\"images", e2e), "the e2e test must not build the images again"


def test_kind_node_image_matches_the_kubectl_the_workflow_installs():
    node = versions()["KIND_NODE_IMAGE"].split(":")[1]
    assert any(node in s.get("run", "") and "kubectl" in s.get("run", "") for s in steps())


def test_rehearsal_helpers_fail_on_a_wrong_order():
    with pytest.raises(AssertionError):
        in_order(["b", "a"], "a", "b")
    with pytest.raises(pytest.fail.Exception):
        position(["a"], "c")
