"""Ingestion core: formats, URIs, column names, deterministic stratified splits, and bad input."""

from __future__ import annotations

import functools
import http.server
import threading

import numpy as np
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
        r"column 'x2' is numeric but 1 of its 97 values are not numbers, e.g. \['twelve'\] \(first at row 7\); fix or blank them in the source, list them in missing_values",
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


# --- a user's own table: column typing, and the messages of issue 11 ----------------------------------------


def test_column_typing_of_a_table_users_bring(tmp_path, caplog):
    from tests.conftest import make_messy_table

    make_messy_table(400).to_csv(tmp_path / "customers.csv", index=False)
    with caplog.at_level("INFO", logger="kfp_tabular"):
        result, paths = run_ingest(str(tmp_path / "customers.csv"), tmp_path / "out", target="Churned")
    kinds = {name: t["kind"] for name, t in result.column_types.items()}
    assert kinds == {
        "row_id": "id",
        "email": "id",
        "signup_date": "datetime",
        "member": "boolean",
        "store_id": "categorical",
        "income": "numeric",
        "visits": "numeric",
        "region": "categorical",
    }
    assert result.dropped_columns == {
        "row_id": "id: named like an id (400 distinct in 400 rows)",
        "email": "id: a different value in almost every row (400 distinct in 400 rows)",
    }
    assert result.columns == ["signup_date", "member", "store_id", "income", "visits", "region", "churned"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        "column 'row_id' dropped: id, named like an id (400 distinct in 400 rows) (set column_types to keep it)"
        in warnings
    )
    # the decisions travel with the splits, for validation and transform
    from components.common.io import read_table_metadata

    meta = read_table_metadata(paths["train"])
    assert meta["column_types"]["signup_date"] == {
        "name": "signup_date",
        "kind": "datetime",
        "reason": "date/time text",
        "format": "ISO8601",
        "parts": ["year", "month", "day", "day_of_week"],
    }
    assert meta["dropped_columns"] == result.dropped_columns


