"""Column typing: what each column of a user's table is, decided once, at ingestion.

Every column but the target gets one kind:

- ``numeric``: numbers (numeric text such as ``"3.5"`` included);
- ``categorical``: a few distinct values (text, or integer codes whose name says they are ids of
  something, like ``store_id`` with 12 stores);
- ``boolean``: ``True``/``False`` or text tokens (``yes``/``no``, ``true``/``false``, ``y``/``n``, ``t``/``f``);
- ``datetime``: timestamps, or text in one date/time format; the model sees calendar numbers
  (``components/common/features.py``);
- ``id``: a row identifier (unique per row, or named like an id and nearly unique): dropped;
- ``text``: free or high-cardinality text (e-mail addresses, names, comments): dropped; one-hot
  encoding it would learn nothing that generalizes.

The decision for each column, and why, is logged, recorded in the split files and the model's
metadata, and printed in the run summary; ``column_types`` in the configuration overrides it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from components.common.errors import InputDataError
from components.common.features import ISO8601, datetime_parts, is_boolean_token, parse_datetime
from components.common.features import FeatureValueError as _ValueError

KINDS = ("numeric", "categorical", "boolean", "datetime", "id", "text")
DROPPED_KINDS = ("id", "text")
# An object column is meant to be numeric (or a date) when at least this share of its values parse.
PARSE_SHARE = 0.9
# Text with more distinct values than this share of its rows (and more than MIN_DISTINCT_TEXT) is text.
TEXT_UNIQUE_SHARE = 0.5
MIN_DISTINCT_TEXT = 20
LONG_TEXT_CHARS = 50  # mean length above which a text column is prose, whatever its cardinality
ID_UNIQUE_SHARE = 0.95  # an id-named column this unique is an identifier
MIN_ROWS_FOR_UNIQUE_ID = 20  # an unnamed integer column is an id only when unique over this many rows
CODE_MAX_DISTINCT = 50  # an id-named integer column with at most this many values is a categorical code
_ID_NAMES = {"id", "uuid", "guid", "index", "idx", "key", "row", "rowid", "row_id", "row_number", "rownum"}
_ID_CAMEL = re.compile(r"[a-z0-9](Id|ID)$")
_DATE_LIKE = re.compile(
    r"^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}|^\s*\d{4}-\d{2}|[A-Za-z]{3,9}\.? \d{1,2},? \d{4}"
)


@dataclass
class ColumnType:
    name: str  # sanitized, as later stages see it
    kind: str
    reason: str
    format: str | None = None  # datetime: strptime format or "ISO8601"
    parts: list[str] = field(default_factory=list)  # datetime: calendar numbers the model sees

    @property
    def dropped(self) -> bool:
        return self.kind in DROPPED_KINDS

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [])}


def id_like_name(sanitized: str, original: str = "") -> bool:
    """``id``, ``customer_id``, ``id_customer``, ``CustomerID``, ``row_number`` ... (not ``paid``)."""
    return (
        sanitized in _ID_NAMES
        or sanitized.endswith("_id")
        or sanitized.startswith("id_")
        or sanitized.endswith("_uuid")
        or bool(_ID_CAMEL.search(original.strip()))
    )


def infer_column_types(
    df: pd.DataFrame,
    *,
    target: str,
    overrides: dict[str, str] | None = None,
    original_names: dict[str, str] | None = None,
) -> tuple[pd.DataFrame, dict[str, ColumnType]]:
    """Type every column but ``target``; returns the table with values converted to their kind
    (numeric text to numbers, timestamps to ISO 8601 text, dropped columns removed) and the types.

    Raises ``InputDataError`` naming the column for values that contradict the column's kind (a few
    words in a numeric column, a boolean column with a third value, an override that does not fit).
    """
    overrides = dict(overrides or {})
    original_names = original_names or {}
    unknown = sorted(set(overrides) - set(df.columns))
    if unknown:
        raise InputDataError(
            f"column_types names columns not in the table: {unknown}; columns: {list(df.columns)}"
        )
    bad = {k: v for k, v in overrides.items() if v not in KINDS}
    if bad:
        raise InputDataError(f"column_types {bad}: each kind must be one of {list(KINDS)}")
    if target in overrides:
        raise InputDataError(f"column_types names the target {target!r}; its kind comes from the task")

    types: dict[str, ColumnType] = {}
    converted: dict[str, pd.Series] = {}
    for name in df.columns:
        if name == target:
            converted[name] = df[name]
            continue
        col = df[name]
        if name in overrides:
            kind = overrides[name]
            values, ctype = _apply_kind(col, name, kind)
            ctype.reason = f"set in column_types ({ctype.reason})" if ctype.reason else "set in column_types"
        else:
            values, ctype = _infer(col, name, original_names.get(name, name))
        types[name] = ctype
        if not ctype.dropped:
            converted[name] = values
    out = pd.DataFrame(converted, index=df.index)
    return out, types


# ------------------------------------------------------------------------------------------- inference


def _infer(col: pd.Series, name: str, original: str) -> tuple[pd.Series, ColumnType]:
    values = col.dropna()
    n, distinct = len(values), int(values.nunique())
    if pd.api.types.is_bool_dtype(col):
        return col, ColumnType(name, "boolean", "true/false values")
    if pd.api.types.is_datetime64_any_dtype(col):
        return _as_datetime(col, name, ISO8601, "timestamps")
    if pd.api.types.is_numeric_dtype(col):
        return _infer_number(col, name, original, n, distinct)
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.astype(object)
    text = values.map(lambda v: v if isinstance(v, str) else str(v))
    if n == 0:
        return col, ColumnType(name, "categorical", "no values")

    # booleans written as words
    lowered = set(text.str.strip().str.lower().unique())
    if len(lowered) <= 2 and all(is_boolean_token(v) for v in lowered) and not lowered <= {"0", "1"}:
        return col, ColumnType(name, "boolean", f"values {sorted(lowered)}")

    # numbers written as text
    numbers = pd.to_numeric(text, errors="coerce")
    share = float(numbers.notna().mean())
    if share == 1.0:
        as_number = pd.to_numeric(col.where(col.notna(), None), errors="coerce").astype("float64")
        return _infer_number(as_number, name, original, n, distinct, note="numbers written as text")
    if share >= PARSE_SHARE:
        bad = values[numbers.isna()]
        raise InputDataError(
            f"column {name!r} is numeric but {len(bad)} of its {n} values are not numbers, e.g. "
            f"{_examples(bad)} (first at row {int(bad.index[0])}); fix or blank them in the source, list "
            f"them in missing_values if they mean 'missing', or set column_types: {{{name}: categorical}}"
        )

    # dates and times written as text
    fmt = _datetime_format(text)
    if fmt is not None:
        parsed = text.map(lambda v: _parses(v, fmt))
        share = float(parsed.mean())
        if share == 1.0:
            return _as_datetime(col, name, fmt, "date/time text" + ("" if fmt == ISO8601 else f" ({fmt})"))
        if share >= PARSE_SHARE:
            bad = values[~parsed]
            raise InputDataError(
                f"column {name!r} holds dates ({'ISO 8601' if fmt == ISO8601 else fmt}) but {len(bad)} of its "
                f"{n} values are not, e.g. {_examples(bad)} (first at row {int(bad.index[0])}); fix or blank "
                f"them, or set column_types: {{{name}: categorical}}"
            )

    # identifiers and free text
    mean_length = float(text.str.len().mean())
    unique_share = distinct / n
    if unique_share >= ID_UNIQUE_SHARE and (id_like_name(name, original) or _token_like(text)):
        why = "named like an id" if id_like_name(name, original) else "a different value in almost every row"
        return col, ColumnType(name, "id", f"{why} ({distinct} distinct in {n} rows)")
    if mean_length > LONG_TEXT_CHARS:
        return col, ColumnType(name, "text", f"long text (mean {mean_length:.0f} characters)")
    if unique_share > TEXT_UNIQUE_SHARE and distinct > MIN_DISTINCT_TEXT:
        return col, ColumnType(name, "text", f"high-cardinality text ({distinct} distinct in {n} rows)")
    return col, ColumnType(name, "categorical", f"{distinct} distinct values")


def _infer_number(
    col: pd.Series, name: str, original: str, n: int, distinct: int, note: str = ""
) -> tuple[pd.Series, ColumnType]:
    values = col.dropna()
    numbers = values.to_numpy(dtype=float)
    integral = n > 0 and bool(np.isfinite(numbers).all() and np.all(np.mod(numbers, 1) == 0))
    why = f"{note}; " if note else ""
    if integral and id_like_name(name, original):
        if n and distinct / n >= ID_UNIQUE_SHARE:
            return col, ColumnType(name, "id", f"{why}named like an id ({distinct} distinct in {n} rows)")
        if distinct <= CODE_MAX_DISTINCT:
            codes = col.map(lambda v: v if v != v else str(int(v))).astype(object)
            return codes, ColumnType(
                name, "categorical", f"{why}integer codes named like an id ({distinct} values)"
            )
    if integral and n >= MIN_ROWS_FOR_UNIQUE_ID and distinct == n == len(col):
        ordered = values.is_monotonic_increasing or values.is_monotonic_decreasing
        dense = float(values.max()) - float(values.min()) + 1 == n
        if ordered or dense:
            shape = "increasing" if values.is_monotonic_increasing else "a range of consecutive integers"
            return col, ColumnType(name, "id", f"{why}unique per row, {shape}")
    return col, ColumnType(name, "numeric", note or "numbers")


def _as_datetime(col: pd.Series, name: str, fmt: str, reason: str) -> tuple[pd.Series, ColumnType]:
    moments = [parse_datetime(v, fmt) for v in col.tolist()]
    has_time = any(m is not None and (m.hour or m.minute or m.second) for m in moments)
    if pd.api.types.is_datetime64_any_dtype(col):
        # one representation everywhere: ISO 8601 text (what TFDV, Parquet and JSON requests all carry)
        col = pd.Series(
            [None if m is None else m.isoformat() for m in moments], index=col.index, dtype=object
        )
    return col, ColumnType(name, "datetime", reason, format=fmt, parts=list(datetime_parts(has_time)))


def _datetime_format(text: pd.Series) -> str | None:
    """The one format the column's dates are written in, or None when the values are not dates."""
    sample = text.head(200)
    if not sample.map(lambda v: bool(_DATE_LIKE.search(v))).mean() >= PARSE_SHARE:
        return None
    if sample.map(lambda v: _parses(v, ISO8601)).mean() >= PARSE_SHARE:
        return ISO8601
    from pandas.tseries.api import guess_datetime_format

    candidates: list[str] = []
    for dayfirst in (False, True):  # month first (pandas' default) wins when both read every value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas warns when a day-first guess contradicts dayfirst
            guesses = sample.map(lambda v, d=dayfirst: guess_datetime_format(v.strip(), dayfirst=d)).dropna()
        if not guesses.empty:
            candidates.append(str(guesses.mode().iloc[0]))
    for fmt in dict.fromkeys(candidates):
        if sample.map(lambda v, f=fmt: _parses(v, f)).mean() >= PARSE_SHARE:
            return fmt
    return None


