"""Batch prediction: score a table of any size with a servable model, validated, streaming, atomic.

What an input table goes through, in order (each problem stops the job with a message naming the
column, row or value, and nothing is written where a reader would take it for output):

1. the input files: a CSV or Parquet file, or a directory / prefix of Parquet files, from a path or a
   ``file://``, ``http(s)://``, ``s3://``, ``gs://`` URI (``list_inputs``);
2. column names sanitized exactly as ingestion sanitized the training table (``Body Mass (g)`` ->
   ``body_mass_g``); every feature the model takes must be there, passthrough columns too;
3. values typed as training typed them, column by column, in record batches (``Converter``): numbers
   (numeric text too), booleans (true/false, yes/no, 1/0 ...), dates in the training format, categories
   as text. A column that is mostly not of its kind is a wrong type and stops the job; a single value
   that cannot be converted, or a non-finite number, is a bad row: it stops the job
   (``on_bad_rows: error``) or goes to a quarantine Parquet file with its reason
   (``on_bad_rows: quarantine``), counted; it is never scored;
4. the first batch checked with TFDV against the model's training schema (``schema.pbtxt``) in the
   SERVING environment (the target is not expected): a missing column or a wrong type stops the job;
   other anomalies (new categories, values out of a curated domain) are reported as warnings;
5. scored with the model server's own fast kernels (``FastPredictor``: bit-for-bit the server's answers),
   written batch by batch to Parquet under a temporary name, then moved into place
   (``atomic_output``): the output appears complete or not at all.

Memory stays bounded whatever the table's size: one record batch (``batch_rows``) is read, converted,
scored and written at a time.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.common.columns import sanitize_column_name, sanitize_column_names
from components.common.errors import ConfigError, DataValidationError, InputDataError
from components.common.features import (
    FeatureValueError,
    calendar_values,
    parse_boolean,
    parse_datetime,
)
from components.common.io import REMOTE_SCHEMES, resolve_uri
from components.common.logs import get_logger

log = get_logger("batch_predict")

ON_BAD_ROWS = ("error", "quarantine")
DEFAULT_BATCH_ROWS = 65_536
PARSE_SHARE = 0.9  # a column is of its kind when at least this share of its present values convert
PROGRESS_SECONDS = 10.0
VALIDATION_ROWS = 10_000  # rows of the first batch TFDV checks against the schema
PARQUET_SUFFIXES = (".parquet", ".pq")
OUTPUT_COLUMNS = ("prediction", "model_name", "model_version")
PROBA_PREFIX = "proba_"
# Schema problems that mean the table is not what the model takes (everything else is a warning).
FATAL_ANOMALIES = ("SCHEMA_MISSING_COLUMN", "UNEXPECTED_DATA_TYPE", "SCHEMA_TRAINING_SERVING_SKEW")
# What reads as missing in a CSV: pandas' defaults (as ingestion reads CSV) and "None"
CSV_NULLS = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]


@dataclass
class BatchResult:
    rows_in: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    output_uri: str = ""
    quarantine_uri: str = ""  # "" when no row was rejected
    model_name: str = ""
    model_version: str = ""
    files: int = 0
    seconds_scoring: float = 0.0  # converting values and the model's arithmetic (reading and writing aside)
    reasons: dict[str, int] = field(default_factory=dict)  # rejected rows per reason (column: problem)
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows_in / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rows_per_second": self.rows_per_second}

    def metrics(self) -> dict[str, float]:
        return {
            "rows_in": self.rows_in,
            "rows_scored": self.rows_scored,
            "rows_rejected": self.rows_rejected,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }


# ------------------------------------------------------------------------------------------ file systems


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec file system, path in it) for a local path, ``file://`` or an http(s)/s3/gs URI."""
    import fsspec

    path = resolve_uri(uri)
    if not path.startswith(REMOTE_SCHEMES):
        return fsspec.filesystem("file"), str(Path(path).absolute())
    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as exc:
        raise InputDataError(f"{uri!r} needs the fsspec back end for its scheme: {exc}") from exc


def _is_local(fs) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def _uri(fs, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


# ------------------------------------------------------------------------------------------ the input


def list_inputs(input_uri: str, file_format: str = "auto") -> tuple[list[str], str]:
    """The input's files (URIs, in name order) and their format (``csv`` or ``parquet``).

    A file is itself; a directory (or an object-store prefix ending in ``/``) gives its Parquet files
    (hidden ones, ``.x`` and ``_x``, skipped, as Spark and pyarrow skip them); a prefix that is no
    directory gives the Parquet files whose names start with it.
    """
    if file_format not in ("auto", "csv", "parquet"):
        raise ConfigError(f"file_format must be 'auto', 'csv' or 'parquet', not {file_format!r}")
    fs, path = filesystem(input_uri)
    try:
        is_dir = fs.isdir(path)
        is_file = not is_dir and fs.isfile(path)
    except Exception as exc:
        raise InputDataError(f"cannot read input {input_uri!r}: {type(exc).__name__}: {exc}") from exc
    if is_file:
        return [_uri(fs, path)], _file_format(fs, path, input_uri, file_format)
    if is_dir:
        found = [p for p in fs.find(path) if not any(_hidden(part) for part in p[len(path) :].split("/"))]
        where = "directory"
    else:
        found = [p for p in fs.glob(path + "*") if fs.isfile(p)]
        where = "prefix"
    parquet = sorted(p for p in found if p.lower().endswith(PARQUET_SUFFIXES))
    if not found:
        raise InputDataError(f"input not found: {input_uri!r} (no such file, directory or prefix)")
    if not parquet:
        raise InputDataError(
            f"input {input_uri!r} is a {where} with no Parquet files (.parquet, .pq); pass a CSV or Parquet "
            "file, or a directory or prefix of Parquet files"
        )
    if file_format == "csv":
        raise InputDataError(f"input {input_uri!r} is a {where} of Parquet files, but file_format is csv")
    return [_uri(fs, p) for p in parquet], "parquet"


def _file_format(fs, path: str, uri: str, file_format: str) -> str:
    if file_format != "auto":
        return file_format
    name = path.lower().split("?", 1)[0]
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".txt", ".tsv")):
        return "csv"
    with fs.open(path, "rb") as handle:
        head = handle.read(4)
    fmt = "parquet" if head == b"PAR1" else "csv"
    log.info("no csv/parquet extension on %s: read as %s (from its first bytes)", uri, fmt.upper())
    return fmt


