"""Ingestion: read a CSV or Parquet table, check it, type its columns, split it deterministically.

What a user's table goes through, in order (each step logs what it did; each problem stops the run
with a message naming the column or value, and nothing is written):

1. read: CSV (its delimiter detected), Parquet, or a folder of Parquet files; duplicate column names stop;
2. names sanitized (``Body Mass (g)`` -> ``body_mass_g``), configured ``drop_columns`` removed;
3. column typing (``typing.py``): numeric, categorical, boolean, datetime; identifiers and free text dropped;
4. non-finite numbers stopped (``non_finite: error``) or made missing (``non_finite: missing``);
5. rows without a target dropped (counted in the summary); the target checked for the task;
6. a seeded train/eval/test split, stratified on the target for classification.

The splits are Parquet files whose schema metadata carries the column types, so every later stage
(validation, transform, the model's metadata) reads the same decisions.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from components.common.columns import sanitize_column_name, sanitize_column_names
from components.common.errors import InputDataError
from components.common.io import (
    REMOTE_SCHEMES,
    fetch_bytes,
    resolve_uri,
    sha256_bytes,
    table_format,
    write_parquet,
)
from components.common.logs import get_logger
from components.ingest.typing import ColumnType, infer_column_types

log = get_logger("ingest")
MAX_CLASSES = 200
DELIMITERS = (",", ";", "\t", "|")
SNIFF_BYTES = 1 << 16
SNIFF_LINES = 50


@dataclass
class IngestResult:
    target: str  # sanitized name, as later stages see it
    source_sha256: str
    rows: int
    columns: list[str]  # kept columns (target included), as later stages see them
    split_rows: dict[str, int]
    dropped_rows_missing_target: int = 0
    renamed_columns: dict[str, str] = field(default_factory=dict)
    classes: list = field(default_factory=list)
    column_types: dict[str, dict] = field(default_factory=dict)  # every column but the target
    dropped_columns: dict[str, str] = field(default_factory=dict)  # name -> why (ids, text, drop_columns)
    non_finite: dict[str, int] = field(default_factory=dict)  # column -> values made missing
    source_rows: int = 0
    delimiter: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------- reading


def read_table(
    source_uri: str,
    file_format: str = "auto",
    *,
    delimiter: str = "auto",
    missing_values: list[str] | tuple[str, ...] = (),
) -> tuple[pd.DataFrame, str, str]:
    """The table behind ``source_uri``, the sha256 of its bytes and the CSV delimiter used ("" for Parquet).

    A local folder is read as one Parquet dataset (its ``*.parquet`` files, in name order); its hash
    covers every file's name and bytes.
    """
    path = resolve_uri(source_uri)
    if not path.startswith(REMOTE_SCHEMES) and Path(path).is_dir():
        return _read_parquet_folder(source_uri, Path(path), missing_values) + ("",)
    try:
        fmt = table_format(path, file_format)
    except InputDataError:
        fmt = None  # no telling extension: the bytes decide (Parquet starts with PAR1)
    data = fetch_bytes(source_uri)
    if not data.strip():
        raise InputDataError(f"data source {source_uri!r} is empty (0 bytes)")
    if fmt is None:
        fmt = "parquet" if data[:4] == b"PAR1" else "csv"
        log.info("no csv/parquet extension on %s: read as %s (from its first bytes)", source_uri, fmt.upper())
    if fmt == "parquet":
        df = _read_parquet_bytes(source_uri, data)
        return _missing_tokens(df, missing_values), sha256_bytes(data), ""
    compression = "gzip" if path.split("?", 1)[0].endswith(".gz") else None
    text_head = _head_text(data, compression)
    sep = _detect_delimiter(text_head) if delimiter == "auto" else delimiter
    header = next(csv.reader(io.StringIO(text_head), delimiter=sep), [])
    _check_duplicate_names(header, source_uri)
    try:
        df = pd.read_csv(
            io.BytesIO(data),
            sep=sep,
            compression=compression,
            na_values=list(missing_values) or None,
            low_memory=False,
        )
    except Exception as exc:
        raise InputDataError(f"data source {source_uri!r} cannot be read as CSV: {exc}") from exc
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise InputDataError(f"data source {source_uri!r} has no rows" if df.shape[1] else "no columns")
    return df, sha256_bytes(data), sep


def _read_parquet_bytes(source_uri: str, data: bytes) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as exc:
        raise InputDataError(f"data source {source_uri!r} cannot be read as PARQUET: {exc}") from exc
    _check_duplicate_names(table.column_names, source_uri)
    df = table.to_pandas()
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise InputDataError(f"data source {source_uri!r} has no rows" if df.shape[1] else "no columns")
    return df


def _read_parquet_folder(source_uri: str, folder: Path, missing_values) -> tuple[pd.DataFrame, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".parquet", ".pq"))
    if not files:
        raise InputDataError(
            f"data source {source_uri!r} is a directory with no Parquet files in it; pass a CSV or "
            "Parquet file, or a folder of Parquet files"
        )
    import hashlib

    digest = hashlib.sha256()
    frames = []
    for file in files:
        data = file.read_bytes()
        digest.update(str(file.relative_to(folder)).encode() + b"\0" + sha256_bytes(data).encode())
        frames.append(_read_parquet_bytes(f"{source_uri}/{file.relative_to(folder)}", data))
    columns = [list(f.columns) for f in frames]
    if any(c != columns[0] for c in columns):
        odd = next(str(files[i].relative_to(folder)) for i, c in enumerate(columns) if c != columns[0])
        raise InputDataError(
            f"the Parquet files of {source_uri!r} do not have the same columns: {odd!r} differs from "
            f"{str(files[0].relative_to(folder))!r}"
        )
    log.info("read %d Parquet files from folder %s", len(files), folder)
    df = pd.concat(frames, ignore_index=True)
    return _missing_tokens(df, missing_values), digest.hexdigest()


def _missing_tokens(df: pd.DataFrame, missing_values) -> pd.DataFrame:
    if not missing_values:
        return df
    tokens = set(missing_values)
    for name in df.columns:
        if df[name].dtype == object:
            df[name] = df[name].where(~df[name].isin(tokens), None)
    return df


def _head_text(data: bytes, compression: str | None) -> str:
    head = data[:SNIFF_BYTES]
    if compression == "gzip":
        import gzip
        import zlib

        try:
            head = gzip.decompress(data)[:SNIFF_BYTES] if len(data) < SNIFF_BYTES else _gunzip_head(data)
        except (OSError, EOFError, zlib.error):
            return ""
    return head.decode("utf-8", errors="replace")


def _gunzip_head(data: bytes) -> bytes:
    import zlib

    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, SNIFF_BYTES)


def _detect_delimiter(text: str) -> str:
    """The delimiter that splits the first lines into the same number (> 1) of fields; ``,`` if none does."""
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line may be cut off
    sample = "\n".join(lines[:SNIFF_LINES])
    best, best_fields = ",", 1
    for sep in DELIMITERS:
        counts = [len(row) for row in csv.reader(io.StringIO(sample), delimiter=sep) if row]
        if not counts:
            continue
        fields = max(set(counts), key=counts.count)
        consistent = counts.count(fields) >= 0.9 * len(counts)
        if consistent and fields > best_fields:
            best, best_fields = sep, fields
    if best != ",":
        log.info("CSV delimiter detected: %r (%d columns)", best, best_fields)
    return best


def _check_duplicate_names(names: list, source_uri: str) -> None:
    seen: dict[str, list[int]] = {}
    for position, name in enumerate(names, start=1):
        seen.setdefault(str(name).strip(), []).append(position)
    duplicates = {name: where for name, where in seen.items() if len(where) > 1}
    if duplicates:
        detail = "; ".join(f"{name!r} at columns {where}" for name, where in duplicates.items())
        raise InputDataError(
            f"data source {source_uri!r} has duplicate column names: {detail}; rename them in the source "
            "so each column has its own name"
        )


# ------------------------------------------------------------------------------------------- checking


def prepare_table(
    df: pd.DataFrame,
    *,
    target: str,
    task: str,
    drop_columns: list[str] | tuple[str, ...] = (),
    column_types: dict[str, str] | None = None,
    non_finite: str = "error",
) -> tuple[pd.DataFrame, str, IngestResult]:
    """Sanitize names, drop configured columns, type the columns, check values and the target.

    Returns the table (target included, dropped columns removed), the sanitized target name and a
    partly filled ``IngestResult`` (renames, types, drops, non-finite counts, rows without a target).
    """
    mapping = sanitize_column_names(df.columns)
    df = df.rename(columns=mapping)
    originals = {new: old for old, new in mapping.items()}
    renamed = {old: new for old, new in mapping.items() if old != new}
    available = list(df.columns)

    target_clean = sanitize_column_name(target)
    if target_clean not in df.columns:
        hint = ""
        if len(available) == 1 and any(sep in str(originals[available[0]]) for sep in DELIMITERS):
            hint = " (the table was read as one column: is the CSV delimited by something other than the one used? set delimiter)"
        raise InputDataError(f"target column {target!r} is not in the table; columns are {available}{hint}")
    drops = [sanitize_column_name(c) for c in drop_columns]
    unknown = [c for c in drops if c not in df.columns]
    if unknown:
        raise InputDataError(f"drop_columns {unknown} are not in the table; columns are {available}")
    if target_clean in drops:
        raise InputDataError(f"target column {target!r} is also listed in drop_columns")
    df = df.drop(columns=drops)
    types_config = {sanitize_column_name(k): v for k, v in (column_types or {}).items()}

    empty = [c for c in df.columns if df[c].isna().all()]
    if empty:
        raise InputDataError(
            f"columns {empty} have no values at all; drop them (drop_columns) or fix the source"
        )

    missing_target = int(df[target_clean].isna().sum())
    if missing_target:
        log.warning(
            "dropping %d of %d rows whose target %r is missing", missing_target, len(df), target_clean
        )
        df = df[df[target_clean].notna()]
        if df.empty:
            raise InputDataError(f"every row's target {target_clean!r} is missing")

    df, types = infer_column_types(df, target=target_clean, overrides=types_config, original_names=originals)
    _log_types(types)
    kept = [c for c in df.columns if c != target_clean]
    if not kept:
        raise InputDataError(
            "the table has no feature columns besides the target"
            + (f" (dropped: {', '.join(f'{n} ({t.kind})' for n, t in types.items())})" if types else "")
        )

    counts = _non_finite(df, [c for c in kept if types[c].kind == "numeric"])
    if counts:
        detail = ", ".join(f"{name!r} ({n})" for name, n in counts.items())
        if non_finite == "error":
            raise InputDataError(
                f"columns with infinite values: {detail}; fix them in the source, or set non_finite: missing "
                "to treat them as missing values"
            )
        log.warning("infinite values made missing (non_finite: missing): %s", detail)
        for name in counts:
            df[name] = df[name].replace([np.inf, -np.inf], np.nan)

    _check_target(df[target_clean], target_clean, task)
    result = IngestResult(
        target=target_clean,
        source_sha256="",
        rows=len(df),
        columns=list(df.columns),
        split_rows={},
        dropped_rows_missing_target=missing_target,
        renamed_columns=renamed,
        column_types={name: t.as_dict() for name, t in types.items()},
        dropped_columns={
            **{name: "drop_columns" for name in drops},
            **{name: f"{t.kind}: {t.reason}" for name, t in types.items() if t.dropped},
        },
        non_finite=counts,
    )
    return df.reset_index(drop=True), target_clean, result


def _log_types(types: dict[str, ColumnType]) -> None:
    for name, t in types.items():
        if t.dropped:
            log.warning("column %r dropped: %s, %s (set column_types to keep it)", name, t.kind, t.reason)
        else:
            log.info("column %r: %s (%s)", name, t.kind, t.reason)


def _non_finite(df: pd.DataFrame, numeric: list[str]) -> dict[str, int]:
    counts = {}
    for name in numeric:
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=float)
        n = int(np.isinf(values).sum())
        if n:
            counts[name] = n
    return counts


def _check_target(y: pd.Series, name: str, task: str) -> None:
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            sample = y.astype(str).unique()[:3].tolist()
            raise InputDataError(
                f"target column {name!r} must be numeric for regression; it holds values like {sample}"
            )
        if not np.isfinite(y.to_numpy(dtype=float)).all():
            raise InputDataError(f"target column {name!r} has infinite values")
        return
    counts = y.value_counts()
    if len(counts) < 2:
        raise InputDataError(
            f"target column {name!r} has a single class {counts.index.tolist()}; classification "
            "needs at least two"
        )
    if len(counts) > MAX_CLASSES or (pd.api.types.is_float_dtype(y) and len(counts) > 0.5 * len(y)):
        raise InputDataError(
            f"target column {name!r} has {len(counts)} distinct values: is this a regression task "
            "(set task: regression)?"
        )


# ------------------------------------------------------------------------------------------- splitting


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
    column_types: dict[str, str] | None = None,
    non_finite: str = "error",
    missing_values: list[str] | None = None,
    delimiter: str = "auto",
) -> IngestResult:
    log.info("reading %s", source_uri)
    raw, digest, sep = read_table(
        source_uri, file_format, delimiter=delimiter, missing_values=list(missing_values or [])
    )
    log.info("read %d rows x %d columns (sha256 %s)", raw.shape[0], raw.shape[1], digest[:12])
    df, target_clean, result = prepare_table(
        raw,
        target=target,
        task=task,
        drop_columns=drop_columns,
        column_types=column_types,
        non_finite=non_finite,
    )
    if result.renamed_columns:
        log.info("sanitized column names: %s", result.renamed_columns)
    splits = split_table(
        df,
        target=target_clean,
        task=task,
        eval_fraction=eval_fraction,
        test_fraction=test_fraction,
        seed=seed,
    )
    table_meta = {
        "target": target_clean,
        "task": task,
        "column_types": result.column_types,
        "dropped_columns": result.dropped_columns,
    }
    written = []
    try:
        for name, path in (("train", train_path), ("eval", eval_path), ("test", test_path)):
            write_parquet(splits[name], path, metadata=table_meta)
            written.append(path)
    except BaseException:
        for path in written:  # all three splits or none
            Path(path).unlink(missing_ok=True)
        raise
    result.source_sha256 = digest
    result.source_rows = int(raw.shape[0])
    result.delimiter = sep
    result.split_rows = {name: len(part) for name, part in splits.items()}
    result.classes = sorted(df[target_clean].unique().tolist(), key=str) if task == "classification" else []
    log.info("split (seed %d): %s", seed, ", ".join(f"{k} {v} rows" for k, v in result.split_rows.items()))
    return result


def track(tracker, result: IngestResult, *, source_uri: str, params: dict) -> None:
    """Log ingestion into the run: its settings, the input table as a dataset (with its hash and the
    hash of its column schema), rows and columns."""
    import hashlib
    import json

    from components.registry.tracking import flatten

    tracker.log_params(params)
    schema = {"target": result.target, "columns": result.column_types}
    schema_sha256 = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
    tracker.log_dataset(
        name=source_uri.rstrip("/").rsplit("/", 1)[-1] or source_uri,
        digest=result.source_sha256[:36],
        source=source_uri,
        schema=schema,
        profile={"rows": result.source_rows, "rows_used": result.rows, "splits": result.split_rows},
        context="training",
    )
    kinds: dict[str, int] = {}
    for column in result.column_types.values():
        kinds[column["kind"]] = kinds.get(column["kind"], 0) + 1
    tracker.log_metrics(
        {
            "rows": result.rows,
            "source_rows": result.source_rows,
            "dropped_rows_missing_target": result.dropped_rows_missing_target,
            **flatten("split_rows", result.split_rows),
            **flatten("columns", kinds),
        }
    )
    tracker.set_tags(
        {"kfp_tabular.data_sha256": result.source_sha256, "kfp_tabular.column_schema_sha256": schema_sha256}
    )
    tracker.log_dict(
        {
            "column_types": result.column_types,
            "dropped_columns": result.dropped_columns,
            "renamed": result.renamed_columns,
        },
        "ingest/columns.json",
    )
