"""Unit tests of the data-validation core (``components.validate.core``), with TFDV for real."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from components.common.errors import ConfigError, DataValidationError, InputDataError
from components.validate.core import validate_splits

DEMO_CSV = Path(__file__).resolve().parent.parent / "components" / "ingest" / "demo" / "penguins.csv"
OUTPUT_NAMES = ("statistics", "schema.pbtxt", "statistics.html", "report.md")


@pytest.fixture(scope="module")
def tfdv():
    """TFDV, imported once per module (its TensorFlow import takes 10-17 s)."""
    import tensorflow_data_validation

    return tensorflow_data_validation


def write_splits(directory: Path, frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, df in frames.items():
        paths[name] = str(directory / f"{name}.parquet")
        df.to_parquet(paths[name])  # keeps a non-default index as `__index_level_0__`
    return paths


def outputs(directory: Path) -> dict[str, str]:
    return {
        "statistics_dir": str(directory / "statistics"),
        "schema_path": str(directory / "schema.pbtxt"),
        "html_path": str(directory / "statistics.html"),
        "report_path": str(directory / "report.md"),
    }


def run(tmp_path: Path, frames: dict[str, pd.DataFrame], target: str = "label", **kwargs):
    paths = write_splits(tmp_path / "data", frames)
    out = tmp_path / "out"
    return validate_splits(paths, target=target, **outputs(out), **kwargs), out


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == [], list(out.iterdir())


def demo_frames() -> dict[str, pd.DataFrame]:
    df = pd.read_csv(DEMO_CSV).dropna(subset=["species"])
    train, rest = train_test_split(df, test_size=0.35, stratify=df["species"], random_state=42)
    eval_, test = train_test_split(rest, test_size=20 / 35, stratify=rest["species"], random_state=42)
    return {"train": train, "eval": eval_, "test": test}


def synthetic(n: int, seed: int, *, shift: float = 0.0, colors=("red", "blue")) -> pd.DataFrame:
    """A small table: numeric `x`, numeric `y`, categorical `color`, categorical target `label`."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "y": rng.normal(0.0, 1.0, n),
            "color": rng.choice(list(colors), n),
            "label": rng.choice(["a", "b"], n),
        }
    )


def stable_frames() -> dict[str, pd.DataFrame]:
    return {"train": synthetic(300, 1), "eval": synthetic(200, 2), "test": synthetic(200, 3)}


# ----------------------------------------------------------------------------------------- demo data


def test_demo_data_passes_and_writes_all_outputs(tmp_path, tfdv):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    frames = demo_frames()
    result, out = run(tmp_path, frames, target="species")

    assert result.anomalies == []
    assert result.schema_inferred is True
    assert result.num_examples == {name: len(df) for name, df in frames.items()}
    assert result.num_features == frames["train"].shape[1] == 8
    for name in OUTPUT_NAMES:
        path = out / name
        assert path.exists(), name
        assert (sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size) > 0

    # statistics: one binary DatasetFeatureStatisticsList per split, with the right row counts
    assert sorted(p.name for p in (out / "statistics").iterdir()) == [
        "eval.pb",
        "test.pb",
        "train.pb",
        "validation.json",
    ]
    for name, df in frames.items():
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
            (out / "statistics" / f"{name}.pb").read_bytes()
        )
        assert stats.datasets[0].num_examples == len(df)
        names = {".".join(f.path.step) for f in stats.datasets[0].features}
        assert names == set(df.columns), name  # no `__index_level_0__` although the index was saved

    # the schema parses back: every column, target required in TRAINING only, the others relaxed
    schema = tfdv.load_schema_text(str(out / "schema.pbtxt"))
    features = {f.name: f for f in schema.feature}
    assert set(features) == set(frames["train"].columns)
    assert list(schema.default_environment) == ["TRAINING", "SERVING"]
    assert features["species"].presence.min_fraction == 1.0
    assert list(features["species"].not_in_environment) == ["SERVING"]
    for name, feature in features.items():
        if name != "species":
            assert feature.presence.min_fraction == 0.0, name
            assert not feature.HasField("shape"), name
            assert (feature.value_count.min, feature.value_count.max) == (1, 1), name
        assert not feature.HasField("drift_comparator"), name  # drift is measured by drift.py
    assert {d.name: set(d.value) for d in schema.string_domain}["island"] == {"Biscoe", "Dream", "Torgersen"}
    assert features["island"].distribution_constraints.min_domain_mass == pytest.approx(0.99)

    # the HTML names every feature (plain summary table, and inside the embedded Facets proto)
    page = (out / "statistics.html").read_text()
    for name in frames["train"].columns:
        assert f"<td>{name}</td>" in page, name
    assert "__index_level_0__" not in page
    proto = re.search(r'proto-input="([^"]+)"', page).group(1)
    facets = statistics_pb2.DatasetFeatureStatisticsList.FromString(base64.b64decode(proto))
    assert [d.name for d in facets.datasets] == ["train", "eval"]
    assert {".".join(f.path.step) for f in facets.datasets[1].features} == set(frames["eval"].columns)

    # eval/test against train measured for every feature, as information; no model to compare with
    assert set(result.split_drift) == {"eval", "test"}
    assert set(result.split_drift["eval"]) == set(frames["train"].columns)
    assert result.reference == {} and result.drift == {}
    report = (out / "report.md").read_text()
    assert "Decision: **passed**" in report and "Inferred (inferred from all rows" in report
    assert "No current model (a first run)" in report and "Information only" in report
    for name, df in frames.items():
        assert f"| {name} | {len(df)} | 8 |" in report


