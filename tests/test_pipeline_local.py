"""The whole pipeline through kfp.local (SubprocessRunner, no cluster): artifacts, decision, bad input.

These run the README's local command (``python -m pipelines.local_run``) as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.common.io import sha256_file
from pipelines.local_run import task_outputs
from tests.conftest import REPO, make_table
from tests.pipeline_checks import assert_demo_outputs

pytestmark = pytest.mark.slow


def local_run(tmp: Path, *args: str) -> tuple[int, str, Path, Path]:
    root, repo = tmp / "runs", tmp / "models"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.local_run",
            "--pipeline-root",
            str(root),
            "--model-repository",
            str(repo),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    runs = sorted(root.glob("kfp-tabular-*")) if root.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, (runs[-1] if runs else root), repo


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The demo pipeline, run twice with the same inputs into the same model repository."""
    tmp = tmp_path_factory.mktemp("demo")
    first = local_run(tmp / "a", "--model-repository", str(tmp / "models"))
    second = local_run(tmp / "b", "--model-repository", str(tmp / "models"))
    return first, second, tmp / "models"


def test_demo_run_produces_every_artifact_and_deploys(demo_runs):
    (code, output, run_dir, _), _, repo = demo_runs
    assert code == 0, output
    assert "gate       BLESSED" in output and "deploy     penguins-species version 1 at" in output
    assert "no current model to check drift against (first run)" in output
    assert_demo_outputs(task_outputs(run_dir), repo)


def test_same_inputs_same_split_metrics_and_decision(demo_runs):
    (_, _, run_a, _), (code_b, output_b, run_b, _), repo = demo_runs
    assert code_b == 0, output_b
    a, b = task_outputs(run_a), task_outputs(run_b)
    for split in ("train_data", "eval_data", "test_data"):
        assert sha256_file(a["ingest"]["artifacts"][split]["uri"]) == sha256_file(
            b["ingest"]["artifacts"][split]["uri"]
        )
    assert (
        a["train"]["artifacts"]["model"]["metadata"]["params"]
        == b["train"]["artifacts"]["model"]["metadata"]["params"]
    )
    assert (
        a["evaluate"]["artifacts"]["metrics"]["metadata"] == b["evaluate"]["artifacts"]["metrics"]["metadata"]
    )
    assert a["evaluate"]["parameters"] == b["evaluate"]["parameters"]
    # the second run's training data was compared with the first model's, and the same model is not
    # published twice
    assert "drift against the current model's data (" in output_b and "beyond bounds" not in output_b
    assert "deploy     penguins-species version 1 at" in output_b
    assert sorted(p.name for p in (repo / "penguins-species").iterdir()) == ["1", "LATEST"]


def test_gate_refusing_skips_deploy(tmp_path):
    code, output, run_dir, repo = local_run(tmp_path, "--threshold", "accuracy=1.01", "--max-trials", "3")
    assert code == 3, output
    assert "NOT BLESSED: accuracy" in output and "deploy     skipped" in output
    out = task_outputs(run_dir)
    assert out["evaluate"]["parameters"]["Output"] is False
    assert "deploy" not in out and not (run_dir / "deploy").exists()
    assert not repo.exists()


def _schema_violation(tmp: Path) -> list[str]:
    schema = tmp / "schema.pbtxt"
    # a curated schema that says 'island' only takes two values; the data has three
    schema.write_text(
        'feature { name: "island" type: BYTES domain: "island" }\n'
        'string_domain { name: "island" value: "Biscoe" value: "Torgersen" }\n'
        'feature { name: "species" type: BYTES }\n'
    )
    return ["--config", str(_config(tmp, f"schema_uri: {schema}\n"))]


def _config(tmp: Path, text: str) -> Path:
    path = tmp / "config.yaml"
    path.write_text(text)
    return path


def _csv(tmp: Path, df) -> list[str]:
    df.to_csv(tmp / "data.csv", index=False)
    return ["--source-uri", str(tmp / "data.csv"), "--target", "y", "--max-trials", "2"]


