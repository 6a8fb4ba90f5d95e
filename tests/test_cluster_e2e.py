"""End to end on a real Kubernetes cluster (marker ``cluster``): install, upload, run, predict over REST.

Runs against the current kubeconfig context (a kind cluster made by ``make cluster``, with the images loaded by
``make images-kind``; see .github/workflows/e2e-kind.yml) and skips, saying why, when no cluster is reachable.
It builds nothing: the images must already be in the node (it fails early, saying so, when they are not).

Besides the happy path it checks what a user does next: every target run a second time (deploy, upload), and a
run after ``make undeploy`` deploys again (the deploy step is never served from KFP's cache). After each run the
registry is read through a port-forward to the MLflow Service: the champion is what the InferenceService serves;
``make rollback-cluster`` goes through the same port-forward; ``make undeploy`` deletes the registry's database.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from components.images import PIPELINE_IMAGE, SERVING_IMAGE
from tests.conftest import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NAMESPACE, MODEL = "kfp-tabular", "penguins-species"  # the demo's derived model name (Makefile MODEL)


@pytest.fixture(scope="module")
def cluster():
    try:
        from kubernetes import client, config

        config.load_kube_config()
        version = client.VersionApi().get_code(_request_timeout=5)
    except Exception as exc:  # no kubeconfig, no context, API unreachable: all mean "no cluster here"
        kubeconfig = os.environ.get("KUBECONFIG", "~/.kube/config")
        pytest.skip(f"no Kubernetes cluster reachable through {kubeconfig}: {type(exc).__name__}: {exc}")
    for tool in ("kubectl",):
        if not shutil.which(tool):
            pytest.fail(f"a cluster is reachable but {tool} is not on PATH")
    return version.git_version


def make(target: str, *variables: str, timeout: int = 3600) -> str:
    proc = subprocess.run(
        ["make", target, *variables], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"make {target} failed:\n{output[-6000:]}"
    return output


def node_images() -> set[str]:
    """The images the nodes report holding (status.images: the kubelet lists the largest first)."""
    from kubernetes import client

    return {
        name for node in client.CoreV1Api().list_node().items for i in node.status.images for name in i.names
    }


def inference_service() -> dict | None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        return client.CustomObjectsApi().get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", NAMESPACE, "inferenceservices", MODEL
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def assert_serving() -> None:
    isvc = inference_service()
    assert isvc is not None, "the run succeeded but no InferenceService was deployed"
    conditions = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert conditions.get("Ready") == "True", isvc["status"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://")
    answer = make("predict-cluster")
    assert answer.count("-> HTTP 200") == 2 and '"label"' in answer


def assert_registry_serves_the_champion() -> str:
    """Through a port-forward to the MLflow Service (CLUSTER_TRACKING_URI's): the model has a version with alias
    champion, and the InferenceService serves that version's files (where the server stored them). Returns it."""
    from mlflow import MlflowClient

    from components.config import TabularConfig
    from components.registry import models as registry
    from pipelines.cluster import mlflow_service, port_forward

    namespace, service, port = mlflow_service()
    with port_forward(namespace, service, port) as url:
        champion = MlflowClient(url, url).get_model_version_by_alias(MODEL, "champion")
    assert champion.source.startswith("mlflow-artifacts:/"), champion.source  # proxied by the server
    destination = TabularConfig().mlflow_artifacts_destination  # the server's --artifacts-destination
    isvc = inference_service()
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == registry.storage_uri(
        champion.source, destination
    )
    return str(champion.version)


def mlflow_available() -> bool:
    from kubernetes import client

    status = client.AppsV1Api().read_namespaced_deployment("mlflow", NAMESPACE).status
    return (status.available_replicas or 0) >= 1


def test_whole_path_deploy_upload_run_predict_and_again(cluster):
    held = node_images()
    missing = {PIPELINE_IMAGE, SERVING_IMAGE} - {name.removeprefix("docker.io/") for name in held}
    assert not missing, f"not in the cluster's nodes: {sorted(missing)}; run `make images-kind` first"

    make("deploy")
    make("deploy")  # a second time changes nothing and fails on nothing (no field-manager conflicts)
    first = make("upload")
    assert "uploaded pipeline" in first or "uploaded version" in first, first
    again = make("upload")
    assert "nothing uploaded" in again, again  # the same YAML again: no new version
    assert mlflow_available()  # `make deploy` returned only once the MLflow server was up
    run = make("run-cluster")
    assert "SUCCEEDED" in run.upper(), run
    assert_serving()
    champion = assert_registry_serves_the_champion()
    # the rollback path (port-forward to MLflow, registry, InferenceService): to the same version, nothing changes
    rollback = make("rollback-cluster", f"TO={champion}")
    assert f"champion version {champion} -> {champion}" in rollback, rollback
    assert assert_registry_serves_the_champion() == champion

    make("undeploy")
    assert inference_service() is None
    make("undeploy")  # again: nothing left to delete, no error
    make("deploy")
    run = make("run-cluster")
    assert "SUCCEEDED" in run.upper(), run
    assert_serving()  # the deploy step ran again: it is never served from KFP's cache
    # undeploy deleted the registry's database (its claim went with our manifests): a fresh registry
    assert assert_registry_serves_the_champion() == "1"
