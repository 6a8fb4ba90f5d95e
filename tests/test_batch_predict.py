"""Batch prediction's core: typing like training, the schema check, quarantine, atomic output, streaming,
fan-out and commit, and the answers of the model server to the last bit (a real server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.batch_predict import core
from components.common.columns import sanitize_column_names
from components.common.errors import ConfigError, DataValidationError, InputDataError
from components.common.servable import ServableModel
from tests.conftest import make_messy_table, run_ingest

ROWS = 600


def build_served_model(tmp: Path, source: str, *, target: str, task: str, candidates: list[str]) -> Path:
    """ingest -> validate (TFDV statistics and schema) -> transform -> train: a model directory carrying
    schema.pbtxt and train_stats.pb, as the pipeline builds it."""
    from components.train.core import train
    from components.transform.core import fit_transform
    from components.validate.core import validate_splits

    result, paths = run_ingest(source, tmp, target=target, task=task)
    out = tmp / "validate"
    validate_splits(
        paths,
        target=result.target,
        statistics_dir=str(out / "statistics"),
        schema_path=str(out / "schema.pbtxt"),
        html_path=str(out / "statistics.html"),
        report_path=str(out / "report.md"),
    )
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
    train(
        transformed_train_path=str(tmp / "t_train.parquet"),
        transformed_eval_path=str(tmp / "t_eval.parquet"),
        transform_dir=str(tmp / "transform"),
        model_dir=str(tmp / "model"),
        candidates=candidates,
        max_trials=1,
        max_seconds=60,
        cv_folds=2,
        search_sample_rows=50_000,
        seed=42,
        train_stats_path=str(out / "statistics" / "train.pb"),
        schema_path=str(out / "schema.pbtxt"),
    )
    return tmp / "model"


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A model of the messy table (a date, a yes/no column, integer store codes, ids and e-mails dropped),
    and the raw CSV it was trained on: (model dir, csv path, raw frame)."""
    tmp = tmp_path_factory.mktemp("batch_messy")
    raw = make_messy_table(ROWS)
    csv = tmp / "messy.csv"
    raw.to_csv(csv, index=False)
    model = build_served_model(
        tmp, str(csv), target="Churned", task="classification", candidates=["hist_gradient_boosting"]
    )
    return model, csv, raw


def expected_proba(model_dir: Path, raw: pd.DataFrame) -> np.ndarray:
    """What the fitted scikit-learn pipeline gives for the raw rows, typed as ingestion typed them."""
    model = ServableModel.load(model_dir)
    df = raw.rename(columns=sanitize_column_names(raw.columns))
    df["store_id"] = df["store_id"].map(
        lambda v: str(int(v))
    )  # integer codes: categories, as ingestion made them
    return model.predict_proba(df).astype(np.float64)


def proba(out: pd.DataFrame) -> np.ndarray:
    return out[[c for c in out.columns if c.startswith("proba_")]].to_numpy()


