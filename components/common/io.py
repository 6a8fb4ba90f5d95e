"""File I/O shared by the stages: reading tables from URIs, hashing, all-or-nothing writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from components.common.errors import InputDataError

DEMO_DATASETS = {"penguins": Path(__file__).resolve().parent.parent / "ingest" / "demo" / "penguins.csv"}
REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://")


def resolve_uri(uri: str) -> str:
    """Turn ``demo://name``, ``file://`` and ``~`` paths into local paths; leave remote URIs as they are."""
    uri = uri.strip()
    if not uri:
        raise InputDataError("no data source given: set source_uri to a CSV or Parquet path or URI")
    if uri.startswith("demo://"):
        name = uri.removeprefix("demo://")
        if name not in DEMO_DATASETS:
            raise InputDataError(f"unknown demo dataset {name!r}; available: {sorted(DEMO_DATASETS)}")
        return str(DEMO_DATASETS[name])
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if uri.startswith(REMOTE_SCHEMES):
        return uri
    return str(Path(uri).expanduser())


def table_format(uri: str, file_format: str = "auto") -> str:
    """``csv`` or ``parquet``: as configured, else from the file extension."""
    if file_format != "auto":
        if file_format not in ("csv", "parquet"):
            raise InputDataError(f"file_format must be 'auto', 'csv' or 'parquet', not {file_format!r}")
        return file_format
    name = uri.split("?", 1)[0].lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise InputDataError(
        f"cannot tell the format of {uri!r} from its extension; set file_format to 'csv' or 'parquet'"
    )


def fetch_bytes(uri: str) -> bytes:
    """The raw bytes behind a local path or a remote URI (fsspec: http(s), s3, gs)."""
    path = resolve_uri(uri)
    try:
        if path.startswith(REMOTE_SCHEMES):
            import fsspec

            with fsspec.open(path, "rb") as handle:
                return handle.read()
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise InputDataError(f"data source not found: {uri!r}") from exc
    except IsADirectoryError as exc:
        raise InputDataError(f"data source {uri!r} is a directory, not a file") from exc
    except PermissionError as exc:
        raise InputDataError(f"data source {uri!r} cannot be read: permission denied") from exc
    except ImportError as exc:
        raise InputDataError(f"reading {uri!r} needs the fsspec back end for its scheme: {exc}") from exc
    except Exception as exc:  # network and object-store errors come in many types
        raise InputDataError(f"could not read {uri!r}: {type(exc).__name__}: {exc}") from exc


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` only if the block succeeds.

    On any exception the temporary directory is removed and ``target`` is left as it was, so a
    failing stage never leaves a half-written artifact behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes 0700; artifacts are read by other users (a non-root server)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path that replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.chmod(0o644)  # mkstemp makes 0600
    os.replace(tmp, target)


TABLE_METADATA_KEY = b"kfp_tabular"


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``df`` (index dropped) atomically; ``metadata`` (JSON) travels in the file's schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    if metadata is not None:
        merged = dict(table.schema.metadata or {})
        merged[TABLE_METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(merged)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_parquet(path)


def read_table_metadata(path: str | os.PathLike) -> dict:
    """What ``write_parquet`` stored with the table (``{}`` for a file written without it)."""
    import pyarrow.parquet as pq

    stored = pq.read_schema(path).metadata or {}
    raw = stored.get(TABLE_METADATA_KEY)
    return json.loads(raw) if raw else {}