@pytest.mark.parametrize(
    ("values", "kind", "reason"),
    [
        (lambda n: np.arange(n) * 7 + 1000, "id", "unique per row, increasing"),
        (
            lambda n: np.random.default_rng(0).permutation(n) + 1,
            "id",
            "unique per row, a range of consecutive integers",
        ),
        (
            lambda n: [f"n/a-{i}" for i in range(n)],
            "id",
            "a different value in almost every row (60 distinct in 60 rows)",
        ),
        (
            lambda n: [
                f"Lorem ipsum dolor sit amet, consectetur adipiscing elit, number {i}" for i in range(n)
            ],
            "text",
            "long text (mean 66 characters)",
        ),
        (
            lambda n: [f"word {i % 40}" for i in range(n)],
            "text",
            "high-cardinality text (40 distinct in 60 rows)",
        ),
        (
            lambda n: np.random.default_rng(1).normal(size=n),
            "numeric",
            "numbers",
        ),  # unique floats are not ids
        (lambda n: ["True", "False"] * (n // 2), "boolean", "values ['false', 'true']"),
        (lambda n: [True, False, None] * (n // 3), "boolean", "values ['false', 'true']"),
        (lambda n: ["Y", "N", "y"] * (n // 3), "boolean", "values ['n', 'y']"),
        (lambda n: ["0", "1"] * (n // 2), "numeric", "numbers written as text"),
        (
            lambda n: pd.date_range("2024-01-01 08:30", periods=n, freq="7h").strftime("%Y-%m-%d %H:%M"),
            "datetime",
            "date/time text",
        ),
        (
            lambda n: pd.date_range("2024-01-01", periods=n, freq="D").strftime("%d/%m/%Y"),
            "datetime",
            "date/time text (%d/%m/%Y)",
        ),
        (lambda n: pd.date_range("2024-01-01", periods=n, freq="D"), "datetime", "timestamps"),
    ],
)
def test_each_kind_of_column(values, kind, reason):
    from components.ingest.typing import infer_column_types

    n = 60
    df = pd.DataFrame({"col": values(n), "y": ["a", "b"] * (n // 2)})
    out, types = infer_column_types(df, target="y")
    assert (types["col"].kind, types["col"].reason) == (kind, reason)
    if kind == "datetime":
        assert types["col"].parts[-1] == ("hour" if "08:30" in str(df["col"].iloc[0]) else "day_of_week")
        assert "col" in out and out["col"].map(type).eq(str).all()  # one representation: text
    if kind in ("id", "text"):
        assert "col" not in out


def test_column_types_override_the_inference(tmp_path):
    from components.ingest.typing import infer_column_types

    df = pd.DataFrame(
        {"code": np.arange(50), "when": [f"2024-01-{i % 28 + 1:02d}" for i in range(50)], "y": [0, 1] * 25}
    )
    out, types = infer_column_types(df, target="y", overrides={"code": "categorical", "when": "text"})
    assert types["code"].kind == "categorical" and out["code"].tolist()[:2] == ["0", "1"]
    assert types["when"].kind == "text" and "when" not in out
    with pytest.raises(
        InputDataError, match=r"column_types sets 'when' numeric but 50 of its values are not numbers"
    ):
        infer_column_types(df, target="y", overrides={"when": "numeric"})
    with pytest.raises(InputDataError, match=r"column_types names columns not in the table: \['nope'\]"):
        infer_column_types(df, target="y", overrides={"nope": "numeric"})


def _csv(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _message(source, tmp_path, **overrides):
    with pytest.raises(InputDataError) as info:
        run_ingest(source, tmp_path / "out", **overrides)
    out = tmp_path / "out"
    assert not out.exists() or not list(out.iterdir())  # nothing written
    return str(info.value)


def test_infinite_values_stop_or_become_missing_by_rule(tmp_path):
    df = make_table(120)
    df.loc[[3, 9], "x2"] = np.inf
    df.loc[5, "x one"] = -np.inf
    source = _write(tmp_path, "inf.csv", df)
    assert _message(source, tmp_path, target="y") == (
        "columns with infinite values: 'x_one' (1), 'x2' (2); fix them in the source, or set non_finite: "
        "missing to treat them as missing values"
    )
    result, paths = run_ingest(source, tmp_path / "ok", target="y", non_finite="missing")
    assert result.non_finite == {"x_one": 1, "x2": 2}
    splits = pd.concat([pd.read_parquet(p) for p in paths.values()])
    assert np.isfinite(splits["x2"].dropna()).all() and splits["x2"].isna().sum() >= 2


def test_duplicate_column_names_stop(tmp_path):
    source = _csv(tmp_path, "dup.csv", "husby,age,husby,y\n1,30,2,a\n3,40,4,b\n")
    assert _message(source, tmp_path, target="y") == (
        f"data source {source!r} has duplicate column names: 'husby' at columns [1, 3]; rename them in the "
        "source so each column has its own name"
    )


def test_semicolon_csv_is_read_and_a_forced_wrong_delimiter_is_explained(tmp_path):
    df = make_table(120)
    df.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    result, _ = run_ingest(str(tmp_path / "semi.csv"), tmp_path / "a", target="y")
    assert result.delimiter == ";" and result.rows == 120
    df.to_csv(tmp_path / "tab.tsv.csv", sep="\t", index=False)
    assert run_ingest(str(tmp_path / "tab.tsv.csv"), tmp_path / "b", target="y")[0].delimiter == "\t"
    message = _message(str(tmp_path / "semi.csv"), tmp_path, target="y", delimiter=",")
    assert message == (
        "target column 'y' is not in the table; columns are ['x_one_x2_color_size_y'] (the table was read as "
        "one column: is the CSV delimited by something other than the one used? set delimiter)"
    )


def test_a_folder_is_read_as_parquet_files_or_named_as_a_folder(tmp_path):
    folder = tmp_path / "table"
    folder.mkdir()
    df = make_table(200)
    df.iloc[:120].to_parquet(folder / "part-0.parquet")
    df.iloc[120:].to_parquet(folder / "part-1.parquet")
    result, _ = run_ingest(str(folder), tmp_path / "a", target="y")
    assert result.rows == 200
    again, _ = run_ingest(f"file://{folder}/", tmp_path / "b", target="y")
    assert again.source_sha256 == result.source_sha256
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    assert _message(str(empty), tmp_path, target="y") == (
        f"data source {str(empty)!r} is a directory with no Parquet files in it; pass a CSV or Parquet file, "
        "or a folder of Parquet files"
    )


def test_a_file_without_extension_is_read_by_its_content(tmp_path):
    make_table(100).to_parquet(tmp_path / "export")
    make_table(100).to_csv(tmp_path / "dump", index=False)
    assert run_ingest(str(tmp_path / "export"), tmp_path / "a", target="y")[0].rows == 100
    assert run_ingest(str(tmp_path / "dump"), tmp_path / "b", target="y")[0].rows == 100


def test_missing_value_tokens(tmp_path):
    df = make_table(120)
    df["x2"] = df["x2"].astype(object)
    df.loc[[1, 2, 3], "x2"] = "?"
    source = _write(tmp_path, "q.csv", df)
    assert "list them in missing_values if they mean 'missing'" in _message(source, tmp_path, target="y")
    result, _ = run_ingest(source, tmp_path / "ok", target="y", missing_values=["?"])
    assert result.column_types["x2"]["kind"] == "numeric"
