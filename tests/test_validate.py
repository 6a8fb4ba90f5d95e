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
    from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

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
    assert sorted(p.name for p in (out / "statistics").iterdir()) == ["eval.pb", "test.pb", "train.pb"]
    for name, df in frames.items():
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(
            (out / "statistics" / f"{name}.pb").read_bytes()
        )
        assert stats.datasets[0].num_examples == len(df)
        names = {".".join(f.path.step) for f in stats.datasets[0].features}
        assert names == set(df.columns), name  # no `__index_level_0__` although the index was saved

    # the schema parses back: every column, target required, the others relaxed, drift comparators set
    schema = tfdv.load_schema_text(str(out / "schema.pbtxt"))
    features = {f.name: f for f in schema.feature}
    assert set(features) == set(frames["train"].columns)
    assert features["species"].presence.min_fraction == 1.0
    for name, feature in features.items():
        if name != "species":
            assert feature.presence.min_fraction == 0.0, name
            assert not feature.HasField("shape"), name
            assert (feature.value_count.min, feature.value_count.max) == (1, 1), name
        expected = "infinity_norm" if feature.type == schema_pb2.BYTES else "jensen_shannon_divergence"
        assert getattr(feature.drift_comparator, expected).threshold == pytest.approx(0.3), name
    assert {d.name: set(d.value) for d in schema.string_domain}["island"] == {"Biscoe", "Dream", "Torgersen"}

    # the HTML names every feature (plain summary table, and inside the embedded Facets proto)
    page = (out / "statistics.html").read_text()
    for name in frames["train"].columns:
        assert f"<td>{name}</td>" in page, name
    assert "__index_level_0__" not in page
    proto = re.search(r'proto-input="([^"]+)"', page).group(1)
    facets = statistics_pb2.DatasetFeatureStatisticsList.FromString(base64.b64decode(proto))
    assert [d.name for d in facets.datasets] == ["train", "eval"]
    assert {".".join(f.path.step) for f in facets.datasets[1].features} == set(frames["eval"].columns)

    # drift measured for every feature, all within the default bound, and reported
    assert set(result.drift) == set(frames["train"].columns)
    assert all(0 <= d["value"] <= 0.3 for d in result.drift.values())
    report = (out / "report.md").read_text()
    assert "No anomalies" in report and "Inferred from the train split" in report
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
    frames["eval"].loc[0:4, "color"] = "green"  # not a train category
    with pytest.raises(DataValidationError):  # the inferred schema rejects "green" ...
        run(tmp_path / "inferred", frames)

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


def test_unseen_category_raises_and_writes_nothing(tmp_path, tfdv):
    frames = stable_frames()
    frames["test"].loc[5, "color"] = "purple"
    with pytest.raises(DataValidationError) as info:
        run(tmp_path, frames)
    [anomaly] = info.value.anomalies
    assert (anomaly["split"], anomaly["feature"]) == ("test", "color")
    assert "purple" in anomaly["description"]
    assert f"test: feature 'color': {anomaly['kind']}: " in str(info.value)
    assert_nothing_written(tmp_path / "out")


def test_existing_outputs_are_left_alone_on_failure(tmp_path, tfdv):
    frames = stable_frames()
    frames["eval"]["x"] = frames["eval"]["x"] + 5.0
    out = tmp_path / "out"
    (out / "statistics").mkdir(parents=True)
    (out / "statistics" / "old.pb").write_bytes(b"old")
    (out / "report.md").write_text("old report")
    with pytest.raises(DataValidationError):
        run(tmp_path, frames)
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "statistics"]
    assert (out / "report.md").read_text() == "old report"
    assert [p.name for p in (out / "statistics").iterdir()] == ["old.pb"]


# ----------------------------------------------------------------------------------------- drift


def drifted_frames() -> dict[str, pd.DataFrame]:
    """eval: numeric `x` shifted by 3 standard deviations, categorical `color` almost all "red"."""
    frames = stable_frames()
    frames["eval"] = synthetic(200, 2, shift=3.0)
    frames["eval"].loc[:189, "color"] = "red"
    return frames


def test_drift_beyond_threshold_raises_and_names_features(tmp_path, tfdv):
    with pytest.raises(DataValidationError) as info:
        run(tmp_path, drifted_frames(), drift_threshold=0.3)
    found = {(a["split"], a["feature"], a["kind"]) for a in info.value.anomalies}
    assert found == {
        ("eval", "x", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"),
        ("eval", "color", "COMPARATOR_L_INFTY_HIGH"),
    }
    lines = str(info.value).splitlines()
    assert any(
        line.startswith("eval: feature 'x': COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH: ") for line in lines
    )
    assert any(line.startswith("eval: feature 'color': COMPARATOR_L_INFTY_HIGH: ") for line in lines)
    assert "drift_threshold" in lines[-1]
    assert_nothing_written(tmp_path / "out")


def test_same_drift_passes_with_drift_disabled(tmp_path, tfdv):
    result, out = run(tmp_path, drifted_frames(), drift_threshold=0)
    assert result.anomalies == []
    assert result.drift == {}
    schema = tfdv.load_schema_text(str(out / "schema.pbtxt"))
    assert not any(f.HasField("drift_comparator") for f in schema.feature)
    assert "Drift checks are disabled" in (out / "report.md").read_text()


def test_stable_data_passes_with_low_measured_drift(tmp_path, tfdv):
    result, _ = run(tmp_path, stable_frames(), drift_threshold=0.3)
    assert set(result.drift) == {"x", "y", "color", "label"}
    assert result.drift["color"]["measure"] == "L_INFTY"
    assert result.drift["x"]["measure"] == "JENSEN_SHANNON_DIVERGENCE"
    assert all(d["value"] < 0.3 for d in result.drift.values())


def test_per_feature_drift_override_is_honoured(tmp_path, tfdv):
    # raise the bound of the two drifted features only: passes, and the others keep the default
    result, out = run(
        tmp_path / "a", drifted_frames(), drift_threshold=0.3, drift_thresholds={"x": 1.0, "color": 0}
    )
    assert result.anomalies == []
    assert result.drift["x"]["threshold"] == 1.0 and result.drift["x"]["value"] > 0.3
    assert "color" not in result.drift  # 0 disables that feature only
    assert result.drift["y"]["threshold"] == pytest.approx(0.3)
    assert "`x`: 1" in (out / "report.md").read_text()

    # overriding only one of them leaves the other one failing
    with pytest.raises(DataValidationError) as info:
        run(tmp_path / "b", drifted_frames(), drift_threshold=0.3, drift_thresholds={"x": 1.0})
    assert {a["feature"] for a in info.value.anomalies} == {"color"}

    # a tight override on a stable feature fails although the default would pass
    measured = run(tmp_path / "c", stable_frames())[0].drift["y"]["value"]
    with pytest.raises(DataValidationError) as info:
        run(tmp_path / "d", stable_frames(), drift_threshold=0.3, drift_thresholds={"y": measured / 2})
    assert {a["feature"] for a in info.value.anomalies} == {"y"}


def test_drift_override_for_unknown_feature_is_a_config_error(tmp_path, tfdv):
    with pytest.raises(ConfigError, match="colour"):
        run(tmp_path, stable_frames(), drift_thresholds={"colour": 0.5})
    with pytest.raises(ConfigError, match="drift_threshold"):
        run(tmp_path, stable_frames(), drift_threshold=-0.1)
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
