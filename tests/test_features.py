"""What raw values mean to the model (components/common/features.py) and drift measures (validate/drift.py)."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from components.common.features import (
    FeatureValueError,
    calendar_values,
    derive_column,
    parse_boolean,
    parse_datetime,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, 1.0),
        (False, 0.0),
        ("Yes", 1.0),
        (" n ", 0.0),
        ("TRUE", 1.0),
        ("f", 0.0),
        (1, 1.0),
        (0.0, 0.0),
        ("1", 1.0),
    ],
)
def test_booleans(value, expected):
    assert parse_boolean(value) == expected


@pytest.mark.parametrize("value", [None, float("nan"), ""])
def test_missing_booleans(value):
    assert math.isnan(parse_boolean(value))


@pytest.mark.parametrize("value", ["maybe", 2, -1.0, [True]])
def test_not_booleans(value):
    with pytest.raises(FeatureValueError, match="is not a boolean"):
        parse_boolean(value)


def test_datetimes_iso_and_formats_and_time_zones():
    assert parse_datetime("2024-05-31", "ISO8601") == datetime(2024, 5, 31)
    assert parse_datetime("2024-05-31T13:45:00Z", "ISO8601") == datetime(2024, 5, 31, 13, 45)
    assert parse_datetime("2024-05-31T13:45:00+02:00", "ISO8601") == datetime(2024, 5, 31, 11, 45)  # UTC
    assert parse_datetime("31/05/2024", "%d/%m/%Y") == datetime(2024, 5, 31)
    assert parse_datetime(pd.Timestamp("2024-05-31 10:00", tz="UTC"), "ISO8601") == datetime(2024, 5, 31, 10)
    assert parse_datetime(None, "ISO8601") is None and parse_datetime(float("nan"), "ISO8601") is None
    with pytest.raises(FeatureValueError, match="'05/31/2024' is not a date/time in the format '%d/%m/%Y'"):
        parse_datetime("05/31/2024", "%d/%m/%Y")
    with pytest.raises(FeatureValueError, match="send text"):
        parse_datetime(20240531, "ISO8601")


def test_calendar_numbers():
    parts = ("year", "month", "day", "day_of_week", "hour")
    assert calendar_values(datetime(2024, 5, 31, 13, 45), parts) == [2024.0, 5.0, 31.0, 4.0, 13.0]
    assert all(math.isnan(v) for v in calendar_values(None, parts))
    spec = {"name": "d", "kind": "datetime", "format": "ISO8601", "parts": ["month", "hour"]}
    assert derive_column(spec, ["2024-01-01T05:00", None, "2024-01-01T05:00"])[1][::2] == [5.0, 5.0]


# --- drift measures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stats_of():
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from components.validate.core import _tfdv
    from components.validate.drift import stats_features

    tfdv = _tfdv()
    return lambda df: stats_features(tfdv.generate_statistics_from_dataframe(df))


def test_numeric_drift_against_quantile_buckets(stats_of):
    from components.validate.drift import measure

    rng = np.random.default_rng(0)
    reference = stats_of(pd.DataFrame({"x": rng.normal(size=4000)}))["x"]
    same = measure("x", reference, pd.Series(rng.normal(size=2000)), 4000, 0.2)
    assert same.value < 0.01 and not same.drifted
    shifted = measure("x", reference, pd.Series(rng.normal(2.0, 1.0, 2000)), 4000, 0.2)
    assert shifted.drifted and shifted.value > 0.2 and shifted.p_value < 1e-10
    gone = measure("x", reference, pd.Series([np.nan] * 500 + list(rng.normal(size=500))), 4000, 0.2)
    assert gone.detail.startswith("missing: 0.0% -> 50.0%") and gone.drifted
    # a few values past the reference's extremes in a small sample are not significant
    few = measure("x", reference, pd.Series(np.r_[rng.normal(size=40), [9.0]]), 4000, 0.01)
    assert not few.drifted


def test_drift_of_a_column_with_a_repeated_value(stats_of):
    """Many zeros fill several quantile buckets with the same edges: merged into one, no false drift."""
    from components.validate.drift import measure

    rng = np.random.default_rng(1)

    def zeros(n):
        return np.where(rng.random(n) < 0.7, 0.0, rng.exponential(10, n))

    reference = stats_of(pd.DataFrame({"x": zeros(5000)}))["x"]
    assert measure("x", reference, pd.Series(zeros(3000)), 5000, 0.05).value < 0.01
    constant = stats_of(pd.DataFrame({"c": np.full(100, 3.0)}))["c"]
    assert measure("c", constant, pd.Series(np.full(50, 3.0)), 100, 0.1).value < 0.01
    assert measure("c", constant, pd.Series(np.full(50, 4.0)), 100, 0.1).drifted


def test_categorical_drift_names_the_category(stats_of):
    from components.validate.drift import measure

    rng = np.random.default_rng(2)
    reference = stats_of(pd.DataFrame({"c": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1])}))["c"]
    same = measure("c", reference, pd.Series(rng.choice(["a", "b", "c"], 1000, p=[0.6, 0.3, 0.1])), 3000, 0.2)
    assert same.measure == "l_infinity" and same.value < 0.06 and not same.drifted
    renamed = measure(
        "c", reference, pd.Series(rng.choice(["A", "b", "c"], 1000, p=[0.6, 0.3, 0.1])), 3000, 0.2
    )
    assert renamed.drifted and renamed.value > 0.55
    assert renamed.detail.startswith("'a': 5")  # the category whose share moved most
