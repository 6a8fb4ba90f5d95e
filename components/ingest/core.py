"""Ingestion: read a CSV or Parquet table, check it, sanitize column names, split it deterministically."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from components.common.columns import sanitize_column_name, sanitize_column_names
from components.common.errors import InputDataError
from components.common.io import fetch_bytes, resolve_uri, sha256_bytes, table_format, write_parquet
from components.common.logs import get_logger

log = get_logger("ingest")
# An object column is "meant to be numeric" when at least this share of its values parse as numbers.
NUMERIC_SHARE = 0.9
MAX_CLASSES = 200


@dataclass
class IngestResult:
    target: str  # sanitized name, as later stages see it
    source_sha256: str
    rows: int
    columns: list[str]
    split_rows: dict[str, int]
    dropped_rows_missing_target: int = 0
    renamed_columns: dict[str, str] = field(default_factory=dict)
    classes: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def read_table(source_uri: str, file_format: str = "auto") -> tuple[pd.DataFrame, str]:
    """The table behind ``source_uri`` and the sha256 of its bytes."""
    fmt = table_format(resolve_uri(source_uri), file_format)
    data = fetch_bytes(source_uri)
    if not data.strip():
        raise InputDataError(f"data source {source_uri!r} is empty (0 bytes)")
    try:
        if fmt == "parquet":
            df = pd.read_parquet(io.BytesIO(data))
        else:
            df = pd.read_csv(
                io.BytesIO(data), compression="infer" if not source_uri.endswith(".gz") else "gzip"
            )
    except Exception as exc:
        raise InputDataError(f"data source {source_uri!r} cannot be read as {fmt.upper()}: {exc}") from exc
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise InputDataError(f"data source {source_uri!r} has no rows" if df.shape[1] else "no columns")
    return df, sha256_bytes(data)


def prepare_table(
    df: pd.DataFrame, *, target: str, task: str, drop_columns: list[str] | tuple[str, ...] = ()
) -> tuple[pd.DataFrame, str, dict[str, str], int]:
    """Sanitize names, drop configured columns, check types; returns (table, target, renames, dropped rows)."""
    mapping = sanitize_column_names(df.columns)
    df = df.rename(columns=mapping)
    renamed = {old: new for old, new in mapping.items() if old != new}
    available = list(df.columns)

    target_clean = sanitize_column_name(target)
    if target_clean not in df.columns:
        raise InputDataError(f"target column {target!r} is not in the table; columns are {available}")
    drops = [sanitize_column_name(c) for c in drop_columns]
    unknown = [c for c in drops if c not in df.columns]
    if unknown:
        raise InputDataError(f"drop_columns {unknown} are not in the table; columns are {available}")
    if target_clean in drops:
        raise InputDataError(f"target column {target!r} is also listed in drop_columns")
    df = df.drop(columns=drops)

    empty = [c for c in df.columns if df[c].isna().all()]
    if empty:
        raise InputDataError(
            f"columns {empty} have no values at all; drop them (drop_columns) or fix the source"
        )
    if df.shape[1] < 2:
        raise InputDataError("the table has no feature columns besides the target")

    for column in df.columns:
        _check_column_type(df[column], column)

    missing_target = int(df[target_clean].isna().sum())
    if missing_target:
        log.warning("dropping %d rows whose target %r is missing", missing_target, target_clean)
        df = df[df[target_clean].notna()]
    y = df[target_clean]
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            sample = y.astype(str).unique()[:3].tolist()
            raise InputDataError(
                f"target column {target_clean!r} must be numeric for regression; it holds values like {sample}"
            )
        if not np.isfinite(y.to_numpy(dtype=float)).all():
            raise InputDataError(f"target column {target_clean!r} has infinite values")
    else:
        counts = y.value_counts()
        if len(counts) < 2:
            raise InputDataError(
                f"target column {target_clean!r} has a single class {counts.index.tolist()}; classification "
                "needs at least two"
            )
        if len(counts) > MAX_CLASSES or (pd.api.types.is_float_dtype(y) and len(counts) > 0.5 * len(y)):
            raise InputDataError(
                f"target column {target_clean!r} has {len(counts)} distinct values: is this a regression task "
                "(set task: regression)?"
            )
    return df.reset_index(drop=True), target_clean, renamed, missing_target


def _check_column_type(col: pd.Series, name: str) -> None:
    """A text column whose values are almost all numbers has a few bad values: name them."""
    if col.dtype != object:
        return
    values = col.dropna()
    if values.empty:
        return
    numeric = pd.to_numeric(values, errors="coerce")
    share = float(numeric.notna().mean())
    if NUMERIC_SHARE <= share < 1.0:
        bad = values[numeric.isna()]
        examples = bad.astype(str).unique()[:5].tolist()
        raise InputDataError(
            f"column {name!r} is numeric but {len(bad)} of its values are not numbers, e.g. {examples} "
            f"(first at row {int(bad.index[0])}); fix or blank them in the source"
        )


def split_table(
    df: pd.DataFrame, *, target: str, task: str, eval_fraction: float, test_fraction: float, seed: int
) -> dict[str, pd.DataFrame]:
    """Deterministic train/eval/test split; stratified on the target for classification."""
    stratify = df[target] if task == "classification" else None
    if stratify is not None:
        counts = stratify.value_counts()
        rare = counts[counts < 3]
        if not rare.empty:
            raise InputDataError(
                f"classes {rare.index.tolist()} of {target!r} have fewer than 3 rows; a stratified "
                "train/eval/test split needs at least 3 of each (remove or merge them)"
            )
    try:
        rest, test = train_test_split(df, test_size=test_fraction, random_state=seed, stratify=stratify)
        relative_eval = eval_fraction / (1.0 - test_fraction)
        train, evaluation = train_test_split(
            rest,
            test_size=relative_eval,
            random_state=seed,
            stratify=rest[target] if stratify is not None else None,
        )
    except ValueError as exc:
        raise InputDataError(f"cannot split {len(df)} rows into train/eval/test: {exc}") from exc
    return {
        name: part.reset_index(drop=True)
        for name, part in (("train", train), ("eval", evaluation), ("test", test))
    }


def ingest(
    *,
    source_uri: str,
    file_format: str,
    target: str,
    task: str,
    drop_columns: list[str],
    eval_fraction: float,
    test_fraction: float,
    seed: int,
    train_path: str,
    eval_path: str,
    test_path: str,
) -> IngestResult:
    log.info("reading %s", source_uri)
    raw, digest = read_table(source_uri, file_format)
    log.info("read %d rows x %d columns (sha256 %s)", raw.shape[0], raw.shape[1], digest[:12])
    df, target_clean, renamed, dropped = prepare_table(
        raw, target=target, task=task, drop_columns=drop_columns
    )
    if renamed:
        log.info("sanitized column names: %s", renamed)
    splits = split_table(
        df,
        target=target_clean,
        task=task,
        eval_fraction=eval_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    for name, path in (("train", train_path), ("eval", eval_path), ("test", test_path)):
        write_parquet(splits[name], path)
    split_rows = {name: len(part) for name, part in splits.items()}
    log.info("split (seed %d): %s", seed, ", ".join(f"{k} {v} rows" for k, v in split_rows.items()))
    classes = sorted(df[target_clean].unique().tolist(), key=str) if task == "classification" else []
    return IngestResult(
        target=target_clean,
        source_sha256=digest,
        rows=len(df),
        columns=list(df.columns),
        split_rows=split_rows,
        dropped_rows_missing_target=dropped,
        renamed_columns=renamed,
        classes=classes,
    )