BAD_INPUT = {
    "missing file": (lambda tmp: ["--source-uri", str(tmp / "nope.csv")], "ingest", "data source not found"),
    "empty table": (lambda tmp: _csv(tmp, make_table(20).iloc[:0]), "ingest", "has no rows"),
    "missing target": (
        lambda tmp: ["--target", "beak_colour"],
        "ingest",
        "target column 'beak_colour' is not in the table",
    ),
    "wrong type": (
        lambda tmp: _csv(
            tmp, make_table(200).assign(x2=lambda d: d["x2"].astype(object).where(d.index != 3, "lots"))
        ),
        "ingest",
        "column 'x2' is numeric but 1 of its 190 values are not numbers, e.g. ['lots']",
    ),
    "all-missing column": (
        lambda tmp: _csv(tmp, make_table(200).assign(blank=None)),
        "ingest",
        r"['blank'] have no values",
    ),
    "schema violation": (_schema_violation, "validate", "island"),
    "bad config": (
        lambda tmp: ["--config", str(_config(tmp, "thresholds: {rmse: 1}\n"))],
        None,
        "not classification metrics",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_stops_at_its_stage_and_deploys_nothing(tmp_path, case):
    make_args, stage, message = BAD_INPUT[case]
    code, output, run_dir, repo = local_run(tmp_path, *make_args(tmp_path))
    assert code == 1, output
    assert message in output
    if stage:
        [line] = [line for line in output.splitlines() if line.startswith("kfp-tabular: FAILED")]
        assert f"FAILED at stage '{stage}' after" in line and message in line  # the reason, on one line
        assert "\x1b[" not in line
        done = set(task_outputs(run_dir)) if run_dir.exists() else set()
        assert stage not in done and "train" not in done
        assert not (run_dir / stage / "executor_output.json").exists()
    assert not repo.exists()
    assert "nothing was deployed" in output or "configuration error" in output


def test_executor_outputs_are_json(demo_runs):
    (_, _, run_dir, _), _, _ = demo_runs
    for path in run_dir.glob("*/executor_output.json"):
        json.loads(path.read_text())


# --- a user's own table (issue 11) ------------------------------------------------------------------------


def test_an_ordinary_regression_table_works_the_first_time(tmp_path):
    """An id column, a date column, missing values and a few outliers: a sensible, named model, and a
    summary that says what was done to the columns. Nothing but source, target and task is set."""
    from tests.conftest import make_messy_table

    df = make_messy_table(800, seed=11, task="regression")
    df.loc[df.sample(frac=0.1, random_state=1).index, "Spend"] = None  # rows without a target
    df.to_csv(tmp_path / "shop_customers.csv", index=False)
    code, output, run_dir, repo = local_run(
        tmp_path,
        "--source-uri",
        str(tmp_path / "shop_customers.csv"),
        "--target",
        "Spend",
        "--task",
        "regression",
        "--max-trials",
        "4",
    )
    assert code == 0, output
    assert "model name 'shop-customers-spend'; gate {'r2': 0.5}" in output
    assert (
        "columns: 1 datetime (signup_date); 1 boolean (member); 2 categorical (store_id, region); 2 numeric (income, visits)"
        in output
    )
    assert "dropped columns: row_id (id); email (id)" in output
    assert "dropped 80 of 800 rows: the target is missing" in output
    assert "gate       BLESSED: all checks passed" in output
    assert (repo / "shop-customers-spend" / "1" / "train_stats.pb").is_file()


def test_a_rescaled_column_between_two_runs_stops_the_second_naming_it(tmp_path):
    from tests.conftest import make_messy_table

    df = make_messy_table(600, seed=12)
    df.to_csv(tmp_path / "customers.csv", index=False)
    args = ["--source-uri", str(tmp_path / "customers.csv"), "--target", "Churned", "--max-trials", "2"]
    args += ["--threshold", "roc_auc=0.5"]  # this test is about the second run: the first must deploy
    code, output, _, repo = local_run(
        tmp_path / "first", *args, "--model-repository", str(tmp_path / "models")
    )
    assert code == 0, output
    first = sorted((tmp_path / "models" / "customers-churned").iterdir())
    df["Income"] = df["Income"] * 1000  # a unit change upstream
    df.to_csv(tmp_path / "customers.csv", index=False)
    code, output, run_dir, _ = local_run(
        tmp_path / "second", *args, "--model-repository", str(tmp_path / "models")
    )
    assert code == 1, output
    [line] = [line for line in output.splitlines() if line.startswith("kfp-tabular: FAILED")]
    assert "FAILED at stage 'validate'" in line and "train: feature 'income': DRIFT: jensen_shannon" in line
    assert "above the reference maximum" in line
    assert sorted((tmp_path / "models" / "customers-churned").iterdir()) == first  # nothing new deployed
