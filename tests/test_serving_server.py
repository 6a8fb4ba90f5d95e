"""The model server for real: a subprocess on 127.0.0.1 answering KServe V1 and V2 REST."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from components.common.servable import ServableModel
from components.registry import models as registry
from components.registry.tracking import Tracker, local_store
from tests.conftest import REPO

NAME = "penguins-species"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(*args: str, wait_live: bool = True):
    """Start a server; yields (url, process, log path). Its output goes to a file: a pipe nobody reads
    fills up with access-log lines and blocks the server."""
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="server-", suffix=".log")[1])
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "components.serving",
            "--model_name",
            NAME,
            "--host",
            "127.0.0.1",
            "--http_port",
            str(port),
            *args,
        ],
        cwd=REPO,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if wait_live:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/v2/health/live", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError("server did not come up within 60 s")
                time.sleep(0.2)
        yield url, proc, log_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


def publish(store: str, model_dir, note: str = "") -> str:
    """Register ``model_dir`` as a new version of NAME and make it the champion, as the pipeline does."""
    tracker = Tracker.start(store, experiment=NAME, run_name="test", params={}, tags={})
    version = registry.register(tracker, model_dir, NAME, tags={"note": note})
    current = registry.champion(store, NAME)
    registry.promote(store, NAME, version.version, current.version if current else None)
    return version.version


def registry_args(store: str, cache, *extra: str) -> tuple[str, ...]:
    return (
        "--model_uri",
        f"models:/{NAME}@champion",
        "--tracking_uri",
        store,
        "--cache_dir",
        str(cache),
        *extra,
    )


@pytest.fixture(scope="module")
def deployed(penguins_model, tmp_path_factory):
    """The demo model registered and made champion in a local MLflow store; the store's serve arguments."""
    model_dir, test_path = penguins_model
    folder = tmp_path_factory.mktemp("registry")
    store = local_store(folder / "mlflow")
    publish(store, model_dir)
    return registry_args(store, folder / "cache"), pd.read_parquet(test_path), ServableModel.load(model_dir)


@pytest.fixture(scope="module")
def served(deployed):
    """The module's server: (url, log path)."""
    args, _, _ = deployed
    with serve(*args) as (url, _, log_path):
        yield url, log_path


@pytest.fixture(scope="module")
def server(served):
    return served[0]


def features(model: ServableModel, df: pd.DataFrame) -> pd.DataFrame:
    return df[model.feature_names].astype(object).where(df[model.feature_names].notna(), None)


def v1(url, body, **kw):
    return httpx.post(f"{url}/v1/models/{NAME}:predict", json=body, timeout=60, **kw)


def v2(url, body, **kw):
    return httpx.post(f"{url}/v2/models/{NAME}/infer", json=body, timeout=60, **kw)


def v2_named(model, rows: pd.DataFrame, **extra) -> dict:
    inputs = []
    for f in model.metadata["features"]:
        data = rows[f["name"]].tolist()
        inputs.append(
            {
                "name": f["name"],
                "datatype": "FP64" if f["kind"] == "numeric" else "BYTES",
                "shape": [len(data)],
                "data": data,
            }
        )
    return {"inputs": inputs, **extra}


# --- health, readiness, metadata ------------------------------------------------------------------------


def test_health_ready_and_metadata(server, deployed):
    _, _, model = deployed
    assert httpx.get(f"{server}/v2/health/live").status_code == 200
    assert httpx.get(f"{server}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server}/v2/models/{NAME}/ready").status_code == 200
    assert httpx.get(f"{server}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}
    meta = httpx.get(f"{server}/v2/models/{NAME}").json()
    kinds = {f["name"]: f["kind"] for f in model.metadata["features"]}
    assert [i["name"] for i in meta["inputs"]] == model.feature_names
    assert all(
        i["datatype"] == ("FP64" if kinds[i["name"]] == "numeric" else "BYTES") for i in meta["inputs"]
    )
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
    ]


# --- training/serving symmetry: every protocol, to the last float -----------------------------------------


def test_v1_records_and_rows_equal_in_process_predictions(server, deployed):
    _, test, model = deployed
    rows = features(model, test)
    expected = model.predict_proba(test).astype(np.float64)
    labels = model.predict(test).tolist()
    for instances in (rows.to_dict(orient="records"), rows.to_numpy().tolist()):
        response = v1(server, {"instances": instances})
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["label"] for p in predictions] == labels
        got = np.array([[p["probabilities"][c] for c in model.classes] for p in predictions])
        assert np.array_equal(got, expected)  # exact: JSON carries float64, the model float32
    for i in range(5):  # single-row requests equal single-row in-process predictions
        one = test.iloc[[i]]
        got = v1(server, {"instances": features(model, one).to_dict(orient="records")}).json()["predictions"][
            0
        ]
        assert [got["probabilities"][c] for c in model.classes] == model.predict_proba(one).astype(
            np.float64
        )[0].tolist()


