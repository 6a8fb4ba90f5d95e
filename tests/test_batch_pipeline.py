"""The batch prediction pipeline through kfp.local (``python -m pipelines.batch_run``, as `make predict-batch`
runs it): the registry's champion on the demo table, a fan-out over a folder of Parquet files, and a job that
stops (nothing at the output, no staging folder left)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.batch_predict.core import SUCCESS_FILE
from components.common.io import DEMO_DATASETS
from components.common.servable import ServableModel
from components.registry.tracking import local_store
from pipelines.local_run import task_outputs
from tests.conftest import REPO
from tests.test_batch_predict import build_served_model
from tests.test_serving_server import publish

pytestmark = pytest.mark.slow
NAME = "penguins-species"


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A penguins model (with its TFDV schema) registered as version 1 and made the champion of a local
    store: (tracking URI, model dir)."""
    tmp = tmp_path_factory.mktemp("batch_pipeline")
    model = build_served_model(
        tmp, "demo://penguins", target="species", task="classification", candidates=["logistic_regression"]
    )
    store = local_store(tmp / "mlflow")
    assert publish(store, model) == "1"
    return store, model


def batch_run(tmp: Path, store: str, *args: str) -> tuple[int, str, Path | None]:
    root = tmp / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.batch_run",
            "--pipeline-root",
            str(root),
            "--mlflow-tracking-uri",
            store,
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    runs = sorted(root.glob("kfp-tabular-batch-predict-*")) if root.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, (runs[-1] if runs else None)


def expected(model_dir: Path) -> np.ndarray:
    model = ServableModel.load(model_dir)
    return model.predict_proba(pd.read_csv(DEMO_DATASETS["penguins"])).astype(np.float64)


def demo_parts(folder: Path, files: int = 5) -> None:
    """The demo table as Parquet files, with a row id to pass through."""
    folder.mkdir()
    table = pd.read_csv(DEMO_DATASETS["penguins"]).reset_index().rename(columns={"index": "penguin_id"})
    for i, part in enumerate(np.array_split(table, files)):
        part.to_parquet(folder / f"part-{i:02d}.parquet", index=False)


def test_demo_data_fanned_out_over_parquet_files_with_the_champion(champion, tmp_path):
    store, model = champion
    folder = tmp_path / "in"
    demo_parts(folder)
    out = tmp_path / "scored"
    code, log, run = batch_run(
        tmp_path,
        store,
        "--model-uri",
        f"models:/{NAME}@champion",
        "--input-uri",
        str(folder),
        "--output-uri",
        str(out),
        "--passthrough-columns",
        "penguin_id,species",
        "--max-shards",
        "2",
        "--batch-rows",
        "32",
    )
    assert code == 0, log[-3000:]
    assert "rows in: 344; scored: 344; rejected: 0" in log and f"**{NAME}** version **1**" in log
    assert "5 input file(s) in 2 shard(s)" in log
    assert sorted(p.name for p in out.iterdir()) == [SUCCESS_FILE, "part-00000.parquet", "part-00001.parquet"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    df = pd.read_parquet(out)
    assert list(df.columns[:3]) == ["penguin_id", "species", "prediction"]
    assert df["penguin_id"].tolist() == list(range(344))  # the input's order, across shards
    assert np.array_equal(df[["proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]].to_numpy(), expected(model))
    assert set(df["model_name"]) == {NAME} and set(df["model_version"]) == {"1"}
    assert (df["prediction"] == df["species"]).mean() > 0.9
    outputs = task_outputs(run)
    metrics = outputs["commit-batch"]["artifacts"]["metrics"]["metadata"]
    assert (metrics["rows_in"], metrics["rows_scored"], metrics["rows_rejected"]) == (344, 344, 0)
    assert metrics["rows_per_second"] > 0 and metrics["shards"] == 2
    assert outputs["plan-batch"]["artifacts"]["model"]["metadata"]["model_version"] == "1"
    assert json.loads((out / SUCCESS_FILE).read_text())["rows_scored"] == 344


def test_a_shard_that_fails_leaves_no_output_and_no_staging(champion, tmp_path):
    """The first file passes the plan's check; the last lacks a feature: its shard stops naming the column
    after the first shard wrote its part; the exit handler removes the staging folder. (The model by its
    folder this time: a model artifact URI.)"""
    store, model = champion
    folder = tmp_path / "in"
    demo_parts(folder, files=2)
    last = folder / "part-01.parquet"
    pd.read_parquet(last).drop(columns=["bill_depth_mm"]).to_parquet(last, index=False)
    out = tmp_path / "scored"
    code, log, run = batch_run(
        tmp_path,
        store,
        "--model-uri",
        f"models:/{NAME}/1",
        "--input-uri",
        str(folder),
        "--output-uri",
        str(out),
    )
    assert code == 1
    assert "FAILED at 'score-shard" in log and "lacks feature column ['bill_depth_mm']" in log, log[-3000:]
    assert "nothing was written" in log
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert "clean-staging" in task_outputs(run)