class CountingReader(io.RawIOBase):
    """A binary stream that counts the bytes read through it (progress and ETA of a CSV)."""

    def __init__(self, handle):
        self.handle, self.count = handle, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.handle.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)


@dataclass
class Input:
    """Record batches of the input, their column names and how far through the input they are."""

    uri: str
    files: list[str]
    fmt: str
    batch_rows: int
    delimiter: str = "auto"
    missing_values: list[str] = field(default_factory=list)
    total_rows: int | None = None  # known upfront for Parquet
    total_bytes: int = 0
    _counters: list = field(default_factory=list)

    def bytes_read(self) -> int:
        return sum(c.count for c in self._counters)

    def batches(self) -> Iterator[Any]:
        if self.fmt == "parquet":
            yield from self._parquet()
        else:
            for file in self.files:
                yield from self._csv(file)

    def _parquet(self) -> Iterator[Any]:
        """Each file in turn, as one dataset each: every file must have the first file's columns (a dataset
        of files with different columns would fill the missing ones with nulls, silently)."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        datasets = []
        for file in self.files:
            fs, path = filesystem(file)
            try:
                dataset = ds.dataset(path, format="parquet", filesystem=fs)
                rows = dataset.count_rows()
            except FileNotFoundError as exc:
                raise InputDataError(f"input not found: {file!r}") from exc
            except Exception as exc:
                raise InputDataError(f"input {file!r} cannot be read as Parquet: {exc}") from exc
            names = dataset.schema.names
            _check_duplicates(names, file)
            if datasets and names != datasets[0][1].schema.names:
                first = datasets[0][0]
                raise InputDataError(
                    f"the Parquet files of {self.uri!r} do not have the same columns: {file!r} has "
                    f"{sorted(set(names))}, {first!r} has {sorted(set(datasets[0][1].schema.names))}"
                )
            datasets.append((file, dataset, rows))
        self.total_rows = sum(rows for _, _, rows in datasets)
        for file, dataset, _ in datasets:
            try:
                for batch in dataset.to_batches(batch_size=self.batch_rows, use_threads=False):
                    if batch.num_rows:
                        yield batch
            except (OSError, pa.ArrowException) as exc:
                raise InputDataError(f"input {file!r} cannot be read as Parquet: {exc}") from exc

    def _csv(self, file: str) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        from components.ingest.core import SNIFF_BYTES, _detect_delimiter

        fs, path = filesystem(file)
        compression = "gzip" if path.endswith(".gz") else None
        try:
            handle = fs.open(path, "rb", compression=compression)
        except FileNotFoundError as exc:
            raise InputDataError(f"input not found: {file!r}") from exc
        with handle:
            head = handle.read(SNIFF_BYTES)
            handle.seek(0)
            if not head.strip():
                raise InputDataError(f"input {file!r} is empty (0 bytes)")
            try:
                head.split(b"\n", 1)[0].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputDataError(
                    f"input {file!r} cannot be read as CSV: its first line is not UTF-8 text ({exc.reason} at byte "
                    f"{exc.start}); is it a binary file?"
                ) from exc
            text = head.decode("utf-8", errors="replace")
            sep = _detect_delimiter(text) if self.delimiter == "auto" else self.delimiter
            import csv

            header = next(csv.reader(io.StringIO(text), delimiter=sep), [])
            _check_duplicates(header, file)
            counter = CountingReader(handle)
            self._counters.append(counter)
            try:
                reader = pacsv.open_csv(
                    io.BufferedReader(counter, buffer_size=1 << 20),
                    read_options=pacsv.ReadOptions(block_size=_csv_block_bytes(self.batch_rows, len(header))),
                    parse_options=pacsv.ParseOptions(delimiter=sep),
                    convert_options=pacsv.ConvertOptions(
                        column_types={name: pa.string() for name in header},
                        null_values=CSV_NULLS + list(self.missing_values),
                        strings_can_be_null=True,
                    ),
                )
                for batch in reader:
                    # CSV blocks are sized in bytes: cut them to at most batch_rows rows
                    for start in range(0, batch.num_rows, self.batch_rows):
                        yield batch.slice(start, self.batch_rows)
            except (InputDataError, DataValidationError, ConfigError):
                raise
            except Exception as exc:
                raise InputDataError(f"input {file!r} cannot be read as CSV: {exc}") from exc


def _csv_block_bytes(batch_rows: int, columns: int) -> int:
    """A CSV block of about ``batch_rows`` rows (12 bytes a value), between 64 KiB and 64 MiB."""
    return int(min(max(batch_rows * max(columns, 1) * 12, 1 << 16), 1 << 26))


def _check_duplicates(names: list, where: str) -> None:
    """Two columns that sanitize to one name (the check training's ingestion makes), naming the input."""
    try:
        sanitize_column_names(names)
    except InputDataError as exc:
        raise InputDataError(f"input {where!r}: {exc}") from None


def open_input(
    input_uri: str,
    *,
    files: list[str] | None = None,
    file_format: str = "auto",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    delimiter: str = "auto",
    missing_values: list[str] | None = None,
) -> Input:
    if files is None:
        files, fmt = list_inputs(input_uri, file_format)
    else:
        fmt = file_format if file_format != "auto" else _guess_format(files)
    total = 0
    for file in files:
        fs, path = filesystem(file)
        with contextlib.suppress(Exception):
            total += int(fs.size(path) or 0)
    return Input(input_uri, files, fmt, batch_rows, delimiter, list(missing_values or []), total_bytes=total)


def _guess_format(files: list[str]) -> str:
    if all(f.lower().endswith(PARQUET_SUFFIXES) for f in files):
        return "parquet"
    if len(files) == 1:
        fs, path = filesystem(files[0])
        return _file_format(fs, path, files[0], "auto")
    raise InputDataError(f"input files {files[:3]}...: several files must all be Parquet")


# ------------------------------------------------------------------------------------------ the model


@dataclass
class LoadedModel:
    servable: Any
    predictor: Any
    name: str
    version: str
    schema: Any = None  # TFDV schema (schema.pbtxt), None when the model carries none


def load_model(model_dir: str | Path, name: str = "", version: str = "") -> LoadedModel:
    """The model directory, checked (hashes, package versions) and ready for the fast kernels."""
    from components.common.servable import ServableModel
    from components.serving.fast import FastPredictor

    servable = ServableModel.load(model_dir)
    predictor = FastPredictor(servable)
    name = name or servable.metadata.get("model_name") or Path(model_dir).name
    version = version or f"sha256:{servable.sha256[:12]}"
    log.info(
        "model %s version %s: %s %s, %d features; scoring with %s",
        name,
        version,
        servable.task,
        servable.metadata.get("estimator"),
        len(servable.feature_names),
        predictor.kernel_name,
    )
    return LoadedModel(servable, predictor, name, version)


# ------------------------------------------------------------------------------------------ typing


class Converter:
    """One record batch of raw columns -> the model's inputs, typed exactly as training typed them, and
    each row's problem (``None``: fine)."""

    def __init__(self, model: LoadedModel, columns: list[str], passthrough: list[str], where: str):
        meta = model.servable.metadata
        self.model = model
        self.predictor = model.predictor
        self.features = meta["features"]
        clean = {}
        for name in columns:
            clean.setdefault(sanitize_column_name(name), name)
        self.source = clean  # sanitized name -> the input's own name
        missing = [f["name"] for f in self.features if f["name"] not in clean]
        if missing:
            raise DataValidationError(
                f"input {where!r} lacks feature column{'s' if len(missing) > 1 else ''} {missing} "
                f"(names sanitized as in training); the model takes {[f['name'] for f in self.features]}; "
                f"the input has {sorted(clean)}"
            )
        self.passthrough = []
        for name in passthrough:
            key = sanitize_column_name(name)
            if key not in clean:
                raise ConfigError(
                    f"passthrough column {name!r} is not in input {where!r}; its columns are {sorted(clean)}"
                )
            if key in OUTPUT_COLUMNS or key.startswith(PROBA_PREFIX):
                raise ConfigError(f"passthrough column {name!r} would clash with the output column {key!r}")
            self.passthrough.append((key, clean[key]))
        self.tally = Tally()
        self.numeric_index = {name: i for i, name in enumerate(self.predictor.numeric_names)}
        self.categorical_index = {name: j for j, name in enumerate(self.predictor.categorical_names)}

    def convert(self, batch, first_row: int) -> tuple[np.ndarray, list[Any], np.ndarray, list[str | None]]:
        self.tally.first_row = first_row
        """(numeric [N, k] float64, categorical texts per feature, bad-row mask, reason per row)."""
        n = batch.num_rows
        numeric = np.full((n, len(self.numeric_index)), np.nan, dtype=np.float64)
        texts: list[Any] = [None] * len(self.categorical_index)
        reasons: list[str | None] = [None] * n
        for feature in self.features:
            name, kind = feature["name"], feature["kind"]
            column = _combined(batch.column(batch.schema.get_field_index(self.source[name])))
            if kind == "numeric":
                values, bad = _numbers(column, name, self.tally)
                numeric[:, self.numeric_index[name]] = values
            elif kind == "boolean":
                values, bad = _booleans(column, name, self.tally)
                numeric[:, self.numeric_index[name]] = values
            elif kind == "datetime":
                parts, bad = _datetimes(column, feature, self.tally)
                for part, values in parts.items():
                    numeric[:, self.numeric_index[part]] = values
            else:
                texts[self.categorical_index[name]], bad = _categories(column, name, self.tally)
            for i, why in bad:
                if reasons[i] is None:
                    reasons[i] = why
        mask = np.array([r is not None for r in reasons], dtype=bool)
        return numeric, texts, mask, reasons


def _combined(column):
    import pyarrow as pa

    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


MIN_VALUES_FOR_TYPE = 20  # present values of a column seen before its type can be judged wrong


class Tally:
    """Per column, the present values seen so far and how many converted: a column whose values are
    mostly not of its kind is a wrong type (stop), a few bad values are bad rows."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}
        self.first_row = 0

    def check(self, name: str, kind: str, column, good: int, present: int, examples) -> None:
        seen = self.counts.setdefault(name, [0, 0])
        seen[0] += present
        seen[1] += good
        if seen[0] >= MIN_VALUES_FOR_TYPE and seen[1] < PARSE_SHARE * seen[0]:
            raise DataValidationError(
                f"feature column {name!r} has the wrong type: the model was trained on {kind} values, but "
                f"{seen[0] - seen[1]} of the first {seen[0]} values (up to row {self.first_row + len(column) - 1}) "
                f"are not (e.g. {list(examples)[:3]}; input type {column.type})"
            )


def _wrong_type(tally, name: str, kind: str, column, good: int, present: int, examples) -> None:
    if tally is not None:
        tally.check(name, kind, column, good, present, examples)


def _numbers(column, name: str, tally: Tally | None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_null(kind)
    ):
        return _finite(column.cast(pa.float64()).to_numpy(zero_copy_only=False), name, [])
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataValidationError(
            f"feature column {name!r} has the wrong type: the model was trained on numbers, the input has {kind}"
        )
    trimmed = pc.utf8_trim_whitespace(column)
    try:  # Arrow's parser rounds correctly, like Python's float() (and JSON parsers)
        values = trimmed.cast(pa.float64()).to_numpy(zero_copy_only=False)
        present = len(column) - column.null_count
        _wrong_type(tally, name, "numeric", column, present, present, [])
        return _finite(values, name, [])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = np.full(len(column), np.nan)
    bad, present = [], 0
    for i, text in enumerate(trimmed.to_pylist()):
        if text is None or text == "":
            continue
        present += 1
        try:
            values[i] = float(text)
        except ValueError:
            bad.append((i, f"{name}: {text!r} is not a number"))
    _wrong_type(tally, name, "numeric", column, present - len(bad), present, [b[1] for b in bad])
    return _finite(values, name, bad)


def _finite(values: np.ndarray, name: str, bad: list) -> tuple[np.ndarray, list]:
    infinite = np.flatnonzero(np.isinf(values))
    bad += [(int(i), f"{name}: {values[i]!r} is not finite") for i in infinite]
    return values, bad


def _booleans(column, name: str, tally: Tally | None) -> tuple[np.ndarray, list[tuple[int, str]]]:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_boolean(kind):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False), []
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(~np.isnan(values) & (values != 0) & (values != 1))
        present = int((~np.isnan(values)).sum())
        _wrong_type(tally, name, "boolean", column, present - len(wrong), present, values[wrong].tolist())
        values[wrong] = np.nan
        return values, [
            (int(i), f"{name}: {column[int(i)].as_py()!r} is not a boolean (0 or 1)") for i in wrong
        ]
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataValidationError(
            f"feature column {name!r} has the wrong type: the model was trained on booleans, the input has {kind}"
        )
    # each distinct text read once, by the same function the server and training use
    encoded = column.dictionary_encode()
    table = np.full(len(encoded.dictionary) + 1, np.nan)  # the last entry: missing
    failed: dict[int, str] = {}
    for k, value in enumerate(encoded.dictionary.to_pylist()):
        try:
            table[k] = parse_boolean(value)
        except FeatureValueError:
            failed[k] = value
    indices = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy(zero_copy_only=False)
    values = table[indices]
    wrong = np.flatnonzero(np.isin(indices, list(failed))) if failed else np.array([], dtype=np.int64)
    present = int((~np.isnan(values)).sum()) + len(wrong)  # blank texts are missing values
    _wrong_type(tally, name, "boolean", column, present - len(wrong), present, list(failed.values()))
    return values, [
        (int(i), f"{name}: {failed[int(indices[i])]!r} is not a boolean (true/false, yes/no, 1/0)")
        for i in wrong
    ]


def _datetimes(
    column, feature: dict, tally: Tally | None
) -> tuple[dict[str, np.ndarray], list[tuple[int, str]]]:
    import pyarrow as pa

    from components.common.features import part_name

    name, fmt, parts = feature["name"], feature["format"], feature["parts"]
    kind = column.type
    if pa.types.is_date(kind):
        column = column.cast(pa.timestamp("s"))
        kind = column.type
    if not (
        pa.types.is_timestamp(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
    ):
        raise DataValidationError(
            f"feature column {name!r} has the wrong type: the model was trained on dates/times, the input has {kind}"
        )
    encoded = column.dictionary_encode() if not pa.types.is_null(kind) else None
    n = len(column)
    out = {part_name(name, p): np.full(n, np.nan) for p in parts}
    if encoded is None:
        return out, []
    table = np.full((len(encoded.dictionary), len(parts)), np.nan)
    failed: dict[int, str] = {}
    for k, value in enumerate(encoded.dictionary.to_pylist()):
        try:
            moment = parse_datetime(value, fmt)
        except FeatureValueError as exc:
            failed[k] = str(exc)
            continue
        table[k] = calendar_values(moment, parts)
    indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    valid = indices >= 0
    for j, p in enumerate(parts):
        out[part_name(name, p)][valid] = table[indices[valid], j]
    rows = np.flatnonzero(np.isin(indices, list(failed))) if failed else np.array([], dtype=np.int64)
    present = (
        int(valid.sum()) - int(np.isnan(table[indices[valid], 0]).sum()) + len(rows)
    )  # blanks are missing
    examples = [failed[k] for k in list(failed)[:3]]
    _wrong_type(tally, name, "datetime", column, present - len(rows), present, examples)
    return out, [(int(i), f"{name}: {failed[int(indices[i])]}") for i in rows]


def _categories(column, name: str, tally: Tally | None = None) -> tuple[Any, list[tuple[int, str]]]:
    """Category texts as training saw them: text as it is, integer codes without '.0' (3.0 -> '3')."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_string(kind):
        return column, []
    if pa.types.is_large_string(kind) or pa.types.is_null(kind) or pa.types.is_dictionary(kind):
        return column.cast(pa.string()), []
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        text = column.cast(pa.string())
        return (pc.if_else(column, "True", "False") if pa.types.is_boolean(kind) else text), []
    if pa.types.is_floating(kind):
        values = column.to_numpy(zero_copy_only=False)
        infinite = np.flatnonzero(np.isinf(values))
        from components.ingest.typing import _code

        texts = [None if v != v else _code(float(v)) for v in values.tolist()]
        bad = [(int(i), f"{name}: {values[i]!r} is not finite") for i in infinite]
        return pa.array(texts, type=pa.string()), bad
    raise DataValidationError(
        f"feature column {name!r} has the wrong type: the model was trained on categories (text), the input "
        f"has {kind}"
    )


# ------------------------------------------------------------------------------------------ validation


def validate_schema(model_dir: str | Path, model: LoadedModel, batch, converter: Converter) -> list[str]:
    """TFDV: the first rows against the model's training schema in the SERVING environment.

    Returns the warnings (anomalies that do not stop the job); raises ``DataValidationError`` naming the
    column for a missing column or a wrong type."""
    from components.validate.core import SCHEMA_FILE, _tfdv, collect_anomalies, load_schema

    path = Path(model_dir) / SCHEMA_FILE
    if not path.is_file():
        message = f"the model carries no {SCHEMA_FILE}: the input was not checked against its training schema"
        log.warning(message)
        return [message]
    schema = load_schema(str(path))
    tfdv = _tfdv()
    target = model.servable.metadata["target"]
    sample = batch.slice(0, VALIDATION_ROWS)
    frame = _tfdv_view(sample, schema, converter, target)
    stats = tfdv.generate_statistics_from_dataframe(frame)
    environment = "SERVING" if "SERVING" in schema.default_environment else None
    anomalies = collect_anomalies("input", tfdv.validate_statistics(stats, schema, environment=environment))
    anomalies = [a for a in anomalies if a["feature"] != target]
    fatal = [a for a in anomalies if a["kind"] in FATAL_ANOMALIES]
    if fatal:
        raise DataValidationError(
            "the input does not match the model's training schema (TFDV, SERVING environment): "
            + "; ".join(f"column {a['feature']!r}: {a['kind']}: {a['description']}" for a in fatal),
            fatal,
        )
    warnings = [f"column {a['feature']!r}: {a['kind']}: {a['description']}" for a in anomalies]
    for warning in warnings:
        log.warning("schema check (not stopping): %s", warning)
    log.info(
        "schema check: %d rows against %s in the %s environment: %d warnings",
        sample.num_rows,
        path,
        environment,
        len(warnings),
    )
    return warnings


def _tfdv_view(batch, schema, converter: Converter, target: str):
    """The model's feature columns as the training split carried them, for TFDV: types from the schema."""
    import pandas as pd
    from tensorflow_metadata.proto.v0 import schema_pb2

    types = {f.name: f.type for f in schema.feature}
    frame = {}
    for feature in converter.features:
        name = feature["name"]
        raw = batch.column(batch.schema.get_field_index(converter.source[name]))
        kind = types.get(name)
        if kind == schema_pb2.BYTES:
            if feature["kind"] == "categorical":
                values = _categories(_combined(raw), name, None)[0].to_pylist()
            else:
                values = [None if v is None else str(v) for v in raw.to_pylist()]
            frame[name] = pd.Series(values, dtype=object)
            continue
        if feature["kind"] == "boolean":
            numbers = _booleans(_combined(raw), name, None)[0]
        elif feature["kind"] == "numeric":
            numbers = _numbers(_combined(raw), name, None)[0]
        else:
            frame[name] = pd.Series([None if v is None else str(v) for v in raw.to_pylist()], dtype=object)
            continue
        numbers = np.where(np.isinf(numbers), np.nan, numbers)
        present = ~np.isnan(numbers)
        if kind == schema_pb2.INT and np.all(np.mod(numbers[present], 1) == 0):
            if present.all():
                frame[name] = pd.Series(numbers.astype(np.int64))
            else:
                frame[name] = pd.Series(numbers)  # missing values: float, as pandas would have read it
        else:
            frame[name] = pd.Series(numbers)
    return pd.DataFrame(frame)


# ------------------------------------------------------------------------------------------ output


@contextlib.contextmanager
def atomic_output(uri: str) -> Iterator[tuple[Any, str]]:
    """Yield (file system, temporary path) beside ``uri``; the path becomes ``uri`` only if the block
    succeeds. On any error (or a kill) the temporary is removed or left under a hidden name (``.x``,
    which readers of a directory skip): nothing appears at ``uri`` that a reader could take for complete.
    A local move is one rename (atomic); on an object store the finished object is copied into place."""
    fs, path = filesystem(uri)
    parent, _, name = path.rstrip("/").rpartition("/")
    tmp = f"{parent}/.{name}.inprogress-{uuid.uuid4().hex[:12]}"
    fs.makedirs(parent, exist_ok=True)
    try:
        yield fs, tmp
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.mv(tmp, path, recursive=True)
    except BaseException:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp, recursive=True)
        raise


