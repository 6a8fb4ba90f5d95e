"""The whole pipeline through kfp.local (SubprocessRunner, no cluster): artifacts, tracking, the registry,
the gate, bad input. These run the README's local command (``python -m pipelines.local_run``) as a user
would, each against its own MLflow store (a SQLite file, or a real tracking server on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.common.io import sha256_file
from components.registry import models as registry
from components.registry.tracking import client, local_store
from pipelines.local_run import task_outputs
from tests.conftest import REPO, make_table
from tests.pipeline_checks import assert_demo_outputs

pytestmark = pytest.mark.slow
NAME = "penguins-species"


def local_run(tmp: Path, *args: str, store: str | None = None) -> tuple[int, str, Path, str]:
    """``python -m pipelines.local_run`` into ``tmp``; returns (exit code, output, run folder, tracking URI)."""
    root = tmp / "runs"
    store = store or local_store(tmp / "mlflow")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.local_run",
            "--pipeline-root",
            str(root),
            "--mlflow-tracking-uri",
            store,
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    runs = sorted(root.glob("kfp-tabular-*")) if root.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, (runs[-1] if runs else root), store


def versions(store: str, name: str = NAME) -> list:
    return sorted(client(store).search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def mlflow_runs(store: str, name: str = NAME) -> list:
    mlflow_client = client(store)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None:
        return []
    runs = mlflow_client.search_runs(
        [experiment.experiment_id], "attributes.status != 'RUNNING'", order_by=["start_time ASC"]
    )
    return [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # not the trials


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """The demo pipeline, run twice into one MLflow store (the second with another seed: another model),
    then a third time with a model that cannot match the champion (trained on a tenth of the rows)."""
    tmp = tmp_path_factory.mktemp("demo")
    store = local_store(tmp / "mlflow")
    first = local_run(tmp / "a", store=store)
    second = local_run(tmp / "b", "--seed", "7", store=store)
    weak = local_run(
        tmp / "c",
        "--seed",
        "7",
        "--test-fraction",
        "0.5",
        "--eval-fraction",
        "0.35",
        "--candidates",
        "logistic_regression",
        "--max-trials",
        "1",
        "--threshold",
        "log_loss=2.0",
        store=store,
    )
    return first, second, weak, store


def test_demo_run_produces_every_artifact_and_deploys(demo_runs):
    (code, output, run_dir, store), *_ = demo_runs
    assert code == 0, output
    assert (
        "gate       BLESSED" in output
        and f"deploy     models:/{NAME}/1 is the champion (first champion" in output
    )
    assert "no current model to check drift against (first run)" in output and "no champion yet" in output
    assert_demo_outputs(task_outputs(run_dir), store)


def test_two_runs_two_versions_the_second_compared_with_the_first(demo_runs):
    (_, _, run_a, store), (code_b, output_b, run_b, _), *_ = demo_runs
    assert code_b == 0, output_b
    assert f"compared with models:/{NAME}/1" in output_b
    assert f"drift against the current model's data (models:/{NAME}/1)" in output_b
    assert f"deploy     models:/{NAME}/2 is the champion (was version 1; local)" in output_b
    evaluation = task_outputs(run_b)["evaluate"]["artifacts"]
    report = Path(evaluation["report"]["uri"]).read_text()
    assert "| metric | this model | champion |" in report and f"models:/{NAME}/1" in report
    assert evaluation["report"]["metadata"]["compared_with"] == f"models:/{NAME}/1"

    first, second, *_ = mlflow_runs(store)
    listed = versions(store)
    assert [v.version for v in listed][:2] == [1, 2]
    assert [v.run_id for v in listed][:2] == [
        first.info.run_id,
        second.info.run_id,
    ]  # a version leads to its run
    assert registry.champion(store, NAME).version == "2" and registry.history(store, NAME) == ["1", "2"]
    for run, folder in ((first, run_a), (second, run_b)):
        assert run.info.status == "FINISHED"
        params, tags = run.data.params, run.data.tags
        # the whole configuration, stage by stage
        for field in (
            "source_uri",
            "seed",
            "drift_threshold",
            "max_categories",
            "max_trials",
            "thresholds",
            "deploy_target",
        ):
            assert field in params, field
        assert tags["kfp.run"] == folder.name and tags["kfp_tabular.code_version"].startswith(
            ("git:", "kfp-tabular")
        )
        assert tags["kfp_tabular.pipeline_image"].endswith("/pipeline:0.1.0")
        # lineage: the data's hash, its column schema, the TFDV schema and the reports, from the run
        [dataset] = run.inputs.dataset_inputs
        assert tags["kfp_tabular.data_sha256"].startswith(dataset.dataset.digest)
        assert json.loads(dataset.dataset.source) == {"uri": "demo://penguins"}
        assert json.loads(dataset.dataset.profile)["rows"] == 344 and tags["kfp_tabular.schema_sha256"]
        metrics = run.data.metrics
        assert metrics["rows"] == 344 and "test.roc_auc" in metrics and metrics["blessed"] == 1.0
        files = {a.path for a in client(store).list_artifacts(run.info.run_id, "validate")}
        assert "validate/statistics.html" in files and "validate/report.md" in files
        trials = client(store).search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
        )
        assert len(trials) == int(metrics["trials"]) == 12
    assert (
        "champion_test.roc_auc" in second.data.metrics and "champion_test.roc_auc" not in first.data.metrics
    )


def test_a_worse_challenger_is_refused_and_the_champion_stays(demo_runs):
    _, _, (code, output, run_dir, store), _ = demo_runs
    assert code == 3, output
    assert "NOT BLESSED: worse: log_loss = " in output and "vs champion" in output
    assert "deploy     skipped: the model was not blessed (the champion is unchanged)" in output
    out = task_outputs(run_dir)
    assert "register" not in out and "deploy" not in out
    assert registry.champion(store, NAME).version == "2" and len(versions(store)) == 2
    assert mlflow_runs(store)[-1].data.tags["kfp_tabular.decision"] == "NOT BLESSED"


def test_executor_outputs_are_json(demo_runs):
    (_, _, run_dir, _), *_ = demo_runs
    for path in run_dir.glob("*/executor_output.json"):
        json.loads(path.read_text())


def test_the_ui_lists_the_runs(demo_runs, tmp_path):
    """`make ui` (the MLflow UI on 127.0.0.1) answers, and its runs page's API lists both runs."""
    import httpx

    from tests.conftest import free_port, wait_for_http

    *_, store = demo_runs
    port = free_port()
    proc = subprocess.Popen(
        ["make", "-s", "ui", f"UI_PORT={port}", f"TRACKING_URI={store}"],
        cwd=REPO,
        stdout=open(tmp_path / "ui.log", "w"),  # noqa: SIM115 (open for the UI's lifetime)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", proc, tmp_path / "ui.log")
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and '<div id="root"' in page.text.replace("'", '"')
        experiment = client(store).get_experiment_by_name(NAME)
        found = httpx.post(
            f"{url}/ajax-api/2.0/mlflow/runs/search",
            json={"experiment_ids": [experiment.experiment_id], "max_results": 100},
            timeout=30,
        ).json()["runs"]
        names = {r["info"]["run_name"] for r in found}
        assert {r.info.run_name for r in mlflow_runs(store)} <= names
        models = httpx.get(
            f"{url}/ajax-api/2.0/mlflow/registered-models/get", params={"name": NAME}, timeout=30
        ).json()
        assert {"alias": "champion", "version": "2"} in models["registered_model"]["aliases"]
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)


