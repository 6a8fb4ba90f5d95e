"""Column names, URIs, atomic writes and configuration."""

import pytest

from components.common.columns import sanitize_column_name, sanitize_column_names
from components.common.errors import ConfigError, InputDataError
from components.common.io import DEMO_DATASETS, atomic_dir, atomic_file, resolve_uri, table_format
from components.config import TabularConfig, load_config


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("math score", "math_score"),
        ("Body Mass (g)", "body_mass_g"),
        ("  a--b  ", "a_b"),
        ("2nd", "c_2nd"),
        ("already_ok", "already_ok"),
        ("Ünïcode col", "n_code_col"),
    ],
)
def test_sanitize_column_name(raw, clean):
    assert sanitize_column_name(raw) == clean


def test_sanitize_rejects_collisions_and_empty_names():
    with pytest.raises(InputDataError, match="both become 'a_b'"):
        sanitize_column_names(["a b", "a-b"])
    with pytest.raises(InputDataError, match="no letters or digits"):
        sanitize_column_name("%%")


def test_resolve_uri_forms(tmp_path):
    assert resolve_uri("demo://penguins") == str(DEMO_DATASETS["penguins"])
    assert resolve_uri(f"file://{tmp_path}/x.csv") == f"{tmp_path}/x.csv"
    assert resolve_uri("s3://bucket/key.csv") == "s3://bucket/key.csv"
    with pytest.raises(InputDataError, match="unknown demo dataset"):
        resolve_uri("demo://nope")
    with pytest.raises(InputDataError, match="no data source"):
        resolve_uri("  ")


def test_table_format():
    assert table_format("a/b.PARQUET") == "parquet"
    assert table_format("https://x/y.csv?raw=1") == "csv"
    assert table_format("a/b.data", "csv") == "csv"
    with pytest.raises(InputDataError, match="cannot tell the format"):
        table_format("a/b.data")


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "artifact"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "whole.txt").write_text("x")
    assert [p.name for p in target.iterdir()] == ["whole.txt"]


def test_atomic_file_keeps_previous_content_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("new")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_config_defaults_run_the_demo_and_yaml_overrides(tmp_path):
    config = TabularConfig()
    assert config.source_uri == "demo://penguins" and config.thresholds == {} and config.model_name == ""
    resolved = config.resolved()
    assert resolved.thresholds == {"roc_auc": 0.8} and resolved.model_name == "penguins-species"
    path = tmp_path / "c.yaml"
    path.write_text("target: body_mass_g\ntask: regression\nthresholds: {r2: 0.5}\nmax_trials: 4\n")
    loaded = load_config(path, max_trials=2)
    assert (loaded.task, loaded.thresholds, loaded.max_trials) == ("regression", {"r2": 0.5}, 2)


def test_defaults_fit_the_task_and_the_table():
    """A regression run needs no threshold of its own, and a table gets its own model name."""
    config = load_config(
        None, source_uri="data/wages.csv", target="Hourly Wage", task="regression"
    ).resolved()
    assert config.thresholds == {"r2": 0.5}
    assert config.model_name == "wages-hourly-wage"
    assert load_config(None, task="regression", model_name="mine").resolved().model_name == "mine"


@pytest.mark.parametrize(
    ("source", "target", "name"),
    [
        ("demo://penguins", "species", "penguins-species"),
        ("s3://bucket/raw/House Prices.csv.gz", "SalePrice", "house-prices-saleprice"),
        ("/data/2019.parquet", "y", "m-2019-y"),  # a DNS-1035 label starts with a letter
        ("/data/tables/", "Target", "tables-target"),  # a folder of Parquet files
        ("https://host/x.csv?token=abc", "y", "x-y"),
        ("/data/" + "very_long_name_" * 5 + ".csv", "target_column", None),
    ],
)
def test_default_model_name_is_a_dns_label(source, target, name):
    from components.config import MODEL_NAME, MODEL_NAME_DERIVED_MAX, default_model_name

    derived = default_model_name(source, target)
    assert MODEL_NAME.fullmatch(derived) and len(derived) <= MODEL_NAME_DERIVED_MAX
    if name:
        assert derived == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("task: regression\nthresholds: {accuracy: 0.9}\n", "not regression metrics"),
        ("max_trials: 0\n", "max_trials"),
        ("unknown_field: 1\n", "unknown_field"),
        ("model_name: Not_DNS\n", "DNS-1035"),
        ("model_name: 9lives\n", "starting with a letter"),
        ("candidates: [svm]\n", "not classification models"),
        ("eval_fraction: 0.5\ntest_fraction: 0.45\n", "at least 10%"),
        ("column_types: {x: number}\n", "column_types"),
        ("non_finite: ignore\n", "non_finite"),
        ("drift_action: stopp\n", "drift_action"),
        ("- a list\n", "mapping"),
    ],
)
def test_config_errors_name_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_config_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")


def test_example_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).resolve().parent.parent / "pipelines" / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)