def test_relaxation_is_what_lets_the_demo_pass(tmp_path, tfdv):
    """The demo's test split has missing numeric values that train lacks: TFDV's raw inferred schema
    flags them, the relaxed one does not (so the demo test above is not passing by accident)."""
    frames = {k: v.reset_index(drop=True) for k, v in demo_frames().items()}
    train_stats = tfdv.generate_statistics_from_dataframe(frames["train"])
    test_stats = tfdv.generate_statistics_from_dataframe(frames["test"])
    raw = tfdv.validate_statistics(test_stats, tfdv.infer_schema(train_stats))
    assert "bill_length_mm" in raw.anomaly_info

    result, _ = run(tmp_path, demo_frames(), target="species")
    assert result.anomalies == []


def test_missing_target_is_still_an_anomaly(tmp_path, tfdv):
    frames = stable_frames()
    frames["eval"].loc[[3, 7], "label"] = None
    frames["eval"].loc[[4, 8], "x"] = np.nan  # allowed: x is not the target
    with pytest.raises(DataValidationError) as info:
        run(tmp_path, frames)
    assert {(a["split"], a["feature"]) for a in info.value.anomalies} == {("eval", "label")}
    assert "eval: feature 'label':" in str(info.value)
    assert_nothing_written(tmp_path / "out")


# ----------------------------------------------------------------------------------------- curated schema


def curated_schema(tfdv, tmp_path: Path, frame: pd.DataFrame, edit=None) -> Path:
    schema = tfdv.infer_schema(tfdv.generate_statistics_from_dataframe(frame.reset_index(drop=True)))
    if edit:
        edit(schema)
    path = tmp_path / "curated" / "schema.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(path))
    return path


def test_curated_schema_is_used(tmp_path, tfdv):
    frames = stable_frames()
    frames["eval"].loc[0:39, "color"] = "green"  # not a train category, 20% of eval
    result, _ = run(tmp_path / "inferred", frames)  # a schema inferred from this table knows "green"
    assert result.anomalies == []

    path = curated_schema(tfdv, tmp_path / "strict", frames["train"])  # curated from train: no "green"
    with pytest.raises(DataValidationError) as info:
        run(tmp_path / "strict_run", frames, schema_uri=str(path))
    assert {(a["split"], a["feature"]) for a in info.value.anomalies} == {("eval", "color")}
    assert "green" in str(info.value) and str(path) in str(info.value)

    def allow_green(schema):
        next(d for d in schema.string_domain if d.name == "color").value.append("green")

    path = curated_schema(tfdv, tmp_path, frames["train"], allow_green)
    result, out = run(
        tmp_path / "curated_run", frames, schema_uri=f"file://{path}"
    )  # ... the curated accepts it
    assert result.schema_inferred is False
    assert result.anomalies == []
    written = tfdv.load_schema_text(str(out / "schema.pbtxt"))
    assert "green" in next(d for d in written.string_domain if d.name == "color").value
    report = (out / "report.md").read_text()
    assert f"Curated schema from `file://{path}`" in report


def test_curated_numeric_range_catches_a_rescaled_column(tmp_path, tfdv):
    """Numeric ranges belong in the schema a user curates: a float_domain stops x1000 values."""
    frames = stable_frames()

    def x_range(schema):
        feature = next(f for f in schema.feature if f.name == "x")
        feature.float_domain.min, feature.float_domain.max = -10.0, 10.0

    path = curated_schema(tfdv, tmp_path, frames["train"], x_range)
    assert run(tmp_path / "ok", frames, schema_uri=str(path))[0].anomalies == []
    frames["test"]["x"] = frames["test"]["x"] * 1000
    with pytest.raises(DataValidationError) as info:
        run(tmp_path / "rescaled", frames, schema_uri=str(path))
    assert {(a["split"], a["feature"]) for a in info.value.anomalies} == {("test", "x")}