def test_the_flow_against_a_tracking_server(tmp_path):
    """The shared-server mode a cluster uses: `mlflow server` on 127.0.0.1, artifacts proxied by it."""
    from tests.conftest import start_mlflow_server

    with start_mlflow_server(tmp_path / "server") as (uri, destination):
        code, output, run_dir, _ = local_run(tmp_path, "--max-trials", "2", store=uri)
        assert code == 0, output
        [version] = versions(uri)
        assert version.source.startswith("mlflow-artifacts:/") and registry.champion(uri, NAME).version == "1"
        # where KServe would read the files: the server's artifact store, the model's bytes
        stored = Path(registry.storage_uri(version.source, destination).removeprefix("file://"))
        model = task_outputs(run_dir)["train"]["artifacts"]["model"]
        assert sha256_file(stored / "model.joblib") == model["metadata"]["sha256"]
        assert mlflow_runs(uri)[0].info.status == "FINISHED"


def test_an_unreachable_tracking_server_fails_the_run_before_anything(tmp_path):
    from tests.conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    code, output, run_dir, _ = local_run(tmp_path, "--max-trials", "2", store=uri)
    assert code == 1, output
    [line] = [line for line in output.splitlines() if line.startswith("kfp-tabular: FAILED")]
    assert (
        "FAILED at stage 'start-run'" in line and f"the MLflow tracking server {uri} does not answer" in line
    )
    assert "ingest" not in task_outputs(run_dir)


