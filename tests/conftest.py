"""Shared fixtures: the demo table, its splits, and trained models (built once per session)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.common.io import DEMO_DATASETS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def penguins() -> pd.DataFrame:
    return pd.read_csv(DEMO_DATASETS["penguins"])


def make_table(
    rows: int = 400, seed: int = 0, task: str = "classification", classes: int = 2
) -> pd.DataFrame:
    """A small synthetic table with numeric and categorical features, missing values and a learnable target."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.uniform(0, 100, size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    size = rng.choice(["S", "M", "L", None], size=rows, p=[0.3, 0.3, 0.3, 0.1])
    x2_missing = x2.copy()
    x2_missing[rng.random(rows) < 0.05] = np.nan
    signal = 2 * x1 + (x2 - 50) / 25 + (color == "red") * 1.5
    df = pd.DataFrame({"x one": x1, "x2": x2_missing, "color": color, "size": size})
    if task == "regression":
        df["y"] = signal + rng.normal(scale=0.3, size=rows)
    else:
        edges = np.quantile(signal, np.linspace(0, 1, classes + 1)[1:-1])
        df["y"] = np.array([f"class_{i}" for i in range(classes)])[np.searchsorted(edges, signal)]
    return df


def make_messy_table(rows: int = 600, seed: int = 0, task: str = "classification") -> pd.DataFrame:
    """A table like users bring: a row id, an e-mail column, a date, a yes/no column, integer store codes
    named like ids, missing values and a few outliers, and a target that depends on several of them."""
    rng = np.random.default_rng(seed)
    day = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 730, rows), unit="D")
    member = rng.choice(["yes", "no"], size=rows, p=[0.4, 0.6])
    store = rng.integers(1, 9, rows)
    income = rng.lognormal(10, 0.6, rows)
    income[rng.random(rows) < 0.01] *= 40  # outliers
    income[rng.random(rows) < 0.05] = np.nan
    visits = rng.poisson(3, rows).astype(float)
    region = rng.choice(["north", "south", "east", "west"], size=rows)
    signal = (
        (member == "yes") * 1.2
        + (day.month.to_numpy() >= 6) * 0.8
        + np.nan_to_num(np.log(income) - 10)
        + 0.3 * visits
        + (store % 3 == 0) * 0.7
        + rng.normal(scale=0.4, size=rows)
    )
    df = pd.DataFrame(
        {
            "Row ID": np.arange(1, rows + 1),
            "Email": [f"user{i}@example.com" for i in rng.permutation(rows)],
            "Signup Date": day.strftime("%Y-%m-%d"),
            "Member": member,
            "store_id": store,
            "Income": income,
            "Visits": visits,
            "Region": region,
        }
    )
    if task == "regression":
        df["Spend"] = signal * 10 + 50
    else:
        df["Churned"] = np.where(signal > np.median(signal), "yes", "no")
    return df


def split_paths(tmp: Path) -> dict[str, str]:
    return {name: str(tmp / f"{name}.parquet") for name in ("train", "eval", "test")}


def run_ingest(source: str, tmp: Path, **overrides) -> tuple[object, dict[str, str]]:
    from components.ingest.core import ingest

    paths = split_paths(tmp)
    args = dict(
        source_uri=source,
        file_format="auto",
        target="species",
        task="classification",
        drop_columns=[],
        eval_fraction=0.15,
        test_fraction=0.2,
        seed=42,
    )
    args.update(overrides)
    result = ingest(**args, train_path=paths["train"], eval_path=paths["eval"], test_path=paths["test"])
    return result, paths


def build_model(
    tmp: Path, source: str, *, target: str, task: str, max_trials: int = 3, **train_overrides
) -> Path:
    """ingest -> transform -> train on ``source``; returns the model directory."""
    from components.train.core import train
    from components.transform.core import fit_transform

    result, paths = run_ingest(source, tmp, target=target, task=task)
    fit_transform(
        train_path=paths["train"],
        eval_path=paths["eval"],
        target=result.target,
        task=task,
        max_categories=30,
        transform_dir=str(tmp / "transform"),
        transformed_train_path=str(tmp / "t_train.parquet"),
        transformed_eval_path=str(tmp / "t_eval.parquet"),
    )
    args = dict(
        candidates=[], max_trials=max_trials, max_seconds=300, cv_folds=3, search_sample_rows=50_000, seed=42
    )
    args.update(train_overrides)
    train(
        transformed_train_path=str(tmp / "t_train.parquet"),
        transformed_eval_path=str(tmp / "t_eval.parquet"),
        transform_dir=str(tmp / "transform"),
        model_dir=str(tmp / "model"),
        **args,
    )
    return tmp / "model"


@pytest.fixture(scope="session")
def penguins_model(tmp_path_factory) -> tuple[Path, Path]:
    """A model trained on the demo data: (model dir, test split path)."""
    tmp = tmp_path_factory.mktemp("penguins_model")
    model = build_model(tmp, "demo://penguins", target="species", task="classification")
    return model, tmp / "test.parquet"


# --- the containers tier: one engine, images built once per session ---------------------------------------


@pytest.fixture(scope="session")
def engine():
    """A Docker-compatible engine (the Docker SDK's ``from_env``: ``DOCKER_HOST`` or the default socket)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:  # no SDK, no socket, daemon down: all mean "no engine here"
        pytest.skip(
            f"no Docker-compatible engine reachable (DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}): {exc}"
        )
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(engine):
    """`make images`, as a user would run it; each image must then exist under its exact name."""
    from components.images import PIPELINE_IMAGE, SERVING_IMAGE

    started = time.perf_counter()
    proc = subprocess.run(["make", "images"], cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    print(f"make images: {time.perf_counter() - started:.0f}s")
    tags = {tag for image in engine.images.list() for tag in image.tags}
    for image in (PIPELINE_IMAGE, SERVING_IMAGE):
        assert image in tags, f"{image} not built; have {sorted(tags)}"
    return engine


@contextlib.contextmanager
def start_mlflow_server(folder: Path) -> Iterator[tuple[str, str]]:
    """A real `mlflow server` on 127.0.0.1 (SQLite store, proxied artifacts stored under ``folder``), as
    manifests/ runs it on a cluster; yields (tracking URI, artifacts destination)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    destination = (folder / "artifacts").as_uri()
    log = open(folder / "server.log", "w")  # noqa: SIM115 (open for the server's lifetime)
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            destination,
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", proc, folder / "server.log")
        yield uri, destination
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log_path: Path, seconds: float = 300) -> None:
    """Until ``url`` answers 200; fails with the process's log if it exits or time runs out."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer: {Path(log_path).read_text()[-3000:]}")
        time.sleep(0.5)