def test_curated_type_violation_raises_names_feature_and_split_and_writes_nothing(tmp_path, tfdv):
    from tensorflow_metadata.proto.v0 import schema_pb2

    frames = stable_frames()
    frames["test"]["y"] = [f"v{i}" for i in range(len(frames["test"]))]  # strings where INT is expected

    def y_is_int(schema):
        next(f for f in schema.feature if f.name == "y").type = schema_pb2.INT

    path = curated_schema(tfdv, tmp_path, frames["train"], y_is_int)
    with pytest.raises(DataValidationError) as info:
        run(tmp_path, frames, schema_uri=str(path), drift_threshold=0)
    message = str(info.value)
    for split in ("train", "eval", "test"):  # train/eval hold floats, test strings: none is INT
        assert re.search(rf"^{split}: feature 'y': \S+: ", message, re.M), message
    assert {a["feature"] for a in info.value.anomalies} == {"y"}
    assert all(set(a) == {"split", "feature", "kind", "description"} for a in info.value.anomalies)
    assert "To proceed" in message and str(path) in message
    assert_nothing_written(tmp_path / "out")


def test_a_rare_category_in_one_split_is_not_an_anomaly(tmp_path, tfdv):
    """A category drawn into the test split only is what a random split does, not a data problem."""
    frames = stable_frames()
    frames["test"].loc[5, "color"] = "purple"
    result, _ = run(tmp_path, frames)
    assert result.anomalies == []
    assert result.split_drift["test"]["color"]["measure"] == "l_infinity"


def test_existing_outputs_are_left_alone_on_failure(tmp_path, tfdv):
    frames = stable_frames()
    frames["eval"].loc[[3, 7], "label"] = None
    out = tmp_path / "out"
    (out / "statistics").mkdir(parents=True)
    (out / "statistics" / "old.pb").write_bytes(b"old")
    (out / "report.md").write_text("old report")
    with pytest.raises(DataValidationError):
        run(tmp_path, frames)
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "statistics"]
    assert (out / "report.md").read_text() == "old report"
    assert [p.name for p in (out / "statistics").iterdir()] == ["old.pb"]


# ----------------------------------------------------------------------------------------- within a run


def drifted_frames() -> dict[str, pd.DataFrame]:
    """eval: numeric `x` shifted by 3 standard deviations, categorical `color` almost all "red"."""
    frames = stable_frames()
    frames["eval"] = synthetic(200, 2, shift=3.0)
    frames["eval"].loc[:189, "color"] = "red"
    return frames


def test_differences_between_splits_are_information_not_a_stop(tmp_path, tfdv):
    result, out = run(tmp_path, drifted_frames())
    assert result.anomalies == []
    eval_x, eval_color = result.split_drift["eval"]["x"], result.split_drift["eval"]["color"]
    assert eval_x["measure"] == "jensen_shannon" and eval_x["value"] > 0.5
    assert eval_color["measure"] == "l_infinity" and eval_color["value"] > 0.3
    assert not eval_x["drifted"]  # no bound within a run
    report = (out / "report.md").read_text()
    assert "## Within this run (eval, test against train)" in report and "sampling noise" in report


def test_a_class_missing_from_a_split_stops(tmp_path, tfdv):
    frames = stable_frames()
    frames["test"]["label"] = "a"  # no "b" in test: its metrics would say nothing about b
    with pytest.raises(DataValidationError) as info:
        run(tmp_path, frames)
    [problem] = info.value.anomalies
    assert (problem["split"], problem["kind"]) == ("test", "CLASS_MISSING")
    assert "test: feature 'label': CLASS_MISSING: the test split has no rows of class(es) ['b']" in str(
        info.value
    )
    assert_nothing_written(tmp_path / "out")


# ----------------------------------------------------------------------------------------- against the current model