def output_schema(model: LoadedModel, passthrough_types: list[tuple[str, Any]]):
    import pyarrow as pa

    fields = [pa.field(name, kind) for name, kind in passthrough_types]
    servable = model.servable
    if servable.task == "classification":
        fields.append(pa.field("prediction", _label_array(servable.classes).type))
        fields += [pa.field(f"{PROBA_PREFIX}{c}", pa.float64()) for c in servable.classes]
    else:
        fields.append(pa.field("prediction", pa.float64()))
    fields += [pa.field("model_name", pa.string()), pa.field("model_version", pa.string())]
    meta = {
        "model_name": model.name,
        "model_version": model.version,
        "model_sha256": servable.sha256,
        "task": servable.task,
    }
    return pa.schema(fields, metadata={b"kfp_tabular": json.dumps(meta).encode()})


def _label_array(classes: list):
    import pyarrow as pa

    try:
        return pa.array(classes)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([str(c) for c in classes])


# ------------------------------------------------------------------------------------------ the job


class Progress:
    def __init__(self, source: Input, every: float = PROGRESS_SECONDS):
        self.source, self.every = source, every
        self.started = self.last = time.perf_counter()

    def update(self, rows: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.started
        rate = rows / elapsed if elapsed > 0 else 0.0
        if self.source.total_rows:
            done = rows / self.source.total_rows
        elif self.source.total_bytes:
            done = min(self.source.bytes_read() / self.source.total_bytes, 1.0)
        else:
            done = 0.0
        eta = f", ETA {elapsed * (1 - done) / done:.0f}s" if 0 < done < 1 else ""
        log.info("progress: %d rows (%.0f%%) in %.0fs, %.0f rows/s%s", rows, 100 * done, elapsed, rate, eta)


def predict(
    *,
    model_dir: str | Path,
    input_uri: str,
    output_uri: str,
    quarantine_uri: str = "",
    files: list[str] | None = None,
    passthrough: list[str] | None = None,
    on_bad_rows: str = "error",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    file_format: str = "auto",
    delimiter: str = "auto",
    missing_values: list[str] | None = None,
    model_name: str = "",
    model_version: str = "",
    validate: bool = True,
    model: LoadedModel | None = None,
) -> BatchResult:
    """Score ``input_uri`` (or its ``files``) into the Parquet file ``output_uri``, atomically.

    Rejected rows (``on_bad_rows: quarantine``) go to ``quarantine_uri`` (default: beside the output,
    ``<name>.quarantine.parquet``), written only when there are some. Raises ``InputDataError`` /
    ``DataValidationError`` / ``ConfigError`` naming the problem; then nothing is written.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if on_bad_rows not in ON_BAD_ROWS:
        raise ConfigError(f"on_bad_rows must be one of {list(ON_BAD_ROWS)}, not {on_bad_rows!r}")
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"batch_rows must be a positive integer, not {batch_rows!r}")
    if not output_uri.strip():
        raise ConfigError("output_uri is empty: name the Parquet file to write")
    started = time.perf_counter()
    model = model or load_model(model_dir, model_name, model_version)
    source = open_input(
        input_uri,
        files=files,
        file_format=file_format,
        batch_rows=batch_rows,
        delimiter=delimiter,
        missing_values=missing_values,
    )
    log.info(
        "reading %d %s file(s) from %s in batches of %d rows",
        len(source.files),
        source.fmt.upper(),
        input_uri,
        batch_rows,
    )
    quarantine_uri = quarantine_uri or _beside(output_uri, ".quarantine.parquet")
    result = BatchResult(
        output_uri=output_uri, model_name=model.name, model_version=model.version, files=len(source.files)
    )
    progress = Progress(source)
    servable = model.servable
    labels = _label_array(servable.classes) if servable.task == "classification" else None

    with contextlib.ExitStack() as stack:
        fs, tmp = stack.enter_context(atomic_output(output_uri))
        writer = quarantine = None
        converter = None
        quarantine_tmp = None
        for batch in source.batches():
            if converter is None:
                converter = Converter(model, batch.schema.names, list(passthrough or []), input_uri)
                if validate:
                    result.warnings = validate_schema(model_dir, model, batch, converter)
                    progress.started = progress.last = time.perf_counter()  # rates of the scoring alone
                kept_types = [(key, batch.schema.field(raw).type) for key, raw in converter.passthrough]
                schema = output_schema(model, kept_types)
                writer = pq.ParquetWriter(stack.enter_context(fs.open(tmp, "wb")), schema)
                stack.callback(writer.close)
            first_row = result.rows_in
            clock = time.perf_counter()
            numeric, texts, bad, reasons = converter.convert(batch, first_row)
            result.seconds_scoring += time.perf_counter() - clock
            result.rows_in += batch.num_rows
            if bad.any():
                if on_bad_rows == "error":
                    i = int(np.flatnonzero(bad)[0])
                    raise DataValidationError(
                        f"row {first_row + i} of the input: {reasons[i]}; {int(bad.sum())} bad rows in rows "
                        f"{first_row}-{first_row + batch.num_rows - 1} (on_bad_rows: quarantine writes them to a "
                        "separate file instead and scores the rest)"
                    )
                if quarantine is None:
                    q_fs, quarantine_tmp = stack.enter_context(atomic_output(quarantine_uri))
                    q_schema = _quarantine_schema(converter)
                    quarantine = pq.ParquetWriter(
                        stack.enter_context(q_fs.open(quarantine_tmp, "wb")), q_schema
                    )
                    stack.callback(quarantine.close)
                quarantine.write_table(_quarantine_rows(batch, converter, bad, reasons, first_row))
                for r in np.flatnonzero(bad):
                    key = reasons[r].split(":", 1)[0]
                    result.reasons[key] = result.reasons.get(key, 0) + 1
                good = ~bad
                keep = np.flatnonzero(good)
                batch = batch.take(pa.array(keep))
                numeric = numeric[good]
                texts = [t.take(pa.array(keep)) for t in texts]
                result.rows_rejected += int(bad.sum())
            if batch.num_rows:
                clock = time.perf_counter()
                positions = [model.predictor.category_positions(j, t) for j, t in enumerate(texts)]
                output = model.predictor.predict_columns(numeric, positions)
                result.seconds_scoring += time.perf_counter() - clock
                writer.write_batch(_output_batch(batch, converter, model, output, labels, schema))
                result.rows_scored += batch.num_rows
            progress.update(result.rows_in)
        if converter is None:
            raise InputDataError(f"input {input_uri!r} has no rows")
        # close the writers before the files are moved into place (ExitStack closes in reverse order)
        if quarantine is not None:
            quarantine.close()
        writer.close()
    result.quarantine_uri = quarantine_uri if result.rows_rejected else ""
    result.seconds = time.perf_counter() - started
    progress.update(result.rows_in, force=True)
    log.info(
        "scored %d of %d rows in %.1fs (%.0f rows/s) -> %s%s",
        result.rows_scored,
        result.rows_in,
        result.seconds,
        result.rows_per_second,
        output_uri,
        f"; {result.rows_rejected} rows rejected -> {quarantine_uri}" if result.rows_rejected else "",
    )
    return result


def _beside(uri: str, suffix: str) -> str:
    base = uri.rstrip("/")
    for ending in PARQUET_SUFFIXES:
        if base.lower().endswith(ending):
            base = base[: -len(ending)]
            break
    return base + suffix


def _output_batch(batch, converter: Converter, model: LoadedModel, output: np.ndarray, labels, schema):
    import pyarrow as pa

    columns = [batch.column(batch.schema.get_field_index(raw)) for _, raw in converter.passthrough]
    output = np.asarray(output)
    n = batch.num_rows
    if labels is not None:
        columns.append(labels.take(pa.array(np.argmax(output, axis=1))))
        columns += [pa.array(output[:, k].astype(np.float64)) for k in range(output.shape[1])]
    else:
        columns.append(pa.array(output.reshape(n).astype(np.float64)))
    columns += [
        pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), [model.name]).cast(pa.string()),
        pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), [model.version]).cast(pa.string()),
    ]
    return pa.RecordBatch.from_arrays(
        [c.cast(f.type) if c.type != f.type else c for c, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


def _quarantine_schema(converter: Converter):
    import pyarrow as pa

    names = [key for key, _ in converter.passthrough] + [
        f["name"] for f in converter.features if f["name"] not in {k for k, _ in converter.passthrough}
    ]
    return pa.schema(
        [pa.field("row", pa.int64()), pa.field("reason", pa.string())]
        + [pa.field(name, pa.string()) for name in names]
    )


def _quarantine_rows(batch, converter: Converter, bad: np.ndarray, reasons: list, first_row: int):
    """The rejected rows: their row number in the input, the reason, and their values as text."""
    import pyarrow as pa

    schema = _quarantine_schema(converter)
    rows = np.flatnonzero(bad)
    picked = batch.take(pa.array(rows))
    columns = [
        pa.array(rows + first_row, type=pa.int64()),
        pa.array([reasons[i] for i in rows], type=pa.string()),
    ]
    for name in schema.names[2:]:
        raw = picked.column(picked.schema.get_field_index(converter.source[name]))
        try:
            columns.append(raw.cast(pa.string()))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            columns.append(
                pa.array([None if v is None else str(v) for v in raw.to_pylist()], type=pa.string())
            )
    return pa.Table.from_arrays(columns, schema=schema)


# ------------------------------------------------------------------------------------------ fan-out


SUCCESS_FILE = "_SUCCESS"  # written last: the output is complete (Spark's and Hadoop's convention)
QUARANTINE_DIR = "_quarantine"  # rejected rows, inside the output; readers of the table skip "_" names


def plan_shards(files: list[str], max_shards: int) -> list[dict]:
    """Consecutive groups of the input files, at most ``max_shards`` of them, sizes differing by at most
    one file: ``[{"index": 0, "files": [...]}, ...]`` in the input's order."""
    if not isinstance(max_shards, int) or max_shards < 1:
        raise ConfigError(f"max_shards must be a positive integer, not {max_shards!r}")
    count = min(max_shards, len(files))
    size, extra = divmod(len(files), count)
    shards, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        shards.append({"index": index, "files": files[start:end]})
        start = end
    return shards


def staging_uri(output_uri: str, job: str) -> str:
    """Where a job's shards write before the commit: a hidden folder beside the output, one per job."""
    fs, path = filesystem(output_uri)
    parent, _, name = path.rstrip("/").rpartition("/")
    return _uri(fs, f"{parent}/.{name}.staging-{job}")


def check_output(output_uri: str, overwrite: bool) -> None:
    if not output_uri.strip():
        raise ConfigError(
            "output_uri is empty: name the folder (or .parquet file) to write the predictions to"
        )
    fs, path = filesystem(output_uri)
    if fs.exists(path) and not overwrite:
        raise ConfigError(
            f"output {output_uri!r} exists; set overwrite to replace it, or choose another output_uri"
        )


def part_uris(staging: str, index: int) -> tuple[str, str]:
    """(predictions, quarantine) files of shard ``index`` in the staging folder."""
    fs, path = filesystem(staging)
    name = f"part-{index:05d}.parquet"
    return _uri(fs, f"{path}/{name}"), _uri(fs, f"{path}/{QUARANTINE_DIR}/{name}")


def commit(staging: str, output_uri: str, results: list[dict], overwrite: bool) -> dict:
    """Move the shards' files from ``staging`` to ``output_uri`` and return the job's totals.

    A folder output gets ``part-*.parquet``, ``_quarantine/part-*.parquet`` (rejected rows, if any) and
    ``_SUCCESS`` (the totals, JSON), written last. Locally the whole folder appears in one rename; on an
    object store the files are copied into place and ``_SUCCESS`` marks the output complete. A
    ``.parquet`` output is one file: the parts are concatenated into it (streaming, row group by row
    group), and the rejected rows go to ``<name>.quarantine.parquet`` beside it.
    """
    check_output(output_uri, overwrite)
    results = sorted(results, key=lambda r: r["index"])
    totals = {
        "rows_in": sum(r["rows_in"] for r in results),
        "rows_scored": sum(r["rows_scored"] for r in results),
        "rows_rejected": sum(r["rows_rejected"] for r in results),
        "seconds": max((r["seconds"] for r in results), default=0.0),
        "shards": len(results),
        "files": sum(r["files"] for r in results),
        "model_name": results[0]["model_name"] if results else "",
        "model_version": results[0]["model_version"] if results else "",
        "output_uri": output_uri,
        "quarantine_uri": "",
        "reasons": {},
    }
    for r in results:
        for key, n in r.get("reasons", {}).items():
            totals["reasons"][key] = totals["reasons"].get(key, 0) + n
    fs, path = filesystem(output_uri)
    s_fs, s_path = filesystem(staging)
    if not s_fs.exists(s_path):
        raise InputDataError(f"the staging folder {staging!r} is missing: did every shard finish?")
    if path.lower().endswith(PARQUET_SUFFIXES):
        _concatenate([r["output_uri"] for r in results], output_uri)
        rejected = [r["quarantine_uri"] for r in results if r["quarantine_uri"]]
        if rejected:
            totals["quarantine_uri"] = _beside(output_uri, ".quarantine.parquet")
            _concatenate(rejected, totals["quarantine_uri"])
        s_fs.rm(s_path, recursive=True)
        return totals
    if totals["rows_rejected"]:
        totals["quarantine_uri"] = _uri(fs, f"{path.rstrip('/')}/{QUARANTINE_DIR}")
    success = json.dumps(totals, indent=2, sort_keys=True)
    local = fs.protocol in ("file", "local") or "file" in (
        fs.protocol if isinstance(fs.protocol, tuple) else ()
    )
    if local:
        with s_fs.open(f"{s_path}/{SUCCESS_FILE}", "w") as handle:
            handle.write(success)
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.mv(s_path, path, recursive=True)  # one rename
    else:
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.copy(s_path.rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
        with fs.open(f"{path.rstrip('/')}/{SUCCESS_FILE}", "w") as handle:
            handle.write(success)
        s_fs.rm(s_path, recursive=True)
    log.info("committed %d part file(s) to %s", len(results), output_uri)
    return totals


def _concatenate(parts: list[str], output_uri: str) -> None:
    import pyarrow.parquet as pq

    with atomic_output(output_uri) as (fs, tmp):
        writer = None
        with fs.open(tmp, "wb") as out:
            for part in parts:
                p_fs, p_path = filesystem(part)
                with p_fs.open(p_path, "rb") as handle:
                    reader = pq.ParquetFile(handle)
                    if writer is None:
                        writer = pq.ParquetWriter(out, reader.schema_arrow)
                    for group in range(reader.num_row_groups):
                        writer.write_table(reader.read_row_group(group))
            if writer is not None:
                writer.close()


# ------------------------------------------------------------------------------------------ the model's source


def fetch_model(model_uri: str, tracking_uri: str, destination: str | Path) -> tuple[str, str]:
    """Copy the model at ``model_uri`` into ``destination`` (checked: it must load here) and return its
    (name, version). ``models:/<name>@<alias>`` and ``models:/<name>/<version>`` are resolved to a
    version once, so every shard of a job scores with the same model even if the alias moves meanwhile;
    a folder or an s3/gs/http URI of a model directory is named after the folder, its version is the
    model file's sha256."""
    import shutil

    from components.common.champion import local_model_dir
    from components.common.errors import ModelArtifactError

    if not model_uri.strip():
        raise ConfigError(
            "model_uri is empty: models:/<name>@<alias>, models:/<name>/<version> or a model folder"
        )
    name = version = ""
    uri = model_uri.strip()
    if uri.startswith("models:/"):
        from components.registry.models import resolve

        if not tracking_uri:
            raise ConfigError(f"model_uri {uri!r} is a registry URI: set mlflow_tracking_uri")
        found = resolve(tracking_uri, uri)
        name, version = found.name, found.version
        uri = f"models:/{name}/{version}"
        log.info("%s is version %s", model_uri, version)
    with local_model_dir(uri, "model", tracking_uri) as folder:
        destination = Path(destination)
        if destination.exists():
            shutil.rmtree(destination)
        shutil.copytree(folder, destination)
    try:
        model = load_model(destination, name or Path(model_uri.rstrip("/")).name, version)
    except ModelArtifactError:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return model.name, model.version


def summary_markdown(totals: dict, results: list[dict]) -> str:
    """The job in a few lines of Markdown (the KFP UI renders it)."""
    rate = totals["rows_in"] / totals["seconds"] if totals["seconds"] else 0.0
    lines = [
        "# Batch prediction",
        "",
        f"- model: **{totals['model_name']}** version **{totals['model_version']}**",
        f"- output: `{totals['output_uri']}`",
        f"- rows in: {totals['rows_in']:,}; scored: {totals['rows_scored']:,}; rejected: {totals['rows_rejected']:,}",
        f"- {totals['files']} input file(s) in {totals['shards']} shard(s); slowest shard {totals['seconds']:.1f} s "
        f"({rate:,.0f} rows/s)",
    ]
    if totals["rows_rejected"]:
        lines.append(f"- rejected rows (with one reason each): `{totals['quarantine_uri']}`")
        lines += ["", "| rejected because of | rows |", "|---|---:|"]
        lines += [f"| {key} | {n:,} |" for key, n in sorted(totals["reasons"].items())]
    warnings = sorted({w for r in results for w in r.get("warnings", [])})
    if warnings:
        lines += ["", "Schema warnings (TFDV, not stopping):", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def remove_staging(staging: str) -> str:
    """Remove a staging folder (a failed job's shards' files); returns what was removed ("" if nothing)."""
    fs, path = filesystem(staging)
    if not fs.exists(path):
        return ""
    fs.rm(path, recursive=True)
    log.info("removed the staging folder %s left by a failed job", staging)
    return staging


def check_input(
    model_dir: str | Path,
    files: list[str],
    *,
    input_uri: str,
    passthrough: list[str] | None = None,
    file_format: str = "auto",
    delimiter: str = "auto",
    missing_values: list[str] | None = None,
) -> list[str]:
    """Before any shard scores: the first batch of the first file has every feature (names sanitized as in
    training) and the passthrough columns, its values convert, and it passes TFDV against the model's
    schema (SERVING environment). Returns the schema warnings; raises naming a missing column or a wrong
    type. (Each shard checks its own files' columns and values again as it reads them.)"""
    model = load_model(model_dir)
    source = open_input(
        input_uri,
        files=files[:1],
        file_format=file_format,
        batch_rows=VALIDATION_ROWS,
        delimiter=delimiter,
        missing_values=missing_values,
    )
    batch = next(iter(source.batches()), None)
    if batch is None:
        raise InputDataError(f"input {files[0]!r} has no rows")
    converter = Converter(model, batch.schema.names, list(passthrough or []), files[0])
    converter.convert(batch, 0)
    return validate_schema(model_dir, model, batch, converter)
