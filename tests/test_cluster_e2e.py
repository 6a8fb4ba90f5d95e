"""End to end on a real Kubernetes cluster (marker ``cluster``): install, upload, run, predict over REST.

Runs against the current kubeconfig context (a kind cluster made by ``make cluster``; see
.github/workflows/e2e-kind.yml) and skips, saying why, when no cluster is reachable.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


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


def make(target: str, timeout: int = 3600) -> str:
    proc = subprocess.run(["make", target], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"make {target} failed:\n{output[-6000:]}"
    return output


def test_whole_path_deploy_upload_run_predict(cluster):
    if (
        shutil.which("kind")
        and "kind-"
        in subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True).stdout
    ):
        make("images-kind")
    make("deploy")
    assert "uploaded version" in make("upload")
    assert "SUCCEEDED" in make("run-cluster").upper()

    from kubernetes import client

    isvc = client.CustomObjectsApi().get_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", "kfp-tabular", "inferenceservices", "penguins"
    )
    conditions = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert conditions.get("Ready") == "True", isvc["status"]
    assert isvc["spec"]["predictor"]["model"]["storageUri"].startswith("s3://")

    answer = make("predict-cluster")
    assert answer.count("-> HTTP 200") == 2 and '"label"' in answer