def test_v2_named_inputs_tensor_and_pandas_content_type_equal_in_process(server, deployed):
    _, test, model = deployed
    rows = features(model, test)
    expected = model.predict_proba(test).astype(np.float64)
    bodies = [
        v2_named(model, rows),
        v2_named(model, rows, parameters={"content_type": "pd"}, id="request-42"),
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "BYTES",
                    "shape": [len(rows), rows.shape[1]],
                    "data": rows.to_numpy().tolist(),
                }
            ]
        },
    ]
    for body in bodies:
        response = v2(server, body)
        assert response.status_code == 200, response.text
        # the model encodes V2 bodies itself: the headers are still those of a JSON answer
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        assert "transfer-encoding" not in response.headers
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["label"]["data"] == [str(v) for v in model.predict(test)]
        assert outputs["probabilities"]["shape"] == [len(rows), 3]
        assert json.loads(outputs["probabilities"]["parameters"]["classes"]) == model.classes
        assert np.array_equal(np.array(outputs["probabilities"]["data"]).reshape(-1, 3), expected)
        assert response.json()["id"] == body.get("id", "")
        assert response.json()["model_name"] == NAME
    # V2 "outputs" selects what comes back
    only = v2(server, v2_named(model, rows, outputs=[{"name": "probabilities"}]))
    assert only.status_code == 200, only.text
    assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]


def _binary_request(model, rows: pd.DataFrame, outputs: list[dict] | None = None, **parameters) -> tuple:
    """A V2 request in the binary data extension: JSON header, then each input's raw bytes."""
    import struct

    inputs, raw = [], b""
    for f in model.metadata["features"]:
        values = rows[f["name"]].tolist()
        if f["kind"] == "numeric":
            data = np.array(values, dtype=np.float64).tobytes()
        else:
            data = b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)
        kind = "FP64" if f["kind"] == "numeric" else "BYTES"
        inputs.append(
            {
                "name": f["name"],
                "datatype": kind,
                "shape": [len(values)],
                "parameters": {"binary_data_size": len(data)},
            }
        )
        raw += data
    header = json.dumps(
        {"inputs": inputs, **({"outputs": outputs} if outputs else {}), "parameters": parameters}
    )
    body = header.encode() + raw
    return body, {"inference-header-content-length": str(len(header.encode()))}


