"""Ingestion core: formats, URIs, column names, deterministic stratified splits, and bad input."""

from __future__ import annotations

import functools
import http.server
import threading

import pandas as pd
import pytest

from components.common.errors import InputDataError
from components.common.io import sha256_file
from tests.conftest import make_table, run_ingest, split_paths


def _splits(paths):
    return {name: pd.read_parquet(path) for name, path in paths.items()}


def test_demo_split_is_stratified_deterministic_and_hashed(tmp_path, penguins):
    result, paths = run_ingest("demo://penguins", tmp_path / "a")
    again, paths2 = run_ingest("demo://penguins", tmp_path / "b")
    parts = _splits(paths)
    assert result.rows == len(penguins) == sum(len(p) for p in parts.values())
    assert result.split_rows == {k: len(v) for k, v in parts.items()}
    assert (
        result.source_sha256
        == again.source_sha256
        == sha256_file(__import__("components.common.io", fromlist=["x"]).DEMO_DATASETS["penguins"])
    )
    for name in paths:  # same seed, same split, to the byte
        assert sha256_file(paths[name]) == sha256_file(paths2[name])
    overall = penguins["species"].value_counts(normalize=True)
    for part in parts.values():  # stratified: class shares within 3 points of the whole table
        assert (part["species"].value_counts(normalize=True) - overall).abs().max() < 0.03
    other, paths3 = run_ingest("demo://penguins", tmp_path / "c", seed=7)
    assert sha256_file(paths3["test"]) != sha256_file(paths["test"])


def test_column_names_are_sanitized_and_target_found_by_either_name(tmp_path):
    df = make_table(200)
    df.to_csv(tmp_path / "t.csv", index=False)
    result, paths = run_ingest(str(tmp_path / "t.csv"), tmp_path / "out", target="Y")
    assert result.target == "y"
    assert result.renamed_columns == {"x one": "x_one"}
    assert list(pd.read_parquet(paths["train"]).columns) == ["x_one", "x2", "color", "size", "y"]


def test_parquet_and_file_uri_and_drop_columns(tmp_path):
    df = make_table(200)
    df["row_id"] = range(len(df))
    df.to_parquet(tmp_path / "t.parquet")
    result, paths = run_ingest(
        f"file://{tmp_path}/t.parquet", tmp_path / "out", target="y", drop_columns=["row_id"]
    )
    assert "row_id" not in result.columns
    assert result.rows == 200


def test_regression_split_is_not_stratified_and_works(tmp_path):
    make_table(200, task="regression").to_csv(tmp_path / "r.csv", index=False)
    result, _ = run_ingest(str(tmp_path / "r.csv"), tmp_path / "out", target="y", task="regression")
    assert result.classes == [] and sum(result.split_rows.values()) == 200


def test_rows_with_missing_target_are_dropped(tmp_path):
    df = make_table(200)
    df.loc[:9, "y"] = None
    df.to_csv(tmp_path / "t.csv", index=False)
    result, _ = run_ingest(str(tmp_path / "t.csv"), tmp_path / "out", target="y")
    assert result.dropped_rows_missing_target == 10 and result.rows == 190


def test_http_source(tmp_path):
    make_table(200).to_csv(tmp_path / "t.csv", index=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result, _ = run_ingest(f"{url}/t.csv", tmp_path / "out", target="y")
        assert result.rows == 200
        with pytest.raises(InputDataError, match="could not read|not found"):
            run_ingest(f"{url}/missing.csv", tmp_path / "out2", target="y")
    finally:
        server.shutdown()


def test_s3_source(tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="data")
        make_table(200).to_parquet(tmp_path / "t.parquet")
        s3.upload_file(str(tmp_path / "t.parquet"), "data", "tables/t.parquet")
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        result, _ = run_ingest("s3://data/tables/t.parquet", tmp_path / "out", target="y")
        assert result.rows == 200
        with pytest.raises(InputDataError, match="not found|could not read"):
            run_ingest("s3://data/tables/nope.parquet", tmp_path / "out2", target="y")
    finally:
        server.stop()


# --- bad input: a clear error naming the problem, and no split written ---------------------------------


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, pd.DataFrame):
        content.to_csv(path, index=False)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return str(path)


BAD_TABLES = {
    "missing file": (lambda tmp: str(tmp / "nope.csv"), {}, "not found"),
    "empty file": (lambda tmp: _write(tmp, "e.csv", ""), {}, "empty"),
    "header only": (lambda tmp: _write(tmp, "h.csv", "a,b,y\n"), {"target": "y"}, "no rows"),
    "unreadable parquet": (
        lambda tmp: _write(tmp, "g.parquet", b"\x00\x01garbage" * 50),
        {},
        "cannot be read as PARQUET",
    ),
    "missing target": (
        lambda tmp: _write(tmp, "t.csv", make_table(50)),
        {"target": "label"},
        "target column 'label' is not in the table",
    ),
    "wrong type": (
        lambda tmp: _write(
            tmp,
            "w.csv",
            make_table(100).assign(x2=lambda d: d["x2"].astype(object).where(d.index != 7, "twelve")),
        ),
        {"target": "y"},
        r"column 'x2' is numeric but 1 of its values are not numbers, e.g. \['twelve'\]",
    ),
    "all-missing column": (
        lambda tmp: _write(tmp, "m.csv", make_table(50).assign(empty=None)),
        {"target": "y"},
        r"\['empty'\] have no values",
    ),
    "non-numeric regression target": (
        lambda tmp: _write(tmp, "r.csv", make_table(50)),
        {"target": "y", "task": "regression"},
        "must be numeric for regression",
    ),
    "single class": (
        lambda tmp: _write(tmp, "s.csv", make_table(50).assign(y="a")),
        {"target": "y"},
        "single class",
    ),
    "tiny class": (
        lambda tmp: _write(tmp, "c.csv", make_table(50).assign(y=lambda d: ["a"] * 48 + ["b"] * 2)),
        {"target": "y"},
        r"classes \['b'\]",
    ),
    "unknown drop column": (
        lambda tmp: _write(tmp, "d.csv", make_table(50)),
        {"target": "y", "drop_columns": ["zzz"]},
        "drop_columns",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_input_is_named_and_nothing_is_written(tmp_path, case):
    make_source, overrides, message = BAD_TABLES[case]
    source = make_source(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InputDataError, match=message):
        run_ingest(source, out, **overrides)
    assert not any((out / p).exists() for p in ("train.parquet", "eval.parquet", "test.parquet"))
    assert not out.exists() or not list(out.iterdir())
    assert split_paths(out)  # paths were computed, just never written