def heavy_tailed(n: int, seed: int, *, scale: float = 1.0) -> pd.DataFrame:
    """A table like real ones: a log-normal column with 1% outliers (x50), a Student-t(2) column, a
    categorical with unequal shares, a count, some missing values, and a target."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 1.0, n)
    amount[rng.random(n) < 0.01] *= 50
    amount[rng.random(n) < 0.03] = np.nan
    return pd.DataFrame(
        {
            "amount": amount * scale,
            "score": rng.standard_t(2, n),
            "visits": rng.poisson(2.0, n).astype(float),
            "segment": rng.choice(["retail", "online", "partner", "other"], n, p=[0.5, 0.3, 0.15, 0.05]),
            "label": rng.choice(["a", "b"], n),
        }
    )


def reference_model(tmp_path: Path, tfdv, frame: pd.DataFrame, kinds: dict[str, str] | None = None) -> str:
    """A model directory as training writes it, as far as validation reads it: metadata + train_stats.pb."""
    import json

    directory = tmp_path / "current_model"
    directory.mkdir(parents=True)
    stats = tfdv.generate_statistics_from_dataframe(frame.reset_index(drop=True))
    (directory / "train_stats.pb").write_bytes(stats.SerializeToString())
    kinds = kinds or {c: ("numeric" if frame[c].dtype.kind in "if" else "categorical") for c in frame.columns}
    features = [{"name": c, "kind": k} for c, k in kinds.items() if c != "label"]
    meta = {"task": "classification", "target": "label", "features": features, "sha256": {}, "versions": {}}
    (directory / "metadata.json").write_text(json.dumps(meta))
    return str(directory)


def splits_of(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    train, rest = train_test_split(frame, test_size=0.35, random_state=0)
    eval_, test = train_test_split(rest, test_size=0.5, random_state=0)
    return {"train": train, "eval": eval_, "test": test}


@pytest.mark.parametrize("rows", [3000, 300])
def test_new_samples_of_the_same_heavy_tailed_data_never_stop(tmp_path, tfdv, rows):
    """Ten seeds of a table with outliers and heavy tails, against a model trained on another sample:
    sampling noise never crosses the default bound (TFDV's equal-width comparator measured 0.1-0.8 on
    such samples, docs in drift.py)."""
    for seed in range(10):
        current = reference_model(tmp_path / f"m{seed}", tfdv, heavy_tailed(5000, 1000 + seed))
        result, _ = run(
            tmp_path / f"r{seed}", splits_of(heavy_tailed(rows, seed)), reference_model_uri=current
        )
        assert result.anomalies == []
        assert set(result.drift) == {"amount", "score", "visits", "segment"}
        assert not any(d["drifted"] for d in result.drift.values()), (seed, result.drift)


def test_a_rescaled_column_stops_the_next_run_naming_it(tmp_path, tfdv):
    current = reference_model(tmp_path, tfdv, heavy_tailed(5000, 1))
    with pytest.raises(DataValidationError) as info:
        run(tmp_path / "x1000", splits_of(heavy_tailed(2000, 2, scale=1000)), reference_model_uri=current)
    [problem] = info.value.anomalies
    assert (problem["split"], problem["feature"], problem["kind"]) == ("train", "amount", "DRIFT")
    assert "above the reference maximum" in problem["description"]
    assert "drift_threshold" in str(info.value).splitlines()[-1]
    assert_nothing_written(tmp_path / "x1000" / "out")

    # the same data with drift_action warn: reported, not stopped
    result, out = run(
        tmp_path / "warn",
        splits_of(heavy_tailed(2000, 2, scale=1000)),
        reference_model_uri=current,
        drift_action="warn",
    )
    assert result.drift["amount"]["drifted"] and result.drift["amount"]["value"] > 0.5
    assert any(w.startswith("amount: DRIFT:") for w in result.warnings)
    report = (out / "report.md").read_text()
    assert "| amount | jensen_shannon |" in report and "**yes**" in report and "## Warnings" in report


def test_a_shifted_category_mix_stops_and_per_feature_bounds_apply(tmp_path, tfdv):
    current = reference_model(tmp_path, tfdv, heavy_tailed(5000, 1))
    shifted = heavy_tailed(2000, 2)
    shifted["segment"] = np.where(
        np.random.default_rng(3).random(len(shifted)) < 0.7, "partner", shifted["segment"]
    )
    with pytest.raises(DataValidationError) as info:
        run(tmp_path / "a", splits_of(shifted), reference_model_uri=current)
    [problem] = info.value.anomalies
    assert problem["feature"] == "segment" and "'partner'" in problem["description"]
    # a looser bound for that feature lets it pass; 0 disables it
    for bound in (0.9, 0):
        result, _ = run(
            tmp_path / f"b{bound}",
            splits_of(shifted),
            reference_model_uri=current,
            drift_thresholds={"segment": bound},
        )
        assert not result.drift["segment"]["drifted"] and result.drift["segment"]["bound"] == bound
    # a tight default bound still lets unchanged features pass: significance guards them
    result, _ = run(
        tmp_path / "c", splits_of(heavy_tailed(2000, 5)), reference_model_uri=current, drift_threshold=0.001
    )
    assert not any(d["drifted"] for d in result.drift.values())


def test_a_feature_that_changed_kind_stops(tmp_path, tfdv):
    current = reference_model(tmp_path, tfdv, heavy_tailed(3000, 1))
    frames = {
        k: v.assign(visits=v["visits"].map(lambda x: f"n/a-{x:.0f}"))
        for k, v in splits_of(heavy_tailed(2000, 2)).items()
    }
    paths = write_splits(tmp_path / "data", frames)
    from components.common.io import read_parquet, write_parquet

    kinds = {
        "amount": {"kind": "numeric"},
        "score": {"kind": "numeric"},
        "visits": {"kind": "categorical"},
        "segment": {"kind": "categorical"},
    }
    for path in paths.values():  # as ingestion writes them: the column kinds in the file
        write_parquet(read_parquet(path), path, metadata={"task": "classification", "column_types": kinds})
    with pytest.raises(DataValidationError) as info:
        validate_splits(paths, target="label", reference_model_uri=current, **outputs(tmp_path / "out"))
    [problem] = info.value.anomalies
    assert problem["kind"] == "KIND_CHANGED" and problem["feature"] == "visits"
    assert (
        "was numeric in the data the current model was trained on, is categorical now"
        in problem["description"]
    )


def test_a_model_without_statistics_is_reported_not_compared(tmp_path, tfdv):
    current = Path(reference_model(tmp_path, tfdv, heavy_tailed(1000, 1)))
    (current / "train_stats.pb").unlink()
    result, out = run(tmp_path / "r", splits_of(heavy_tailed(1000, 2)), reference_model_uri=str(current))
    assert result.drift == {} and "carries no training statistics" in result.warnings[0]
    assert "carries no training statistics" in (out / "report.md").read_text()


def test_drift_override_for_unknown_feature_is_a_config_error(tmp_path, tfdv):
    with pytest.raises(ConfigError, match="colour"):
        run(tmp_path, stable_frames(), drift_thresholds={"colour": 0.5})
    with pytest.raises(ConfigError, match="drift_threshold"):
        run(tmp_path, stable_frames(), drift_threshold=-0.1)
    with pytest.raises(ConfigError, match="drift_action"):
        run(tmp_path, stable_frames(), drift_action="ignore")
    assert_nothing_written(tmp_path / "out")


# ----------------------------------------------------------------------------------------- bad inputs


def test_missing_schema_uri_raises_input_data_error(tmp_path, tfdv):
    missing = tmp_path / "nowhere" / "schema.pbtxt"
    with pytest.raises(InputDataError, match=re.escape(str(missing))):
        run(tmp_path, stable_frames(), schema_uri=str(missing))
    assert_nothing_written(tmp_path / "out")


def test_unparsable_schema_raises_input_data_error(tmp_path, tfdv):
    bad = tmp_path / "bad.pbtxt"
    bad.write_text("feature { name: 'x' type: NOT_A_TYPE }\n")
    with pytest.raises(InputDataError, match=re.escape(str(bad))):
        run(tmp_path, stable_frames(), schema_uri=str(bad))


def test_missing_target_column_or_split_file_raises_input_data_error(tmp_path, tfdv):
    frames = stable_frames()
    frames["test"] = frames["test"].drop(columns=["label"])
    with pytest.raises(InputDataError, match="'label'.*test"):
        run(tmp_path / "a", frames)
    paths = write_splits(tmp_path / "b", stable_frames())
    paths["eval"] = str(tmp_path / "b" / "missing.parquet")
    with pytest.raises(InputDataError, match="eval split not found"):
        validate_splits(paths, target="label", **outputs(tmp_path / "b" / "out"))


def test_tfdv_start_up_noise_is_not_in_the_log(tmp_path):
    """A fresh process (as every pipeline task is): validation's log has no protobuf, IPython or CUDA noise."""
    import subprocess
    import sys

    paths = write_splits(tmp_path / "data", stable_frames())
    script = (
        "import sys; from components.validate.core import validate_splits; "
        f"validate_splits({paths!r}, target='label', statistics_dir=sys.argv[1] + '/s', "
        "schema_path=sys.argv[1] + '/schema', html_path=sys.argv[1] + '/h', report_path=sys.argv[1] + '/r')"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    for noise in ("GetPrototype", "Unable to register", "IPython", "cuda", "TF-TRT"):
        assert noise not in log, log
    assert "decision: PASS" in log