def _parses(value: str, fmt: str) -> bool:
    try:
        return parse_datetime(value, fmt) is not None
    except _ValueError:
        return False


def _token_like(text: pd.Series) -> bool:
    """Values without spaces (codes, keys, e-mail addresses): identifiers rather than prose."""
    return not bool(text.head(1000).str.contains(r"\s", regex=True).any())


def _examples(values: pd.Series) -> list[str]:
    return values.astype(str).unique()[:5].tolist()


# ------------------------------------------------------------------------------------------- overrides


def _apply_kind(col: pd.Series, name: str, kind: str) -> tuple[pd.Series, ColumnType]:
    values = col.dropna()
    if kind in DROPPED_KINDS:
        return col, ColumnType(name, kind, "")
    if kind == "categorical":
        text = col.map(lambda v: v if v != v or v is None else (v if isinstance(v, str) else _code(v)))
        return text.astype(object), ColumnType(name, kind, "")
    if kind == "numeric":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna()]
        if not bad.empty:
            raise InputDataError(
                f"column_types sets {name!r} numeric but {len(bad)} of its values are not numbers, e.g. {_examples(bad)}"
            )
        return pd.to_numeric(col, errors="coerce").astype("float64"), ColumnType(name, kind, "")
    if kind == "boolean":
        bad = values[~values.map(is_boolean_token)]
        if not bad.empty:
            raise InputDataError(
                f"column_types sets {name!r} boolean but it has values {_examples(bad)}; booleans are "
                "true/false, yes/no, y/n, t/f or 1/0"
            )
        return col, ColumnType(name, kind, "")
    # datetime
    if pd.api.types.is_datetime64_any_dtype(col):
        return _as_datetime(col, name, ISO8601, "")
    text = values.map(lambda v: v if isinstance(v, str) else str(v))
    fmt = _datetime_format(text) if not text.empty else ISO8601
    bad = text if fmt is None else text[~text.map(lambda v: _parses(v, fmt))]
    if fmt is None or not bad.empty:
        raise InputDataError(
            f"column_types sets {name!r} datetime but values such as {_examples(bad)} are not dates in one "
            "format (ISO 8601 such as 2024-05-31 or 2024-05-31T13:45:00 always works)"
        )
    return _as_datetime(col, name, fmt, "")


def _code(value) -> str:
    """An integer code as text without a trailing '.0' (3.0 -> '3'), other values as they print."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
