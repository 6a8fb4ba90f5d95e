"""What a raw feature value means to the model, computed the same way in training and in serving.

Ingestion decides each column's kind once (``components/ingest/typing.py``): ``numeric``,
``categorical``, ``boolean`` or ``datetime`` (identifiers and free text are dropped there). Booleans
become one number (1.0 / 0.0) and datetimes become calendar numbers (year, month, day, day of week and,
where the training values had a time of day, hour). ``DeriveFeatures``, the first step of the fitted
preprocessing, applies exactly these functions to a DataFrame; the model server applies the same
functions to request values, so a value means the same thing wherever the model meets it.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

KINDS = ("numeric", "categorical", "boolean", "datetime")
ISO8601 = "ISO8601"  # parsed with datetime.fromisoformat (any ISO 8601 form Python reads)
TRUE_TOKENS = frozenset({"true", "t", "yes", "y"})
FALSE_TOKENS = frozenset({"false", "f", "no", "n"})
DATE_PARTS = ("year", "month", "day", "day_of_week")
TIME_PARTS = ("hour",)


class FeatureValueError(ValueError):
    """A value that cannot mean anything for its feature (e.g. 'maybe' for a boolean)."""


# ------------------------------------------------------------------------------------------ booleans


def parse_boolean(value: Any) -> float:
    """1.0 / 0.0 for a boolean value (``True``, ``"yes"``, ``"F"``, 1, 0.0 ...), NaN when missing."""
    if value is None:
        return math.nan
    if isinstance(value, bool | np.bool_):
        return 1.0 if value else 0.0
    if isinstance(value, int | float | np.integer | np.floating):
        if value != value:
            return math.nan
        if value in (0, 1):
            return float(value)
        raise FeatureValueError(f"{value!r} is not a boolean (0 or 1)")
    if isinstance(value, str):
        token = value.strip().lower()
        if token in TRUE_TOKENS or token == "1":
            return 1.0
        if token in FALSE_TOKENS or token == "0":
            return 0.0
        if token == "":
            return math.nan
    raise FeatureValueError(f"{value!r} is not a boolean (true/false, yes/no, 1/0)")


def is_boolean_token(value: Any) -> bool:
    try:
        parse_boolean(value)
    except FeatureValueError:
        return False
    return True


# ----------------------------------------------------------------------------------------- datetimes


def parse_datetime(value: Any, fmt: str) -> datetime | None:
    """A naive UTC ``datetime`` from a text (``fmt``: a ``strptime`` format or ``ISO8601``) or a
    datetime-like value; ``None`` when missing. Aware times are converted to UTC."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, np.datetime64):
        return parse_datetime(pd.Timestamp(value), fmt)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = (
                datetime.fromisoformat(text.replace("Z", "+00:00"))
                if fmt == ISO8601
                else datetime.strptime(text, fmt)
            )
        except ValueError as exc:
            shown = "ISO 8601" if fmt == ISO8601 else f"the format {fmt!r}"
            raise FeatureValueError(f"{value!r} is not a date/time in {shown}") from exc
    else:
        raise FeatureValueError(f"{value!r} is not a date/time (send text)")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def datetime_parts(has_time: bool) -> tuple[str, ...]:
    return DATE_PARTS + (TIME_PARTS if has_time else ())


def calendar_values(moment: datetime | None, parts: tuple[str, ...] | list[str]) -> list[float]:
    """The calendar numbers of ``moment`` (NaN for each when it is missing)."""
    if moment is None:
        return [math.nan] * len(parts)
    table = {
        "year": moment.year,
        "month": moment.month,
        "day": moment.day,
        "day_of_week": moment.weekday(),
        "hour": moment.hour,
    }
    return [float(table[p]) for p in parts]


def part_name(feature: str, part: str) -> str:
    return f"{feature}__{part}"


# ------------------------------------------------------------------------------------- feature specs


def derived_columns(feature: dict) -> list[str]:
    """The model-side numeric columns a raw feature becomes (none for categorical: it stays text)."""
    kind = feature["kind"]
    if kind == "datetime":
        return [part_name(feature["name"], p) for p in feature["parts"]]
    if kind in ("numeric", "boolean"):
        return [feature["name"]]
    return []


def derive_column(feature: dict, values: list) -> list[list[float]]:
    """One raw feature's values -> its derived numeric columns (a list per column).

    Raises ``FeatureValueError`` naming the value when one cannot be read. Distinct values are read
    once (dates repeat a lot in real tables)."""
    kind = feature["kind"]
    if kind == "boolean":
        return [[parse_boolean(v) for v in values]]
    if kind == "datetime":
        parts, fmt = feature["parts"], feature["format"]
        seen: dict[Any, list[float]] = {}
        rows = []
        for v in values:
            key = v if isinstance(v, str) else None
            row = seen.get(key) if key is not None else None
            if row is None:
                row = calendar_values(parse_datetime(v, fmt), parts)
                if key is not None:
                    seen[key] = row
            rows.append(row)
        return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in parts]
    raise ValueError(f"feature kind {kind!r} has no derived columns")


class DeriveFeatures(TransformerMixin, BaseEstimator):
    """The first step of the fitted preprocessing: booleans to 1.0/0.0, datetimes to calendar numbers.

    ``features``: the raw features as ingestion typed them (dicts with ``name`` and ``kind``; datetimes
    also ``format`` and ``parts``). Numeric and categorical columns pass through unchanged. Stateless:
    everything it needs was decided at ingestion and is in ``features``.
    """

    def __init__(self, features: list[dict] | None = None):
        self.features = features

    def fit(self, X, y=None):  # noqa: N803 (scikit-learn's argument names)
        self.n_features_in_ = len(self.features or [])
        return self

    def transform(self, X):  # noqa: N803
        frame = pd.DataFrame(X)
        out: dict[str, Any] = {}
        for feature in self.features or []:
            name, kind = feature["name"], feature["kind"]
            if kind in ("numeric", "categorical"):
                out[name] = frame[name]
                continue
            try:
                columns = derive_column(feature, frame[name].astype(object).tolist())
            except FeatureValueError as exc:
                raise FeatureValueError(f"feature {name!r}: {exc}") from exc
            for column, values in zip(derived_columns(feature), columns, strict=True):
                out[column] = np.asarray(values, dtype=np.float64)
        return pd.DataFrame(out, index=frame.index)

    def get_feature_names_out(self, input_features=None):
        names = []
        for feature in self.features or []:
            names += derived_columns(feature) or [feature["name"]]
        return np.asarray(names, dtype=object)


def model_columns(features: list[dict]) -> tuple[list[str], list[str]]:
    """(numeric columns, categorical columns) the ColumnTransformer sees after ``DeriveFeatures``."""
    numeric, categorical = [], []
    for feature in features:
        if feature["kind"] == "categorical":
            categorical.append(feature["name"])
        else:
            numeric += derived_columns(feature)
    return numeric, categorical