def test_gate_refusing_skips_deploy(tmp_path):
    code, output, run_dir, store = local_run(tmp_path, "--threshold", "accuracy=1.01", "--max-trials", "3")
    assert code == 3, output
    assert "NOT BLESSED: accuracy" in output and "deploy     skipped" in output
    out = task_outputs(run_dir)
    assert out["evaluate"]["parameters"]["Output"] is False
    assert "deploy" not in out and not (run_dir / "deploy").exists()
    assert versions(store) == [] and mlflow_runs(store)[0].info.status == "FINISHED"


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


# One bad input per stage that stops a run (and the configuration, which stops it before it starts): what
# a failed run leaves is the same whatever the error. Each error's own message is tested on the stage's
# core (tests/test_ingest.py: empty tables, a missing target, non-numbers in a numeric column, empty
# columns and more; tests/test_validate.py).
BAD_INPUT = {
    "missing file": (lambda tmp: ["--source-uri", str(tmp / "nope.csv")], "ingest", "data source not found"),
    "wrong type": (
        lambda tmp: _csv(
            tmp, make_table(200).assign(x2=lambda d: d["x2"].astype(object).where(d.index != 3, "lots"))
        ),
        "ingest",
        "column 'x2' is numeric but 1 of its 190 values are not numbers, e.g. ['lots']",
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
    code, output, run_dir, store = local_run(tmp_path, *make_args(tmp_path))
    assert code == 1, output
    assert message in output
    if stage:
        [line] = [line for line in output.splitlines() if line.startswith("kfp-tabular: FAILED")]
        assert f"FAILED at stage '{stage}' after" in line and message in line  # the reason, on one line
        assert "\x1b[" not in line
        done = set(task_outputs(run_dir)) if run_dir.exists() else set()
        assert stage not in done and "train" not in done
        assert not (run_dir / stage / "executor_output.json").exists()
        [run] = mlflow_runs(store, mlflow_name(make_args(tmp_path)))
        assert run.info.status == "FAILED" and run.data.tags["kfp_tabular.error"]  # the exit handler ran
    assert not os.path.exists(store.removeprefix("sqlite:///")) or versions(store) == []
    assert "nothing was deployed" in output or "configuration error" in output


def mlflow_name(args: list[str]) -> str:
    from components.config import default_model_name

    source = args[args.index("--source-uri") + 1] if "--source-uri" in args else "demo://penguins"
    target = args[args.index("--target") + 1] if "--target" in args else "species"
    return default_model_name(source, target)


# --- a user's own table (issue 11) ------------------------------------------------------------------------


def test_an_ordinary_regression_table_works_the_first_time_and_a_rescaled_column_stops_the_next_run(tmp_path):
    """An id column, a date column, missing values and a few outliers: a sensible, named model, and a
    summary that says what was done to the columns; nothing but source, target and task is set. Then the
    same table with one column in other units (a unit change upstream): the next run stops at validation,
    naming the column, and the champion stays."""
    from tests.conftest import make_messy_table

    df = make_messy_table(800, seed=11, task="regression")
    df.loc[df.sample(frac=0.1, random_state=1).index, "Spend"] = None  # rows without a target
    df.to_csv(tmp_path / "shop_customers.csv", index=False)
    args = ["--source-uri", str(tmp_path / "shop_customers.csv"), "--target", "Spend", "--task", "regression"]
    store = local_store(tmp_path / "mlflow")
    code, output, run_dir, _ = local_run(tmp_path / "first", *args, "--max-trials", "4", store=store)
    assert code == 0, output
    assert "model name 'shop-customers-spend'; gate {'r2': 0.5}" in output
    assert (
        "columns: 1 datetime (signup_date); 1 boolean (member); 2 categorical (store_id, region); 2 numeric (income, visits)"
        in output
    )
    assert "dropped columns: row_id (id); email (id)" in output
    assert "dropped 80 of 800 rows: the target is missing" in output
    assert "gate       BLESSED: all checks passed" in output
    assert registry.champion(store, "shop-customers-spend").version == "1"

    df["Income"] = df["Income"] * 1000
    df.to_csv(tmp_path / "shop_customers.csv", index=False)
    code, output, run_dir, _ = local_run(tmp_path / "second", *args, "--max-trials", "2", store=store)
    assert code == 1, output
    [line] = [line for line in output.splitlines() if line.startswith("kfp-tabular: FAILED")]
    assert "FAILED at stage 'validate'" in line and "train: feature 'income': DRIFT: jensen_shannon" in line
    assert "above the reference maximum" in line
    assert len(versions(store, "shop-customers-spend")) == 1  # nothing new registered or deployed
    assert registry.champion(store, "shop-customers-spend").version == "1"
