"""TFDV 1.16.1 works under the locked versions, which break its declared pins (protobuf<6, pandas<2).

pyproject.toml overrides TFDV's metadata (``[tool.uv] override-dependencies``); these tests keep that
promise by exercising, under the installed versions, every TFDV call the validate stage relies on.
"""

from __future__ import annotations

import base64
import re
from importlib.metadata import version

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def tfdv():
    import tensorflow_data_validation

    return tensorflow_data_validation


def major(package: str) -> int:
    return int(version(package).split(".")[0])


def test_locked_versions():
    assert version("tensorflow-data-validation") == "1.16.1"
    assert major("protobuf") == 6
    assert major("pandas") == 2
    assert major("numpy") == 1
    assert version("pyarrow") == "10.0.1"


def frame(n: int, seed: int, *, shift: float = 0.0, p_red: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "num_drifts": rng.normal(shift, 1.0, n),
            "num_stable": rng.normal(0.0, 1.0, n),
            "cat_drifts": rng.choice(["red", "blue"], n, p=[p_red, 1 - p_red]),
            "cat_stable": rng.choice(["x", "y", "z"], n),
            "count": rng.integers(0, 10, n),
        }
    )


@pytest.fixture(scope="module")
def baseline(tfdv):
    return tfdv.generate_statistics_from_dataframe(frame(400, 0))


def features(stats) -> dict[str, object]:
    return {".".join(f.path.step): f for f in stats.datasets[0].features}


def test_generate_statistics_from_dataframe(tfdv, baseline):
    from tensorflow_metadata.proto.v0 import statistics_pb2

    assert baseline.datasets[0].num_examples == 400
    found = features(baseline)
    assert set(found) == {"num_drifts", "num_stable", "cat_drifts", "cat_stable", "count"}
    fns = statistics_pb2.FeatureNameStatistics
    assert found["num_stable"].type == fns.FLOAT
    assert found["count"].type == fns.INT
    assert found["cat_stable"].type == fns.STRING
    assert found["cat_stable"].string_stats.unique == 3
    assert found["num_stable"].num_stats.mean == pytest.approx(frame(400, 0)["num_stable"].mean(), abs=1e-9)


def test_missing_values_and_index_column(tfdv):
    df = pd.DataFrame({"a": [1.0, np.nan, 3.0, 4.0], "b": ["u", None, "v", "u"]}, index=[10, 11, 12, 13])
    # the gotcha core.read_split guards against: a non-default index becomes a feature
    assert "__index_level_0__" in features(tfdv.generate_statistics_from_dataframe(df))
    stats = tfdv.generate_statistics_from_dataframe(df.reset_index(drop=True))
    found = features(stats)
    assert set(found) == {"a", "b"}
    assert found["a"].num_stats.common_stats.num_missing == 1
    assert found["b"].string_stats.common_stats.num_missing == 1


def test_generate_statistics_from_csv_with_beam(tfdv, tmp_path):
    csv = tmp_path / "data.csv"
    frame(120, 5).to_csv(csv, index=False)
    stats = tfdv.generate_statistics_from_csv(str(csv))  # Beam DirectRunner
    assert stats.datasets[0].num_examples == 120
    assert set(features(stats)) == {"num_drifts", "num_stable", "cat_drifts", "cat_stable", "count"}


def test_infer_schema_and_schema_text_round_trip(tfdv, baseline, tmp_path):
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = tfdv.infer_schema(baseline)
    types = {f.name: f.type for f in schema.feature}
    assert types == {
        "num_drifts": schema_pb2.FLOAT,
        "num_stable": schema_pb2.FLOAT,
        "cat_drifts": schema_pb2.BYTES,
        "cat_stable": schema_pb2.BYTES,
        "count": schema_pb2.INT,
    }
    assert set(tfdv.get_domain(schema, "cat_stable").value) == {"x", "y", "z"}
    path = tmp_path / "schema.pbtxt"
    tfdv.write_schema_text(schema, str(path))
    assert tfdv.load_schema_text(str(path)) == schema


def test_validate_statistics_schema_and_drift_comparators(tfdv, baseline):
    schema = tfdv.infer_schema(baseline)
    for feature in schema.feature:
        if feature.name.startswith("cat_"):
            feature.drift_comparator.infinity_norm.threshold = 0.2
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = 0.2

    same = tfdv.generate_statistics_from_dataframe(frame(300, 1))
    anomalies = tfdv.validate_statistics(same, schema, previous_statistics=baseline)
    assert dict(anomalies.anomaly_info) == {}
    assert len(anomalies.drift_skew_info) == 5  # measured for every feature with a comparator

    drifted = tfdv.generate_statistics_from_dataframe(frame(300, 1, shift=3.0, p_red=0.95))
    anomalies = tfdv.validate_statistics(drifted, schema, previous_statistics=baseline)
    assert set(anomalies.anomaly_info) == {"num_drifts", "cat_drifts"}
    reasons = {k: [r.type for r in v.reason] for k, v in anomalies.anomaly_info.items()}
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    assert reasons == {
        "num_drifts": [anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH],
        "cat_drifts": [anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH],
    }
    measured = {".".join(i.path.step): i.drift_measurements[0].value for i in anomalies.drift_skew_info}
    assert measured["num_drifts"] > 0.2 and measured["num_stable"] < 0.2
    # L-infinity is the largest change of a category's share: red goes from ~0.5 to ~0.95
    assert measured["cat_drifts"] == pytest.approx(0.45, abs=0.1)

    # a schema violation: a category outside the domain
    bad = frame(100, 2)
    bad.loc[0, "cat_stable"] = "w"
    anomalies = tfdv.validate_statistics(tfdv.generate_statistics_from_dataframe(bad), schema)
    assert set(anomalies.anomaly_info) == {"cat_stable"}
    assert "w" in anomalies.anomaly_info["cat_stable"].description


def test_get_statistics_html(tfdv, baseline):
    from tensorflow_data_validation.utils import display_util
    from tensorflow_metadata.proto.v0 import statistics_pb2

    other = tfdv.generate_statistics_from_dataframe(frame(50, 3))
    page = display_util.get_statistics_html(
        lhs_statistics=baseline, rhs_statistics=other, lhs_name="train", rhs_name="eval"
    )
    assert "facets-overview" in page
    embedded = statistics_pb2.DatasetFeatureStatisticsList.FromString(
        base64.b64decode(re.search(r'proto-input="([^"]+)"', page).group(1))
    )
    assert [(d.name, d.num_examples) for d in embedded.datasets] == [("train", 400), ("eval", 50)]
    assert set(features(embedded)) == set(features(baseline))
