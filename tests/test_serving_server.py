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
def server(deployed):
    args, _, _ = deployed
    with serve(*args) as (url, _, _):
        yield url


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
            422,
            "JSON",
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
        # endpoint: KServe's server-level /v2/health/ready answers 200 even with no model loaded
        assert httpx.get(f"{url}/v2/models/{NAME}/ready").status_code == 503
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
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