def test_v2_binary_data_extension(server, deployed):
    """Binary inputs are read, and binary outputs are answered when asked for (per output or all), with
    the JSON header's length in inference-header-content-length; the values are the in-process ones."""
    _, test, model = deployed
    rows = features(model, test).dropna().head(5)
    expected = model.predict_proba(test.loc[rows.index]).astype(np.float64)
    url = f"{server}/v2/models/{NAME}/infer"

    body, headers = _binary_request(
        model, rows, outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}]
    )
    response = httpx.post(url, content=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    json_length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:json_length])
    (probabilities,) = header["outputs"]  # only the requested output
    assert probabilities["name"] == "probabilities" and "data" not in probabilities
    assert probabilities["parameters"]["binary_data_size"] == len(response.content) - json_length
    values = np.frombuffer(response.content[json_length:], dtype=np.float64).reshape(-1, 3)
    assert np.array_equal(values, expected)

    # binary inputs, JSON outputs: the usual JSON answer
    body, headers = _binary_request(model, rows)
    response = httpx.post(url, content=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert np.array_equal(np.array(outputs["probabilities"]["data"]).reshape(-1, 3), expected)

    # binary_data_output: every output binary (labels as 4-byte length + UTF-8 each)
    body, headers = _binary_request(model, rows, binary_data_output=True)
    response = httpx.post(url, content=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    names = [o["name"] for o in json.loads(response.content[:json_length])["outputs"]]
    assert names == ["label", "probabilities"]
    assert response.content[json_length + 4 :].startswith(
        str(model.predict(test.loc[rows.index])[0]).encode()
    )


# --- bad input: 4xx naming the problem, and the server keeps serving -------------------------------------


def _good(model, test):
    return features(model, test.head(1)).to_dict(orient="records")[0]


BAD = {
    "missing feature": (
        lambda g: {"instances": [{k: v for k, v in g.items() if k != "sex"}]},
        400,
        "missing features ['sex']",
    ),
    "unknown feature": (
        lambda g: {"instances": [{**g, "wingspan": 3}]},
        400,
        "unknown features ['wingspan']",
    ),
    "wrong type": (
        lambda g: {"instances": [{**g, "body_mass_g": "heavy"}]},
        400,
        "'body_mass_g' takes a number",
    ),
    "non-finite number": (lambda g: {"instances": [{**g, "body_mass_g": "1e999"}]}, 400, "takes a number"),
    "empty batch": (lambda g: {"instances": []}, 400, "empty"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_v1_requests(server, deployed, case):
    _, test, model = deployed
    make, status, message = BAD[case]
    response = v1(server, make(_good(model, test)))
    assert response.status_code == status and message in response.json()["error"], response.text
    assert v1(server, {"instances": [_good(model, test)]}).status_code == 200  # still serving


def test_bad_bodies_unknown_model_and_oversize(server, deployed):
    _, test, model = deployed
    good = _good(model, test)
    headers = {"content-type": "application/json"}
    cases = [
        (
            httpx.post(f"{server}/v1/models/{NAME}:predict", content=b'{"instances": [', headers=headers),
            400,
            "request format",
        ),
        (
            httpx.post(f"{server}/v2/models/{NAME}/infer", content=b'{"inputs": [', headers=headers),
            400,
            "not valid JSON",
        ),
        (httpx.post(f"{server}/v1/models/nope:predict", json={"instances": [good]}), 404, "nope"),
        (
            httpx.post(f"{server}/v2/models/nope/infer", json=v2_named(model, features(model, test.head(1)))),
            404,
            "nope",
        ),
        (
            httpx.post(
                f"{server}/v2/models/{NAME}/infer",
                content=b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 7], "data": [1, 2, 3, 4, 5, 6, 1e999]}]}',
                headers=headers,
            ),
            400,
            "finite",
        ),
        (
            v2(
                server, {"inputs": [{"name": "island", "datatype": "BYTES", "shape": [1], "data": ["Dream"]}]}
            ),
            400,
            "missing features",
        ),
        (
            v2(server, v2_named(model, features(model, test.head(1)), outputs=[{"name": "logits"}])),
            400,
            "requested outputs ['logits'] are not outputs of this model",
        ),
        (
            httpx.post(
                f"{server}/v1/models/{NAME}:predict", content=b"x" * (16 * 1024 * 1024 + 1), headers=headers
            ),
            413,
            "over the limit",
        ),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.text
    assert v1(server, {"instances": [good]}).status_code == 200


def test_oversize_chunked_body_is_refused(server):
    def chunks():
        for _ in range(20):
            yield b" " * (1024 * 1024)

    response = httpx.post(
        f"{server}/v1/models/{NAME}:predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


# --- load: a concurrent burst, and health stays fast while big batches are scored --------------------------


def test_concurrent_burst_has_no_errors(server, deployed):
    _, test, model = deployed
    rows = features(model, test).to_dict(orient="records")
    expected = model.predict(test).tolist()
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(16) as pool:

        def one(i):
            r = client.post(f"{server}/v1/models/{NAME}:predict", json={"instances": [rows[i % len(rows)]]})
            return r.status_code, r.json()["predictions"][0]["label"]

        results = list(pool.map(one, range(400)))
    assert all(status == 200 for status, _ in results)
    assert [label for _, label in results] == [expected[i % len(rows)] for i in range(400)]


def test_health_stays_fast_while_big_batches_are_scored(server, deployed):
    _, test, model = deployed
    big = features(model, pd.concat([test] * 900, ignore_index=True)).to_dict(orient="records")  # 62,100 rows
    body = json.dumps({"instances": big}).encode()
    stop, batch_seconds, health_seconds = threading.Event(), [], []

    def load():
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                began = time.perf_counter()
                r = client.post(
                    f"{server}/v1/models/{NAME}:predict",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                assert r.status_code == 200
                batch_seconds.append(time.perf_counter() - began)

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        with httpx.Client(timeout=10) as client:
            time.sleep(0.5)
            end = time.monotonic() + 4
            while time.monotonic() < end:
                began = time.perf_counter()
                assert client.get(f"{server}/v2/health/live").status_code == 200
                health_seconds.append(time.perf_counter() - began)
                time.sleep(0.02)
    finally:
        stop.set()
        for w in workers:
            w.join()
    # Meaningful only if the batches are slow: then a blocked event loop would delay health by as much.
    assert np.median(batch_seconds) > 0.3, batch_seconds
    assert np.percentile(health_seconds, 95) < np.median(batch_seconds) / 2, (health_seconds, batch_seconds)


# --- start-up: readiness before and after load, refusing a bad artifact -----------------------------------


def test_not_ready_until_the_model_is_published(deployed, penguins_model, tmp_path):
    store = local_store(tmp_path / "mlflow")
    with serve(*registry_args(store, tmp_path / "cache", "--wait_for_model", "120")) as (url, _, _):
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        # the serving runtime's readinessProbe (manifests/base/serving-runtime.yaml) asks the model's
        # endpoint; the server's /v2/health/ready is its models' readiness too (KServe's: always 200)
        assert httpx.get(f"{url}/v2/models/{NAME}/ready").status_code == 503
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{url}/v1/models/{NAME}").status_code == 503
        assert v1(url, {"instances": [{"island": "Dream"}]}).status_code == 503
        publish(store, penguins_model[0])
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v2/models/{NAME}/ready").status_code != 200:
            assert time.monotonic() < deadline, "model not ready 30 s after it was published"
            time.sleep(0.2)
        _, test, model = deployed
        assert v1(url, {"instances": [_good(model, test)]}).status_code == 200


def test_follows_the_champion_and_a_rollback(penguins_model, tmp_path):
    """The local server serves the registry's champion: a new champion is served within seconds, and
    `make rollback` (registry.rollback) brings the previous one back, with no restart."""
    model_dir, test_path = penguins_model
    store = local_store(tmp_path / "mlflow")
    first = publish(store, model_dir)
    # a second model that answers differently: its scaling sees every number two deviations lower
    second_dir = tmp_path / "second"
    model = ServableModel.load(model_dir)
    columns = model.pipeline.named_steps["preprocess"].named_steps["columns"]
    scale = columns.named_transformers_["numeric"].named_steps["scale"]
    scale.mean_ = scale.mean_ + 2 * scale.scale_
    model.metadata["note"] = "second"
    model.save(second_dir)
    rows = features(model, pd.read_parquet(test_path).head(5)).to_dict(orient="records")

    def answers(url):
        return v1(url, {"instances": rows}).json()["predictions"]

    def wait_for(url, expected, what):
        deadline = time.monotonic() + 30
        while answers(url) != expected:
            assert time.monotonic() < deadline, f"{what} not served within 30 s"
            time.sleep(0.3)

    with serve(*registry_args(store, tmp_path / "cache", "--follow_seconds", "0.5")) as (url, _, log_path):
        before = answers(url)
        second = publish(store, second_dir, "second")
        reference = ServableModel.load(second_dir).predict_proba(pd.read_parquet(test_path).head(5))
        deadline = time.monotonic() + 30
        while answers(url) == before:
            assert time.monotonic() < deadline, "the new champion was not served within 30 s"
            time.sleep(0.3)
        after = answers(url)
        got = np.array([[p["probabilities"][c] for c in model.classes] for p in after])
        assert np.array_equal(got, reference.astype(np.float64))  # exactly the new version's answers
        assert registry.rollback(store, NAME) == (second, first)
        wait_for(url, before, "the rolled-back version")
        log = log_path.read_text()
        assert f"version {first} -> {second}" in log and f"version {second} -> {first}" in log


@pytest.mark.parametrize("problem", ["tampered", "other versions", "missing"])
def test_refuses_to_start_with_a_bad_artifact(penguins_model, tmp_path, problem):
    bad = tmp_path / "model"
    if problem != "missing":
        shutil.copytree(penguins_model[0], bad)
    if problem == "tampered":
        with open(bad / "model.joblib", "ab") as handle:
            handle.write(b"!")
    elif problem == "other versions":
        meta = json.loads((bad / "metadata.json").read_text())
        meta["versions"]["xgboost-cpu"] = "2.1.4"
        (bad / "metadata.json").write_text(json.dumps(meta))
    with serve("--model_dir", str(bad), wait_live=False) as (_, proc, log_path):
        code = proc.wait(timeout=60)
        output = log_path.read_text()
    assert code == 2, output
    expected = {
        "tampered": "integrity check",
        "other versions": "xgboost-cpu trained with 2.1.4",
        "missing": "not a directory",
    }
    assert f"cannot serve model '{NAME}'" in output and expected[problem] in output


def test_more_than_one_worker_is_refused_with_the_way_to_scale(deployed):
    """KServe's multi-process mode cannot carry this server's model (it pickles it into spawned workers):
    asking for it stops at once, saying how to scale instead, rather than in a pickling traceback."""
    args, _, _ = deployed
    with serve(*args, "--workers", "2", wait_live=False) as (_, proc, log_path):
        code = proc.wait(timeout=60)
        output = log_path.read_text()
    assert code == 2, output
    assert "--workers 2" in output and "replicas" in output and "Traceback" not in output


def test_example_request_client(server, capsys):
    """`make predict`'s client: V1 and V2 requests built from the server's metadata both answer 200."""
    from components.serving.example_request import main

    assert main(["--url", server, "--model_name", NAME, "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("-> HTTP 200") == 2 and '"label"' in out and '"probabilities"' in out


@pytest.mark.parametrize(("flag", "loop"), [((), "uvloop"), (("--event_loop", "asyncio"), "asyncio")])
def test_event_loop_flag_is_applied(deployed, flag, loop):
    """KServe's --event_loop (auto = uvloop when installed) decides the loop the server really runs on,
    and the answers do not depend on it."""
    args, test, model = deployed
    with serve(*args, *flag) as (url, _, log_path):
        rows = features(model, test.head(3))
        response = v1(url, {"instances": rows.to_dict(orient="records")})
        assert response.status_code == 200, response.text
        labels = [p["label"] for p in response.json()["predictions"]]
        assert labels == [str(c) for c in model.predict(test.head(3))]
        assert f"on {url} ({loop})" in log_path.read_text()


# --- issue 13: no request takes the model down or gets a 5xx; every V2 client works ------------------------


def _one_row(model, test) -> dict:
    return features(model, test).dropna().head(1).to_dict(orient="records")[0]


def _post_v2(url, body: bytes, headers: dict | None = None):
    return httpx.post(f"{url}/v2/models/{NAME}/infer", content=body, headers=headers or {}, timeout=60)


def test_no_client_can_unload_or_load_the_model(server, deployed):
    """KServe's model repository extension let any client unload the model (200), after which every
    predict was a 404 while liveness and readiness still said 200: it is refused, and says so."""
    _, test, model = deployed
    for action in ("unload", "load"):
        response = httpx.post(f"{server}/v2/repository/models/{NAME}/{action}")
        assert response.status_code == 403, response.text
        assert "model repository extension is disabled" in response.json()["error"]
    assert "model_repository_extension" not in httpx.get(f"{server}/v2").json()["extensions"]
    assert v1(server, {"instances": [_one_row(model, test)]}).status_code == 200
    assert httpx.get(f"{server}/v2/models/{NAME}/ready").status_code == 200


def test_liveness_and_readiness_follow_the_model(penguins_model):
    """A server that has lost its model (unloaded, or no longer ready after loading) is not live, so the
    kubelet restarts it; one still loading is live but not ready (KServe: both always 200)."""
    import asyncio

    from kserve.model_repository import ModelRepository

    from components.serving.app import TabularDataPlane
    from components.serving.model import TabularModel

    async def states(plane):
        return (await plane.live())["status"] == "alive", await plane.ready()

    registry = ModelRepository()
    plane = TabularDataPlane(registry)
    model = TabularModel(NAME, penguins_model[0])
    registry.update(model)
    plane.serve(model)
    assert asyncio.run(states(plane)) == (True, False)  # loading: live, not ready
    model.load()
    assert asyncio.run(states(plane)) == (True, True)
    registry.unload(NAME)  # what KServe's /unload did
    assert asyncio.run(states(plane)) == (False, False)
    registry.update(model)
    model.ready = False  # loaded once, no longer ready
    assert asyncio.run(states(plane)) == (False, False)


def _binary_body(inputs: list[tuple[dict, bytes]], header_length: str | None = None) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [meta for meta, _ in inputs]}).encode()
    length = str(len(header)) if header_length is None else header_length
    return header + b"".join(raw for _, raw in inputs), {"inference-header-content-length": length}


def _binary_inputs(row: dict, model) -> list[tuple[dict, bytes]]:
    """One binary input per feature: FP64 numbers, BYTES texts (4-byte little-endian length + UTF-8)."""
    import struct

    inputs = []
    for f in model.metadata["features"]:
        value = row[f["name"]]
        if f["kind"] == "numeric":
            raw, datatype = struct.pack("<d", value), "FP64"
        else:
            raw, datatype = struct.pack("<I", len(value.encode())) + value.encode(), "BYTES"
        meta = {"name": f["name"], "datatype": datatype, "shape": [1]}
        inputs.append((meta | {"parameters": {"binary_data_size": len(raw)}}, raw))
    return inputs


def _with(inputs, index: int, meta: dict | None = None, raw: bytes | None = None):
    changed = list(inputs)
    old_meta, old_raw = changed[index]
    changed[index] = ({**old_meta, **(meta or {})}, old_raw if raw is None else raw)
    return changed


def _malformed(row: dict, model) -> dict:
    """name -> (body, headers, what the 400 must say); each of these was a 500 (KServe's decoder or ours)."""
    import struct

    good = _binary_inputs(row, model)
    island = next(i for i, (meta, _) in enumerate(good) if meta["datatype"] == "BYTES")
    mass = next(i for i, (meta, _) in enumerate(good) if meta["name"] == "body_mass_g")
    size = {"parameters": {"binary_data_size": 3}}
    named = v2_named(model, pd.DataFrame([row]))
    big = json.dumps(named).replace(json.dumps(row["body_mass_g"]), "1" + "0" * 400, 1)
    mixed = json.loads(json.dumps(named))
    year = next(i for i in mixed["inputs"] if i["name"] == "year")
    year.update(shape=[2], data=[[2008], 2008])
    json_headers = {"content-type": "application/json"}
    return {
        "header length abc": (*_binary_body(good, "abc"), "inference-header-content-length 'abc'"),
        "header length 1e3": (*_binary_body(good, "1e3"), "inference-header-content-length '1e3'"),
        "header length empty": (*_binary_body(good, ""), "inference-header-content-length ''"),
        "header length past the body": (*_binary_body(good, "99999"), "the body has"),
        "binary_data_size wrong": (*_binary_body(_with(good, mass, size)), "needs 8 bytes"),
        "binary_data_size negative": (
            *_binary_body(_with(good, mass, {"parameters": {"binary_data_size": -8}})),
            "binary_data_size -8 must be a non-negative integer",
        ),
        "binary_data_size not a number": (
            *_binary_body(_with(good, mass, {"parameters": {"binary_data_size": "8"}})),
            "binary_data_size '8' must be a non-negative integer",
        ),
        "truncated tensor": (_binary_body(good)[0][:-4], _binary_body(good)[1], "truncated"),
        "bad BYTES length prefix": (
            *_binary_body(_with(good, island, raw=struct.pack("<I", 1000) + good[island][1][4:])),
            "has length 1000",
        ),
        "shape [-1]": (*_binary_body(_with(good, mass, {"shape": [-1]})), "non-negative integers"),
        "BYTES not UTF-8": (
            *_binary_body(
                _with(
                    good,
                    island,
                    {"parameters": {"binary_data_size": 9}},
                    raw=struct.pack("<I", 5) + b"\xff\xfe\xfd\xfc\xfb",
                )
            ),
            "is not UTF-8 text",
        ),
        "number too large for a float": (big.encode(), json_headers, "too large for a float"),
        "mixed nesting": (json.dumps(mixed).encode(), json_headers, "not a mix"),
        "input named false, -Infinity": (
            b'{"inputs": [{"name": false, "datatype": "FP64", "shape": [1], "data": [-Infinity]}]}',
            json_headers,
            "inputs.0.name: Input should be a valid string",
        ),
        "JSON shape [-1]": (
            json.dumps({"inputs": [{**i, "shape": [-1]} for i in named["inputs"]]}).encode(),
            json_headers,
            "non-negative integers",
        ),
    }


MALFORMED = [
    "header length abc",
    "header length 1e3",
    "header length empty",
    "header length past the body",
    "binary_data_size wrong",
    "binary_data_size negative",
    "binary_data_size not a number",
    "truncated tensor",
    "bad BYTES length prefix",
    "shape [-1]",
    "BYTES not UTF-8",
    "number too large for a float",
    "mixed nesting",
    "input named false, -Infinity",
    "JSON shape [-1]",
]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_requests_are_400s_naming_the_problem(server, deployed, case):
    _, test, model = deployed
    row = _one_row(model, test)
    body, headers, message = _malformed(row, model)[case]
    response = _post_v2(server, body, headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"], response.text
    # the same body, well formed, is answered: the server is intact
    good_body, good_headers = _binary_body(_binary_inputs(row, model))
    assert _post_v2(server, good_body, good_headers).status_code == 200


def test_server_faults_are_500s_without_exception_text():
    """A 500 says it is the server's fault and nothing of the exception (KServe sent its text)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from components.serving.app import SERVER_FAULT, install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret path /srv/model.joblib")

    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500 and response.json() == {"error": SERVER_FAULT}
    assert "secret" not in response.text


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
def test_v2_json_is_json_whatever_its_content_type(server, deployed, content_type):
    """tritonclient sends V2 JSON without a Content-Type and curl sends text/plain: KServe read both as
    binary and asked for inference-header-content-length (400). Without that header a body is JSON."""
    _, test, model = deployed
    rows = features(model, test.head(3))
    body = json.dumps(v2_named(model, rows)).encode()
    response = _post_v2(server, body, {"content-type": content_type} if content_type else {})
    assert response.status_code == 200, response.text
    labels = {o["name"]: o for o in response.json()["outputs"]}["label"]["data"]
    assert labels == [str(c) for c in model.predict(test.head(3))]


def _contradictions(row: dict, model) -> dict:
    named = v2_named(model, pd.DataFrame([row]))

    def changed(feature: str, **fields) -> dict:
        body = json.loads(json.dumps(named))
        next(i for i in body["inputs"] if i["name"] == feature).update(fields)
        return body

    values = [row[name] for name in model.feature_names]
    return {
        "shape [3, 7] with one row": (
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [3, 7], "data": [values]}]},
            "shape [3, 7] needs 3 rows",
        ),
        "strings inside FP64": (
            changed("island", datatype="FP64"),
            "input 'island' is FP64; value 0 is str",
        ),
        "unknown datatype": (changed("sex", datatype="STRING"), "datatype 'STRING' is not a V2 datatype"),
        "boolean for a categorical feature": (
            changed("island", datatype="BOOL", data=[True]),
            "feature 'island' takes a category (text); row 0 has bool True",
        ),
        "number for a categorical feature": (
            changed("island", datatype="FP64", data=[3]),
            "feature 'island' takes a category (text); row 0 has int 3",
        ),
        "the same output twice": (
            {**named, "outputs": [{"name": "label"}, {"name": "label"}]},
            "outputs ['label'] are requested more than once",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "shape [3, 7] with one row",
        "strings inside FP64",
        "unknown datatype",
        "boolean for a categorical feature",
        "number for a categorical feature",
        "the same output twice",
    ],
)
def test_inputs_that_contradict_themselves_are_refused(server, deployed, case):
    _, test, model = deployed
    body, message = _contradictions(_one_row(model, test), model)[case]
    response = v2(server, body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_client_errors_log_one_warning_line_and_no_traceback(served, deployed):
    """KServe logged a full traceback at ERROR for every 4xx (about 1 KB a bad request)."""
    url, log_path = served
    _, test, model = deployed
    start = log_path.stat().st_size
    bad = [
        lambda: v1(url, {"instances": []}),
        lambda: v2(url, {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": ["a"]}]}),
        lambda: httpx.post(
            f"{url}/v2/models/{NAME}/infer", content=b"{", headers={"content-type": "application/json"}
        ),
        lambda: httpx.get(f"{url}/v2/models/nope"),
        lambda: httpx.get(f"{url}/v1/models/nope"),
        lambda: v1(url, {"instances": [{**_one_row(model, test), "body_mass_g": "heavy"}]}),
    ]
    statuses = [send().status_code for send in bad]
    assert all(400 <= s < 500 for s in statuses), statuses
    time.sleep(0.3)
    with log_path.open() as handle:
        handle.seek(start)
        lines = [
            line
            for line in handle.read().splitlines()
            if "kserve.trace" not in line and "uvicorn.access" not in line
        ]
    assert not any("Traceback" in line or " ERROR " in line or "ERROR:" in line for line in lines), lines
    warnings = [line for line in lines if "WARNING" in line]
    assert len(warnings) == len(bad), lines
    assert all(len(line) < 600 for line in warnings)


def test_slow_and_idle_connections_are_closed(deployed):
    """uvicorn held a connection that sends nothing, or its headers a byte at a time, forever, had no
    body-read timeout, and kept idle connections 65 s (KServe's default)."""
    args, _, _ = deployed
    timeouts = ("--request_head_timeout", "1", "--request_body_timeout", "1", "--timeout_keep_alive", "1")
    with serve(*args, *timeouts) as (url, _, _):
        port = int(url.rsplit(":", 1)[1])

        def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
            sock.settimeout(seconds)
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
                return True, received
            except (TimeoutError, ConnectionResetError):
                return False, received

        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as silent:
            assert closed_within(silent, 5)[0], "a connection that sends nothing was kept"
        assert time.monotonic() - began < 4
        with socket.create_connection(("127.0.0.1", port)) as trickle:
            trickle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            assert closed_within(trickle, 5)[0], "a request head that never ends was waited for"
        with socket.create_connection(("127.0.0.1", port)) as slow_body:
            slow_body.sendall(
                f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                'content-length: 100\r\n\r\n{"instances"'.encode()
            )
            closed, answer = closed_within(slow_body, 5)
            assert closed and answer.startswith(b"HTTP/1.1 408"), answer
        with socket.create_connection(("127.0.0.1", port)) as idle:
            idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            closed, answer = closed_within(idle, 5)
            assert closed and answer.startswith(b"HTTP/1.1 200"), answer  # answered, then closed when idle


def test_version_routes_answer_for_the_version_served(server, deployed):
    """KServe answered 501 to every versioned route and to ?model_version=."""
    _, test, model = deployed
    meta = httpx.get(f"{server}/v2/models/{NAME}").json()
    (version,) = meta["versions"]  # the registry version served
    body = v2_named(model, features(model, test.head(2)))
    base = f"{server}/v2/models/{NAME}"
    assert httpx.get(f"{base}/versions/{version}").json()["name"] == NAME
    assert httpx.get(f"{base}/versions/{version}/ready").json() == {"name": NAME, "ready": True}
    assert httpx.post(f"{base}/versions/{version}/infer", json=body).status_code == 200
    assert httpx.post(f"{base}/infer?model_version={version}", json=body).status_code == 200
    assert httpx.get(f"{base}?model_version={version}").status_code == 200
    for response in (
        httpx.get(f"{base}/versions/999/ready"),
        httpx.post(f"{base}/versions/999/infer", json=body),
        httpx.get(f"{base}?model_version=999"),
    ):
        assert response.status_code == 404, response.text
        assert f"has no version '999' here: it serves version '{version}'" in response.json()["error"]


# --- V2 clients: KServe's InferenceRESTClient and NVIDIA's tritonclient ------------------------------------


def test_kserve_rest_client_conformance(server, deployed):
    """KServe's own InferenceRESTClient, V2 (JSON and binary inputs) and V1, and its health calls."""
    import asyncio

    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    _, test, model = deployed
    rows = features(model, test).dropna().head(4)
    expected = model.predict_proba(test.loc[rows.index]).astype(np.float64)

    async def run():
        async with InferenceRESTClient(RESTConfig(protocol="v2", timeout=60)) as client:
            assert await client.is_server_live(server) and await client.is_server_ready(server)
            assert await client.is_model_ready(server, NAME)
            for binary in (False, True):
                inputs = []
                for f in model.metadata["features"]:
                    values = rows[f["name"]].tolist()
                    numeric = f["kind"] == "numeric"
                    item = InferInput(f["name"], [len(values)], "FP64" if numeric else "BYTES")
                    item.set_data_from_numpy(
                        np.array(values, dtype=np.float64 if numeric else np.object_), binary_data=binary
                    )
                    inputs.append(item)
                result = await client.infer(server, InferRequest(NAME, inputs), model_name=NAME)
                outputs = {o.name: o for o in result.outputs}
                assert np.array_equal(outputs["probabilities"].as_numpy().reshape(-1, 3), expected)
        async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=60)) as client:
            answer = await client.infer(
                server, {"instances": rows.to_dict(orient="records")}, model_name=NAME
            )
            got = [[p["probabilities"][c] for c in model.classes] for p in answer["predictions"]]
            assert np.array_equal(np.array(got), expected)

    asyncio.run(run())


def test_tritonclient_conformance(server, deployed):
    """tritonclient[http], as V2 users call a server: health, metadata, JSON and binary inputs and
    outputs, a version; the answers are the in-process model's, to the last bit."""
    import tritonclient.http as triton

    _, test, model = deployed
    rows = features(model, test).dropna().head(4)
    expected = model.predict_proba(test.loc[rows.index]).astype(np.float64)
    labels = [str(c) for c in model.predict(test.loc[rows.index])]
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
        meta = client.get_model_metadata(NAME)
        assert [i["name"] for i in meta["inputs"]] == model.feature_names
        (version,) = meta["versions"]
        assert client.is_model_ready(NAME, model_version=version)
        assert "model_repository_extension" not in client.get_server_metadata()["extensions"]

        for binary in (False, True):  # JSON, then binary (the data extension), both ways
            inputs = []
            for f in model.metadata["features"]:
                values = rows[f["name"]].tolist()
                if f["kind"] == "numeric":
                    array, datatype = np.array(values, dtype=np.float64), "FP64"
                else:
                    array, datatype = np.array(values, dtype=np.object_), "BYTES"
                item = triton.InferInput(f["name"], [len(values)], datatype)
                item.set_data_from_numpy(array, binary_data=binary)
                inputs.append(item)
            outputs = [
                triton.InferRequestedOutput("label", binary_data=binary),
                triton.InferRequestedOutput("probabilities", binary_data=binary),
            ]
            result = client.infer(NAME, inputs, outputs=outputs, model_version=version if binary else "")
            got = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
            assert got == labels
            assert np.array_equal(result.as_numpy("probabilities").reshape(-1, 3), expected)
        # no outputs named: tritonclient asks for all of them, binary
        result = client.infer(NAME, inputs)
        assert np.array_equal(result.as_numpy("probabilities").reshape(-1, 3), expected)
    finally:
        client.close()


# --- fuzzing: seeded, bounded; no 5xx, and the server still right afterwards ----------------------------


def test_fuzzed_requests_get_no_5xx_and_leave_the_server_intact(server, deployed):
    """Seeded (derandomized) hypothesis fuzzing of V1, V2 JSON and V2 binary bodies: V2 inputs with any
    names, datatypes, shapes and nested data, NaN/Infinity tokens, huge integers, header lengths that are
    not numbers and random binary tails. Before issue 13 it found a 500 at once."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _, test, model = deployed
    names = [*model.feature_names, "input-0", "species", "", "false", "Island"]
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**1100), max_value=2**1100),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
        st.sampled_from(["Dream", "male", "Biscoe", "2008", "NaN"]),
    )
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
    datatypes = st.sampled_from(["FP64", "FP32", "INT64", "BOOL", "BYTES", "FP16", "UINT8", "STRING", ""])
    shapes = st.one_of(st.lists(st.integers(-2, 8), max_size=3), values)
    an_input = st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(names), scalars), "datatype": datatypes, "shape": shapes},
        optional={
            "data": values,
            "parameters": st.dictionaries(
                st.sampled_from(["binary_data_size", "content_type"]), scalars, max_size=2
            ),
        },
    )
    v2_bodies = st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(an_input, max_size=8), values)},
        optional={
            "outputs": st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["label", "probabilities", "x"])},
                    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data"]), st.booleans())},
                ),
                max_size=3,
            ),
            "parameters": st.dictionaries(
                st.sampled_from(["binary_data_output", "content_type"]), scalars, max_size=2
            ),
            "id": scalars,
        },
    )
    v1_bodies = st.fixed_dictionaries(
        {
            "instances": st.one_of(
                st.lists(st.dictionaries(st.sampled_from(names), scalars, max_size=9), max_size=3), values
            )
        }
    )
    header_lengths = st.one_of(
        st.none(), st.integers(-5, 400).map(str), st.sampled_from(["abc", "1e3", "", "+12", "0x10"])
    )
    requests = st.one_of(
        st.tuples(st.just("v2"), v2_bodies, st.none(), st.binary(max_size=64)),
        st.tuples(st.just("v2"), v2_bodies, header_lengths, st.binary(max_size=64)),
        st.tuples(st.just("v1"), v1_bodies, st.none(), st.just(b"")),
    )
    seen: list[int] = []
    with httpx.Client(timeout=30) as client:

        @settings(
            max_examples=1000,
            deadline=None,
            derandomize=True,  # seeded: the same requests on every run
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(requests)
        def check(request):
            kind, body, header_length, tail = request
            content = json.dumps(body).encode()  # NaN and Infinity tokens included, as lenient clients send
            headers = {}
            if header_length is not None:
                headers["inference-header-content-length"] = header_length
                content += tail
            path = f"/v2/models/{NAME}/infer" if kind == "v2" else f"/v1/models/{NAME}:predict"
            response = client.post(f"{server}{path}", content=content, headers=headers)
            seen.append(response.status_code)
            assert response.status_code < 500, (content[:500], headers, response.text)
            if response.status_code >= 400:
                assert response.json()["error"]

        check()  # 1,000 requests: about 17 s here (bounded by the count, not by a clock that could flake)
    assert len(seen) >= 500 and any(s == 400 for s in seen)
    assert httpx.get(f"{server}/v2/health/live").status_code == 200
    rows = features(model, test)
    response = v1(server, {"instances": rows.to_dict(orient="records")})
    got = np.array([[p["probabilities"][c] for c in model.classes] for p in response.json()["predictions"]])
    assert np.array_equal(got, model.predict_proba(test).astype(np.float64))