def no_leftovers(folder: Path) -> list[str]:
    """Files a failed job left in ``folder`` (temporaries included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_csv_with_raw_names_is_typed_like_training_and_streamed(messy, tmp_path):
    model, csv, raw = messy
    out = tmp_path / "out" / "scored.parquet"
    result = core.predict(
        model_dir=model, input_uri=str(csv), output_uri=str(out), passthrough=["Row ID"], batch_rows=64
    )
    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (ROWS, ROWS, 0)
    assert result.warnings == []  # the training table passes its own schema
    table = pq.read_table(out)
    assert pq.ParquetFile(out).metadata.num_row_groups == -(-ROWS // 64)  # one row group per record batch
    df = table.to_pandas()
    assert list(df.columns) == [
        "row_id",
        "prediction",
        "proba_no",
        "proba_yes",
        "model_name",
        "model_version",
    ]
    assert df["row_id"].tolist() == [str(i) for i in raw["Row ID"]]  # CSV passthrough: the text as it was
    assert np.array_equal(proba(df), expected_proba(model, raw))  # bit for bit
    assert df["prediction"].tolist() == np.array(["no", "yes"])[proba(df).argmax(axis=1)].tolist()
    assert set(df["model_version"]) == {result.model_version}
    assert (
        json.loads(table.schema.metadata[b"kfp_tabular"])["model_sha256"] == ServableModel.load(model).sha256
    )
    assert no_leftovers(out.parent) == ["scored.parquet"]


def test_parquet_folder_and_prefix_in_batches_smaller_than_a_file(messy, tmp_path):
    model, _, raw = messy
    folder = tmp_path / "in"
    folder.mkdir()
    typed = raw.assign(**{"Signup Date": pd.to_datetime(raw["Signup Date"])})  # a real timestamp column
    for i, part in enumerate(np.array_split(typed, 3)):
        part.to_parquet(folder / f"part-{i}.parquet", index=False)
    (folder / "_SUCCESS").write_text("")
    (folder / ".hidden.parquet").write_bytes(b"junk")  # hidden files are skipped, as Spark/pyarrow skip them
    files, fmt = core.list_inputs(str(folder))
    assert fmt == "parquet" and [Path(f).name for f in files] == [f"part-{i}.parquet" for i in range(3)]
    assert core.list_inputs(str(folder / "part-"))[0] == files  # a prefix
    out = tmp_path / "scored.parquet"
    result = core.predict(
        model_dir=model,
        input_uri=f"file://{folder}",
        output_uri=str(out),
        passthrough=["row_id"],
        batch_rows=50,
    )
    assert result.rows_scored == ROWS and result.files == 3
    df = pd.read_parquet(out)
    assert df["row_id"].tolist() == raw["Row ID"].tolist()  # Parquet passthrough keeps its type
    assert np.array_equal(proba(df), expected_proba(model, raw))

    # a file without a column: named, not filled with nulls (as a pyarrow dataset of the folder would)
    typed.iloc[:10].drop(columns=["Visits"]).to_parquet(folder / "part-3.parquet", index=False)
    with pytest.raises(InputDataError, match=r"do not have the same columns: .*part-3.parquet"):
        core.predict(model_dir=model, input_uri=str(folder), output_uri=str(tmp_path / "again.parquet"))
    assert not (tmp_path / "again.parquet").exists()


def test_missing_feature_column_stops_naming_it(messy, tmp_path):
    model, _, raw = messy
    source = tmp_path / "in.csv"
    raw.drop(columns=["Income"]).to_csv(source, index=False)
    out = tmp_path / "out" / "scored.parquet"
    with pytest.raises(DataValidationError, match=r"lacks feature column \['income'\]"):
        core.predict(model_dir=model, input_uri=str(source), output_uri=str(out))
    assert no_leftovers(out.parent) == []


def test_columns_that_sanitize_to_one_name_stop_naming_the_input(messy, tmp_path):
    model, _, raw = messy
    source = tmp_path / "in.csv"
    raw.assign(**{"income ": raw["Income"]}).to_csv(source, index=False)  # 'Income' and 'income ' -> 'income'
    out = tmp_path / "out" / "scored.parquet"
    with pytest.raises(
        InputDataError, match=r"input '.*in\.csv': columns 'Income' and 'income ' both become 'income'"
    ):
        core.predict(model_dir=model, input_uri=str(source), output_uri=str(out))
    assert no_leftovers(out.parent) == []


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("Income", "words", r"feature column 'income' has the wrong type: the model was trained on numeric"),
        ("Member", "words", r"feature column 'member' has the wrong type: the model was trained on boolean"),
        ("Signup Date", "words", r"feature column 'signup_date' has the wrong type"),
        (
            "Income",
            "bools",
            r"feature column 'income' has the wrong type: the model was trained on numbers, the input has bool",
        ),
    ],
)
def test_wrong_type_stops_naming_the_column(messy, tmp_path, column, values, message):
    model, _, raw = messy
    bad = raw.copy()
    bad[column] = (
        [f"word{i}" for i in range(ROWS)] if values == "words" else [i % 2 == 0 for i in range(ROWS)]
    )
    source = tmp_path / "in.parquet"
    bad.to_parquet(source, index=False)
    out = tmp_path / "out"
    with pytest.raises(DataValidationError, match=message):
        core.predict(model_dir=model, input_uri=str(source), output_uri=str(out / "p.parquet"))
    assert no_leftovers(out) == []


def test_schema_check_reports_new_categories_without_stopping(messy, tmp_path):
    model, _, raw = messy
    moved = raw.assign(Region="central")  # a category training never saw: a warning, scored as unknown
    source = tmp_path / "in.csv"
    moved.to_csv(source, index=False)
    result = core.predict(model_dir=model, input_uri=str(source), output_uri=str(tmp_path / "p.parquet"))
    assert result.rows_scored == ROWS
    assert any("'region'" in w and "central" in w for w in result.warnings), result.warnings


def bad_rows_table(raw: pd.DataFrame) -> pd.DataFrame:
    bad = raw.astype({"Income": object, "Visits": object, "Member": object}).copy()
    bad.loc[5, "Income"] = "lots"
    bad.loc[7, "Visits"] = "inf"
    bad.loc[9, "Member"] = "maybe"
    bad.loc[11, "Signup Date"] = "2023-13-45"
    return bad


def test_bad_rows_stop_the_job_by_default(messy, tmp_path):
    model, _, raw = messy
    source = tmp_path / "in.csv"
    bad_rows_table(raw).to_csv(source, index=False)
    with pytest.raises(DataValidationError, match=r"row 5 of the input: income: 'lots' is not a number"):
        core.predict(model_dir=model, input_uri=str(source), output_uri=str(tmp_path / "out" / "p.parquet"))
    assert no_leftovers(tmp_path / "out") == []


def test_quarantine_sets_bad_rows_aside_with_one_reason_each(messy, tmp_path):
    model, _, raw = messy
    source = tmp_path / "in.csv"
    bad_rows_table(raw).to_csv(source, index=False)
    out = tmp_path / "out" / "p.parquet"
    result = core.predict(
        model_dir=model,
        input_uri=str(source),
        output_uri=str(out),
        passthrough=["Row ID"],
        on_bad_rows="quarantine",
        batch_rows=8,  # the bad rows fall in different batches
    )
    assert (result.rows_in, result.rows_scored, result.rows_rejected) == (ROWS, ROWS - 4, 4)
    assert result.reasons == {"income": 1, "visits": 1, "member": 1, "signup_date": 1}
    assert result.quarantine_uri == str(tmp_path / "out" / "p.quarantine.parquet")
    rejected = pd.read_parquet(result.quarantine_uri)
    assert rejected["row"].tolist() == [5, 7, 9, 11]
    assert rejected["row_id"].tolist() == ["6", "8", "10", "12"]
    assert rejected["reason"].tolist() == [
        "income: 'lots' is not a number",
        "visits: inf is not finite",
        "member: 'maybe' is not a boolean (true/false, yes/no, 1/0)",
        "signup_date: '2023-13-45' is not a date/time in ISO 8601",
    ]
    scored = pd.read_parquet(out)
    keep = ~raw.index.isin([5, 7, 9, 11])
    assert scored["row_id"].tolist() == [str(i) for i in raw["Row ID"][keep]]
    assert np.array_equal(proba(scored), expected_proba(model, raw[keep]))


def test_a_failure_midway_leaves_no_output_and_keeps_the_previous_one(messy, tmp_path, monkeypatch):
    model, csv, _ = messy
    out = tmp_path / "out" / "p.parquet"
    out.parent.mkdir()
    out.write_bytes(b"the previous complete output")
    from components.serving.fast import FastPredictor

    calls = {"n": 0}
    original = FastPredictor.predict_columns

    def failing(self, numeric, positions):
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("injected failure in the third batch")
        return original(self, numeric, positions)

    monkeypatch.setattr(FastPredictor, "predict_columns", failing)
    with pytest.raises(MemoryError, match="injected"):
        core.predict(model_dir=model, input_uri=str(csv), output_uri=str(out), batch_rows=100, validate=False)
    assert calls["n"] == 3
    assert out.read_bytes() == b"the previous complete output"
    assert no_leftovers(out.parent) == ["p.parquet"]  # no temporary left behind


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, r"input not found"),
        ("empty.csv", "Row ID,Email,Signup Date,Member,store_id,Income,Visits,Region\n", r"has no rows"),
        ("blank.csv", "", r"is empty \(0 bytes\)"),
        ("garbage.parquet", b"\x00\x01garbage bytes that are not Parquet" * 10, r"cannot be read as Parquet"),
        (
            "garbage.csv",
            b"\x89PNG\r\n\x1a\n\x00\x00binary",
            r"cannot be read as CSV: its first line is not UTF-8",
        ),
        ("text.csv", "just some words\nno table here\n", r"lacks feature columns"),
        ("empty_folder", "folder", r"no Parquet files"),
    ],
)
def test_bad_inputs_stop_with_a_clear_message_and_no_output(messy, tmp_path, name, content, message):
    model = messy[0]
    source = tmp_path / name
    if content == "folder":
        source.mkdir()
        (source / "notes.txt").write_text("not a table")
    elif isinstance(content, bytes):
        source.write_bytes(content)
    elif content is not None:
        source.write_text(content)
    out = tmp_path / "out"
    with pytest.raises((InputDataError, DataValidationError), match=message):
        core.predict(model_dir=model, input_uri=str(source), output_uri=str(out / "p.parquet"))
    assert no_leftovers(out) == []


def test_bad_options(messy, tmp_path):
    model, _, raw = messy
    source = tmp_path / "in.csv"
    raw.assign(Prediction=1).to_csv(source, index=False)
    args = dict(model_dir=model, input_uri=str(source), output_uri=str(tmp_path / "out" / "p.parquet"))
    with pytest.raises(ConfigError, match="on_bad_rows"):
        core.predict(**args, on_bad_rows="ignore")
    with pytest.raises(ConfigError, match="batch_rows"):
        core.predict(**args, batch_rows=0)
    with pytest.raises(ConfigError, match=r"passthrough column 'order_id' is not in input"):
        core.predict(**args, passthrough=["order_id"])
    with pytest.raises(
        ConfigError, match=r"passthrough column 'Prediction' would clash with the output column"
    ):
        core.predict(**args, passthrough=["Row ID", "Prediction"])
    assert no_leftovers(tmp_path / "out") == []


def test_shards_and_commit_to_a_folder_and_to_one_file(messy, tmp_path):
    model, _, raw = messy
    assert [len(s["files"]) for s in core.plan_shards([f"f{i}" for i in range(7)], 3)] == [3, 2, 2]
    assert [s["files"] for s in core.plan_shards(["a", "b"], 16)] == [["a"], ["b"]]
    source = tmp_path / "in.csv"
    bad_rows_table(raw).to_csv(source, index=False)
    for output in (tmp_path / "scored", tmp_path / "scored.parquet"):
        staging = core.staging_uri(str(output), "job1")
        assert Path(staging).name.startswith(".")  # hidden beside the output
        results = []
        for index, rows in enumerate((slice(0, 300), slice(300, ROWS))):
            part = tmp_path / f"part{index}.csv"
            raw_bad = bad_rows_table(raw)
            raw_bad.iloc[rows].to_csv(part, index=False)
            pred, quarantine = core.part_uris(staging, index)
            result = core.predict(
                model_dir=model,
                input_uri=str(part),
                output_uri=pred,
                quarantine_uri=quarantine,
                on_bad_rows="quarantine",
                validate=False,
            )
            results.append({**result.as_dict(), "index": index})
        assert not output.exists()  # nothing at the output before the commit
        totals = core.commit(staging, str(output), list(reversed(results)), overwrite=False)
        assert (totals["rows_in"], totals["rows_scored"], totals["rows_rejected"]) == (ROWS, ROWS - 4, 4)
        assert not Path(staging).exists()
        scored = pd.read_parquet(output)  # a folder reads as one table (_quarantine and _SUCCESS skipped)
        keep = ~raw.index.isin([5, 7, 9, 11])
        assert np.array_equal(proba(scored), expected_proba(model, raw[keep]))
        assert len(pd.read_parquet(totals["quarantine_uri"])) == 4
        if output.suffix != ".parquet":
            assert json.loads((output / core.SUCCESS_FILE).read_text())["rows_scored"] == ROWS - 4
            assert sorted(p.name for p in output.iterdir()) == [
                "_SUCCESS",
                "_quarantine",
                "part-00000.parquet",
                "part-00001.parquet",
            ]
        with pytest.raises(ConfigError, match="exists; set overwrite"):
            core.check_output(str(output), overwrite=False)


# --- the same answers as the model server, to the last bit ---------------------------------------------------


def test_batch_output_equals_the_servers_v1_answers(messy, tmp_path):
    """A real model server on 127.0.0.1 (the same directory): its V1 answers for the raw rows, one big
    request (numpy path) and single rows (small-batch path), equal the batch output bit for bit."""
    import httpx

    from tests.test_serving_server import serve

    model, csv, raw = messy
    out = tmp_path / "p.parquet"
    core.predict(model_dir=model, input_uri=str(csv), output_uri=str(out), batch_rows=128)
    batch = pd.read_parquet(out)
    records = json.loads(raw.drop(columns=["Churned"]).to_json(orient="records"))
    classes = ServableModel.load(model).classes
    with serve("--model_dir", str(model)) as (url, _, _):
        endpoint = f"{url}/v1/models/penguins-species:predict"
        reply = httpx.post(endpoint, json={"instances": records}, timeout=60)
        assert reply.status_code == 200, reply.text
        answers = reply.json()["predictions"]
        singles = [
            httpx.post(endpoint, json={"instances": [records[i]]}, timeout=10).json()["predictions"][0]
            for i in range(0, ROWS, 97)
        ]
    served = np.array([[a["probabilities"][str(c)] for c in classes] for a in answers])
    assert np.array_equal(proba(batch), served)
    assert batch["prediction"].tolist() == [a["label"] for a in answers]
    for i, single in zip(range(0, ROWS, 97), singles, strict=True):
        assert proba(batch)[i].tolist() == [single["probabilities"][str(c)] for c in classes]


def test_arrow_categories_match_the_servers_mapping(messy):
    """The vectorized one-hot positions equal the server's per-value mapping, missing and unknown included."""
    from components.serving.fast import FastPredictor

    predictor = FastPredictor(ServableModel.load(messy[0]))
    assert predictor.categorical_names  # region, store_id
    samples = {
        "region": ["north", None, "central", "east", "", "west"],
        "store_id": ["3", None, "99", "1", "8", "x"],
    }
    n = len(samples["region"])
    texts = [samples[name] for name in predictor.categorical_names]
    expected = {}  # (feature, row) -> column, from the server's own per-value loop
    for i, column in predictor._category_columns(texts):
        for j, (mapping, unknown, offset) in enumerate(predictor._encoders):
            start = predictor._categorical_slice.start + offset
            if start <= column < start + 1 + max([*mapping.values(), unknown]):
                expected[j, i] = column
    for j, name in enumerate(predictor.categorical_names):
        got = predictor.category_positions(j, pa.array(samples[name], type=pa.string()))
        assert got.tolist() == [expected.get((j, i), -1) for i in range(n)]


def test_regression_values_and_a_model_without_a_schema(tmp_path):
    """A regression model (ridge) gives its values in ``prediction``; a model directory without
    schema.pbtxt (older artifacts) is scored with a warning saying the schema check was skipped."""
    from tests.conftest import build_model, make_table

    table = make_table(300, task="regression")
    source = tmp_path / "table.csv"
    table.to_csv(source, index=False)
    model = build_model(
        tmp_path / "m", str(source), target="y", task="regression", candidates=["ridge"], max_trials=1
    )
    out = tmp_path / "p.parquet"
    result = core.predict(model_dir=model, input_uri=str(source), output_uri=str(out), batch_rows=100)
    assert result.rows_scored == 300
    assert result.warnings == [
        "the model carries no schema.pbtxt: the input was not checked against its training schema"
    ]
    df = pd.read_parquet(out)
    assert list(df.columns) == ["prediction", "model_name", "model_version"]
    servable = ServableModel.load(model)
    frame = table.rename(columns=sanitize_column_names(table.columns))
    assert np.array_equal(df["prediction"].to_numpy(), servable.predict(frame).astype(np.float64))
