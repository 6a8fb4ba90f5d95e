"""The one typed configuration of a run: data, task, validation, search budget, gate, deployment.

Defaults run the demo (Palmer penguins, species classification) end to end. Every field is also a
pipeline parameter of the same name (see ``pipelines/tabular_pipeline.py``), and a YAML file with
any subset of the fields overrides the defaults (``load_config``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.common.errors import ConfigError

Task = Literal["classification", "regression"]

CLASSIFICATION_METRICS = {"accuracy": "max", "f1_macro": "max", "roc_auc": "max", "log_loss": "min"}
REGRESSION_METRICS = {"rmse": "min", "mae": "min", "r2": "max"}
METRIC_DIRECTIONS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}
CANDIDATES = {
    "classification": ("logistic_regression", "hist_gradient_boosting", "xgboost", "lightgbm"),
    "regression": ("ridge", "hist_gradient_boosting", "xgboost", "lightgbm"),
}


# The gate when no thresholds are configured: conventional bars for "a useful model" that hold for any
# ordinary table (ROC AUC 0.8: good discrimination; R2 0.5: explains half the variance). Every gate also
# requires beating the trivial model (class frequencies / the train mean), see components/evaluate.
DEFAULT_THRESHOLDS = {"classification": {"roc_auc": 0.8}, "regression": {"r2": 0.5}}
# The tracking server manifests/ install on a cluster (namespace kfp-tabular, Service mlflow).
CLUSTER_TRACKING_URI = "http://mlflow.kfp-tabular.svc.cluster.local:5000"
COLUMN_KINDS = ("numeric", "categorical", "boolean", "datetime", "id", "text")


class TabularConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --- data ---
    source_uri: str = Field(
        "demo://penguins",
        description="CSV/Parquet path, a folder of Parquet files, or a file://, http(s)://, s3://, gs:// URI",
    )
    file_format: Literal["auto", "csv", "parquet"] = "auto"
    delimiter: str = Field("auto", description="CSV delimiter; auto: detected from the first lines")
    missing_values: list[str] = Field(
        default_factory=list,
        description="extra texts that mean 'missing' (e.g. '?', '-'); NA, n/a, null already do",
    )
    target: str = Field("species", description="target column (name as in the source or sanitized)")
    task: Task = "classification"
    drop_columns: list[str] = Field(default_factory=list, description="columns to ignore (ids, leaks)")
    column_types: dict[str, str] = Field(
        default_factory=dict,
        description="column -> numeric|categorical|boolean|datetime|id|text, overriding the inferred kind "
        "(id and text columns are dropped)",
    )
    non_finite: Literal["error", "missing"] = Field(
        "error", description="infinite numbers: stop the run (error) or treat them as missing values"
    )
    eval_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42

    # --- validation (TFDV) ---
    schema_uri: str = Field("", description="curated TFDV schema (pbtxt); empty: infer from the table")
    drift_threshold: float = Field(
        0.2,
        ge=0,
        description="bound on drift of the training data against the data the current model was trained on "
        "(Jensen-Shannon divergence for numeric, L-infinity distance for categorical features); 0 disables",
    )
    drift_thresholds: dict[str, float] = Field(default_factory=dict, description="per-feature drift bounds")
    drift_action: Literal["stop", "warn"] = Field(
        "stop", description="what drift beyond the bounds does: stop the run, or warn and go on (retraining)"
    )

    # --- transform ---
    max_categories: int = Field(
        30, ge=2, description="one-hot columns kept per categorical; rarer values pooled"
    )

    # --- training search budget ---
    candidates: list[str] = Field(
        default_factory=list, description="model families to try; empty: all for the task"
    )
    max_trials: int = Field(
        12, ge=1, description="search trials (with this budget alone the search is deterministic)"
    )
    max_seconds: float = Field(
        300.0,
        gt=0,
        description="hard time limit of the search: a trial still running at it is cut and dropped "
        "(the first trial always completes)",
    )
    cv_folds: int = Field(3, ge=2)
    search_sample_rows: int = Field(
        50_000, ge=100, description="rows the search cross-validates on; the winner refits on all"
    )
    ensemble_size: int = Field(
        25,
        ge=0,
        description="rounds of ensemble selection over the best trials (a weighted ensemble, used only when "
        "it beats the best single model out of fold); 0 or 1: the best single model",
    )

    # --- evaluation gate ---
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="metric -> bound; 'min' metrics (log_loss, rmse, mae) are upper bounds, others lower bounds; "
        f"empty: the task's default {DEFAULT_THRESHOLDS}",
    )
    baseline_model_uri: str = Field(
        "",
        description="a model to compare with instead of the registry's champion (a model directory, URI, or "
        "models:/<name>/<version>); empty: the champion",
    )
    baseline_tolerance: float = Field(
        0.0, ge=0, description="how much worse than the champion (or baseline) a model may be and still pass"
    )

    # --- tracking and registry (MLflow) ---
    mlflow_tracking_uri: str = Field(
        CLUSTER_TRACKING_URI,
        description="MLflow tracking server (runs and the model registry); the local runner's default is a "
        "SQLite store in ./mlflow",
    )
    mlflow_artifacts_destination: str = Field(
        "s3://mlflow",
        description="the tracking server's --artifacts-destination: where KServe reads a version's files",
    )

    # --- deployment ---
    deploy_target: Literal["local", "kserve"] = Field(
        "local",
        description="where a blessed model goes: local (it becomes the registry's champion, which `make serve` "
        "serves) or kserve (an InferenceService, then champion)",
    )
    model_name: str = Field(
        "", description="name of the served model (a DNS label); empty: <source file name>-<target>"
    )
    kserve_namespace: str = Field(
        "kfp-tabular", description="namespace of the InferenceService (kserve target)"
    )
    kserve_deployment_mode: Literal["Standard", "Knative"] = "Standard"
    canary_traffic_percent: int = Field(
        0,
        ge=0,
        lt=100,
        description="canary share for a new model replacing a served one; 0: replace at once. Standard mode: "
        "KServe's spec.canary (the share sizes the canary's replicas, it is smoke-tested on its own Service, "
        "then promoted); Knative mode: predictor.canaryTrafficPercent (the share of requests)",
    )
    deploy_timeout_seconds: float = Field(
        600.0, gt=0, description="how long to wait for the InferenceService"
    )

    @field_validator("model_name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if value:
            check_model_name(value)
        return value

    @field_validator("column_types")
    @classmethod
    def _kinds(cls, value: dict[str, str]) -> dict[str, str]:
        bad = {k: v for k, v in value.items() if v not in COLUMN_KINDS}
        if bad:
            raise ValueError(f"{bad}: each kind must be one of {list(COLUMN_KINDS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TabularConfig:
        if self.eval_fraction + self.test_fraction >= 0.9:
            raise ValueError("eval_fraction + test_fraction must leave at least 10% of rows for training")
        check_thresholds(self.task, self.thresholds)
        check_candidates(self.task, self.candidates)
        return self

    def resolved(self) -> TabularConfig:
        """A copy with the defaults that depend on other fields filled in (model name, thresholds)."""
        return self.model_copy(
            update={
                "model_name": self.model_name or default_model_name(self.source_uri, self.target),
                "thresholds": self.thresholds or dict(DEFAULT_THRESHOLDS[self.task]),
            }
        )

    def pipeline_arguments(self) -> dict[str, Any]:
        """The arguments of ``tabular_pipeline`` (every field is a parameter of the same name)."""
        return self.model_dump()


MODEL_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
MODEL_NAME_DERIVED_MAX = 45  # KServe derives longer names from it (<name>-predictor, canaries)


def check_model_name(value: str) -> str:
    if not MODEL_NAME.fullmatch(value):
        raise ValueError(
            f"model_name {value!r} must be a DNS-1035 label (lower-case letters, digits and '-', starting "
            "with a letter, at most 63 characters), as KServe requires"
        )
    return value


def default_model_name(source_uri: str, target: str) -> str:
    """``data/House Prices.csv`` + ``SalePrice`` -> ``house-prices-saleprice``: a DNS-1035 label."""
    stem = source_uri.strip().rstrip("/").split("?", 1)[0]
    stem = stem.removeprefix("demo://").rsplit("/", 1)[-1]
    for suffix in (".gz", ".csv", ".txt", ".parquet", ".pq"):
        stem = stem.removesuffix(suffix)

    def label(text: str) -> str:
        return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")

    stem, target_label = label(stem), label(target)
    name = f"{stem}-{target_label}" if stem and stem != target_label else (stem or target_label)
    name = name[:MODEL_NAME_DERIVED_MAX].strip("-")
    if not name or not name[0].isalpha():
        name = f"m-{name}".strip("-")
    return name


def check_thresholds(task: str, thresholds: dict[str, float]) -> None:
    known = METRIC_DIRECTIONS[task]
    unknown = sorted(set(thresholds) - set(known))
    if unknown:
        raise ConfigError(f"thresholds {unknown} are not {task} metrics; use some of {sorted(known)}")


def check_candidates(task: str, candidates: list[str]) -> None:
    unknown = sorted(set(candidates) - set(CANDIDATES[task]))
    if unknown:
        raise ConfigError(f"candidates {unknown} are not {task} models; use some of {list(CANDIDATES[task])}")


def load_config(path: str | Path | None = None, **overrides: Any) -> TabularConfig:
    """Defaults, then the YAML file (if any), then keyword overrides (``None`` values are ignored)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {path} must hold a mapping of field: value")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TabularConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
    except ConfigError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
