"""The `containers` tier: build the images, run every pipeline task in its container
(kfp.local.DockerRunner), and serve the blessed model from the serving image.

Skips, saying why, where no Docker-compatible engine is reachable (the Docker SDK's ``from_env``:
``DOCKER_HOST`` or the default socket). CI provides podman through ../shared/tools/container-engine.sh.
The ``engine`` and ``images`` fixtures (tests/conftest.py) build the images once per session, for every
containers-tier test (tests/test_kserve_runtime.py, tests/test_cluster_rehearsal.py too).
"""

from __future__ import annotations

import os
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from components.common.servable import ServableModel
from components.config import TabularConfig
from components.images import PIPELINE_IMAGE, SERVING_IMAGE
from components.registry import models as registry
from pipelines.local_run import newest_run, task_outputs
from tests.pipeline_checks import assert_demo_outputs
from tests.test_serving_server import NAME, features, free_port, v2_named

pytestmark = [pytest.mark.containers, pytest.mark.slow]


@pytest.mark.parametrize("image", [PIPELINE_IMAGE, SERVING_IMAGE])
def test_images_run_as_non_root_with_locked_versions(images, image):
    config = images.images.get(image).attrs["Config"]
    assert config["User"] == "1000:1000"
    code = (
        "import os, importlib.metadata as m, lightgbm, xgboost, sklearn; "
        "print(os.getuid(), m.version('scikit-learn'), m.version('xgboost-cpu'), m.version('lightgbm'), "
        "m.version('numpy'))"
    )
    out = images.containers.run(image, entrypoint=["python", "-c", code], remove=True).decode().split()
    from importlib.metadata import version

    assert out == [
        "1000",
        version("scikit-learn"),
        version("xgboost-cpu"),
        version("lightgbm"),
        version("numpy"),
    ]
    if image == SERVING_IMAGE:  # small: no TensorFlow, no kfp
        probe = (
            "import importlib.util as u; print(u.find_spec('tensorflow') is None, u.find_spec('kfp') is None)"
        )
        assert images.containers.run(
            image, entrypoint=["python", "-c", probe], remove=True
        ).decode().split() == [
            "True",
            "True",
        ]


@pytest.fixture(scope="module")
def container_run(images, tmp_path_factory):
    """The demo pipeline with every task in the pipeline image (kfp.local.DockerRunner), tracking to a real
    `mlflow server` on 127.0.0.1, as the cluster's tasks track to its server (artifacts proxied by it)."""
    from kfp import local

    from pipelines.tabular_pipeline import tabular_pipeline
    from tests.conftest import start_mlflow_server

    root = tmp_path_factory.mktemp("docker-runs")
    # Tasks run as the invoking user so that what they write on the host is that user's, on the host's
    # network so that they reach the tracking server on 127.0.0.1 (as a cluster's tasks reach its Service).
    local.init(
        runner=local.DockerRunner(user=f"{os.getuid()}:{os.getgid()}", network_mode="host"),
        pipeline_root=str(root),
    )
    with start_mlflow_server(tmp_path_factory.mktemp("tracking")) as (uri, _):
        tabular_pipeline(**TabularConfig(mlflow_tracking_uri=uri).resolved().pipeline_arguments())
        served = tmp_path_factory.mktemp("served") / "model"
        registry.download(uri, f"models:/{NAME}@champion", served)
        yield task_outputs(newest_run(root)), uri, served


def test_pipeline_runs_in_containers(container_run):
    out, uri, _ = container_run
    assert_demo_outputs(out, uri)


def test_serving_image_answers_v1_and_v2_like_in_process(images, container_run, penguins):
    out, _, model_dir = container_run
    model = ServableModel.load(model_dir)
    test = pd.read_parquet(out["ingest"]["artifacts"]["test_data"]["uri"])
    port = free_port()
    container = images.containers.run(
        SERVING_IMAGE,
        ["--model_name", NAME, "--model_dir", "/mnt/models", "--host", "127.0.0.1", "--http_port", str(port)],
        volumes={str(model_dir): {"bind": "/mnt/models", "mode": "ro"}},
        network_mode="host",
        detach=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/v2/models/{NAME}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            container.reload()
            assert container.status == "running", container.logs().decode()[-3000:]
            assert time.monotonic() < deadline, container.logs().decode()[-3000:]
            time.sleep(0.5)
        rows = features(model, test)
        expected = model.predict_proba(test).astype(np.float64)
        v1 = httpx.post(
            f"{url}/v1/models/{NAME}:predict", json={"instances": rows.to_dict(orient="records")}, timeout=30
        )
        assert v1.status_code == 200, v1.text
        got = np.array([[p["probabilities"][c] for c in model.classes] for p in v1.json()["predictions"]])
        assert np.array_equal(got, expected)
        v2 = httpx.post(f"{url}/v2/models/{NAME}/infer", json=v2_named(model, rows), timeout=30)
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        assert outputs["label"]["data"] == [str(v) for v in model.predict(test)]
        assert np.array_equal(np.array(outputs["probabilities"]["data"]).reshape(-1, 3), expected)
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "1000"
    finally:
        container.remove(force=True)
