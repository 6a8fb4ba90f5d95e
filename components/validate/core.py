"""Data validation with TensorFlow Data Validation (TFDV): statistics, schema, anomalies and drift.

``validate_splits`` computes statistics for every split, takes a schema (a curated one, or one inferred
from the train split), adds drift comparators, validates every split against the schema (eval also for
drift against train) and either writes its four outputs or raises ``DataValidationError`` listing every
anomaly, writing nothing.

TFDV (and with it TensorFlow, 10-17 s) is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.common.errors import ConfigError, DataValidationError, InputDataError
from components.common.io import atomic_dir, atomic_file, fetch_bytes
from components.common.logs import get_logger

log = get_logger("validate")

DRIFT_SPLIT = "eval"  # compared with train for drift
BASELINE_SPLIT = "train"  # the schema is inferred from it; the drift baseline
INDEX_COLUMN = re.compile(r"__index_level_\d+__")  # what pandas/pyarrow call a stored DataFrame index
DATASET_LEVEL = "(dataset)"  # the "feature" of an anomaly about a whole split (e.g. its row count)

RELAXATION_NOTE = (
    "non-target features: no minimum present fraction (missing values allowed), at least one value in a "
    "split, exactly one value where present (value_count 1..1 instead of a fixed shape); "
    "the target must be present in every row (min_fraction 1.0)"
)


@dataclass
class ValidationResult:
    """What validation found; ``anomalies`` is empty whenever ``validate_splits`` returns."""

    anomalies: list[dict]
    schema_inferred: bool
    num_examples: dict[str, int]
    num_features: int  # columns of the train split, target included
    # train vs eval drift per feature with a comparator: {"measure", "value", "threshold"}
    drift: dict[str, dict] = field(default_factory=dict)


def _tfdv():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's INFO/WARNING start-up chatter
    import tensorflow_data_validation as tfdv

    return tfdv


# ----------------------------------------------------------------------------------------- inputs


def read_split(name: str, path: str, target: str) -> pd.DataFrame:
    """A split as TFDV should see it: default index, no stored-index column, target present, some rows."""
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError as exc:
        raise InputDataError(f"{name} split not found: {path!r}") from exc
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise InputDataError(f"{name} split {path!r} is not a readable Parquet file: {exc}") from exc
    df = df.drop(columns=[c for c in df.columns if INDEX_COLUMN.fullmatch(str(c))]).reset_index(drop=True)
    if target not in df.columns:
        raise InputDataError(
            f"target column {target!r} is not in the {name} split ({path!r}); columns: {list(df.columns)}"
        )
    if df.empty:
        raise InputDataError(f"the {name} split ({path!r}) has no rows")
    return df


def load_schema(uri: str):
    """A curated TFDV schema (text proto) from a local path or an http(s)/s3/gs URI."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    try:
        text = fetch_bytes(uri).decode("utf-8")
    except InputDataError as exc:
        raise InputDataError(f"schema_uri {uri!r} cannot be read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputDataError(f"schema_uri {uri!r} is not a text proto (not UTF-8): {exc}") from exc
    schema = schema_pb2.Schema()
    try:
        text_format.Parse(text, schema)
    except text_format.ParseError as exc:
        raise InputDataError(f"schema_uri {uri!r} is not a valid TFDV schema text proto: {exc}") from exc
    if not schema.feature:
        raise InputDataError(f"schema_uri {uri!r} defines no features; pass a schema written by this stage")
    return schema


# ----------------------------------------------------------------------------------------- schema


def relax_inferred_schema(schema, target: str) -> None:
    """Make a schema inferred from one small train split fit for a first run (in place).

    TFDV infers ``presence.min_fraction: 1`` and a fixed ``shape`` for every feature that had no missing
    value in train, so a few missing values in eval/test would fail the run. For every feature but the
    target: clear ``min_fraction`` (keep ``min_count: 1`` - a feature with no value at all in a split is
    still an anomaly) and replace ``shape`` by ``value_count {min: 1 max: 1}`` (one value where present).
    The target keeps its inferred constraints and must be present in every row (``min_fraction: 1``).
    String domains are kept: a category not seen in train is an anomaly.
    """
    for feature in schema.feature:
        if feature.name == target:
            feature.presence.min_fraction = 1.0
            feature.presence.min_count = max(feature.presence.min_count, 1)
            continue
        feature.presence.ClearField("min_fraction")
        feature.presence.min_count = 1
        if feature.HasField("shape"):
            feature.ClearField("shape")
            feature.value_count.min = 1
            feature.value_count.max = 1


def drift_bounds(
    schema, drift_threshold: float, drift_thresholds: dict[str, float] | None
) -> dict[str, float]:
    """The drift bound of every schema feature: the override if any, else ``drift_threshold``."""
    overrides = dict(drift_thresholds or {})
    for name, bound in [("drift_threshold", drift_threshold), *overrides.items()]:
        if (
            not isinstance(bound, int | float)
            or isinstance(bound, bool)
            or not math.isfinite(bound)
            or bound < 0
        ):
            raise ConfigError(f"drift bound for {name!r} must be a number >= 0 (0 disables), not {bound!r}")
    names = [feature.name for feature in schema.feature]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(f"drift_thresholds names features not in the schema: {unknown}; features: {names}")
    return {name: float(overrides.get(name, drift_threshold)) for name in names}


def comparator_kind(feature) -> str | None:
    """``L_INFTY`` for categorical (BYTES) features, ``JENSEN_SHANNON_DIVERGENCE`` for numeric ones."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    if feature.type == schema_pb2.BYTES:
        return "L_INFTY"
    if feature.type in (schema_pb2.INT, schema_pb2.FLOAT):
        return "JENSEN_SHANNON_DIVERGENCE"
    return None  # STRUCT / TYPE_UNKNOWN: TFDV has no distribution to compare


def set_drift_comparators(schema, bounds: dict[str, float]) -> dict[str, tuple[str, float]]:
    """Set (or, for bound 0, remove) each feature's drift comparator; these settings override any
    comparator a curated schema carries. Returns ``{feature: (measure, bound)}`` of the enabled ones."""
    enabled = {}
    for feature in schema.feature:
        feature.ClearField("drift_comparator")
        kind = comparator_kind(feature)
        bound = bounds.get(feature.name, 0.0)
        if kind is None or bound == 0:
            continue
        if kind == "L_INFTY":
            feature.drift_comparator.infinity_norm.threshold = bound
        else:
            feature.drift_comparator.jensen_shannon_divergence.threshold = bound
        enabled[feature.name] = (kind, bound)
    return enabled


# ----------------------------------------------------------------------------------------- anomalies


def collect_anomalies(split: str, anomalies) -> list[dict]:
    """One entry per reason TFDV gives (a feature can have several, e.g. shape and presence)."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    def entries(feature: str, info) -> list[dict]:
        if not info.reason:
            kind = info.short_description or "ANOMALY"
            return [{"split": split, "feature": feature, "kind": kind, "description": info.description}]
        return [
            {
                "split": split,
                "feature": feature,
                "kind": anomalies_pb2.AnomalyInfo.Type.Name(reason.type),
                "description": reason.description or reason.short_description or info.description,
            }
            for reason in info.reason
        ]

    found = []
    for feature in sorted(anomalies.anomaly_info):
        found += entries(feature, anomalies.anomaly_info[feature])
    if anomalies.HasField("dataset_anomaly_info"):
        found += entries(DATASET_LEVEL, anomalies.dataset_anomaly_info)
    return found


def drift_measurements(anomalies) -> dict[str, dict]:
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    drift = {}
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            drift[name] = {
                "measure": anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(measurement.type),
                "value": float(measurement.value),
                "threshold": float(measurement.threshold),
            }
    return drift


def format_error(anomalies: list[dict], schema_inferred: bool, schema_uri: str) -> str:
    splits = sorted({a["split"] for a in anomalies})
    lines = [
        f"data validation found {len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'} in {splits}:"
    ]
    lines += [f"{a['split']}: feature '{a['feature']}': {a['kind']}: {a['description']}" for a in anomalies]
    schema_hint = (
        "if these values are legitimate, curate the inferred schema (printed in this task's log) and pass "
        "it as schema_uri"
        if schema_inferred
        else f"if these values are legitimate, update the curated schema {schema_uri!r}"
    )
    lines.append(
        f"To proceed: fix the data, or {schema_hint}, "
        "or raise drift_threshold / set drift_thresholds for drifting features (0 disables drift checks)."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- reports


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def render_report(
    *,
    num_examples: dict[str, int],
    num_features: dict[str, int],
    schema_inferred: bool,
    schema_uri: str,
    target: str,
    drift_threshold: float,
    drift_thresholds: dict[str, float],
    drift: dict[str, dict],
    comparators: dict[str, tuple[str, float]],
    anomalies: list[dict],
) -> str:
    """The Markdown report of a validation run."""
    decision = "**passed**: no anomalies" if not anomalies else f"**failed**: {len(anomalies)} anomalies"
    out = ["# Data validation (TFDV)", "", f"Decision: {decision}.", "", "## Splits", ""]
    out += ["| split | rows | features |", "|---|---:|---:|"]
    out += [f"| {s} | {num_examples[s]} | {num_features[s]} |" for s in num_examples]
    out += ["", "## Schema", ""]
    if schema_inferred:
        out.append(
            f"Inferred from the {BASELINE_SPLIT} split (target `{target}`) and relaxed for a first run: "
            f"{RELAXATION_NOTE}. Review it (the `schema` output), curate it and pass it as `schema_uri`."
        )
    else:
        out.append(f"Curated schema from `{schema_uri}` (target `{target}`).")
    out += ["", f"## Drift ({DRIFT_SPLIT} vs {BASELINE_SPLIT})", ""]
    overrides = ", ".join(f"`{k}`: {v:g}" for k, v in sorted(drift_thresholds.items())) or "none"
    out.append(
        f"Default bound: {drift_threshold:g} (L-infinity distance for categorical features, approximate "
        f"Jensen-Shannon divergence for numeric ones; 0 disables). Per-feature bounds: {overrides}."
    )
    out.append("")
    if comparators:
        out += ["| feature | measure | value | bound | within |", "|---|---|---:|---:|---|"]
        for name, (kind, bound) in sorted(comparators.items()):
            measured = drift.get(name)
            value = _fmt(measured["value"]) if measured else "n/a"
            within = (
                "yes" if measured and measured["value"] <= bound else ("n/a" if not measured else "**no**")
            )
            out.append(f"| {name} | {kind} | {value} | {bound:g} | {within} |")
    else:
        out.append("Drift checks are disabled for every feature.")
    out += ["", "## Anomalies", ""]
    if anomalies:
        out += ["| split | feature | kind | description |", "|---|---|---|---|"]
        for a in anomalies:
            description = a["description"].replace("|", "\\|").replace("\n", " ")
            out.append(f"| {a['split']} | {a['feature']} | {a['kind']} | {description} |")
    else:
        out.append("No anomalies.")
    return "\n".join(out) + "\n"


def _feature_summary(stats, name: str) -> tuple[str, str, str]:
    """(type, missing %, summary) of feature ``name`` in one split's statistics."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    dataset = stats.datasets[0]
    for feature in dataset.features:
        if ".".join(feature.path.step) != name and feature.name != name:
            continue
        kind = statistics_pb2.FeatureNameStatistics.Type.Name(feature.type)
        if feature.HasField("num_stats"):
            common = feature.num_stats.common_stats
            s = feature.num_stats
            summary = f"mean {_fmt(s.mean)}, std {_fmt(s.std_dev)}, min {_fmt(s.min)}, max {_fmt(s.max)}"
        elif feature.HasField("string_stats"):
            common = feature.string_stats.common_stats
            top = ", ".join(html.escape(v.value) for v in feature.string_stats.top_values[:3])
            summary = f"{feature.string_stats.unique} unique; top: {top}"
        else:
            return kind, "", ""
        total = dataset.num_examples or 1
        return kind, f"{100.0 * common.num_missing / total:.1f}%", summary
    return "", "absent", ""


def render_html(
    train_stats, eval_stats, drift: dict[str, dict], comparators: dict[str, tuple[str, float]]
) -> str:
    """A self-contained summary table (works offline) followed by TFDV's Facets Overview of train vs eval.

    Facets loads its web components from cdnjs/GitHub, so it renders only where the browser can reach them.
    """
    from tensorflow_data_validation.utils import display_util

    names = [".".join(f.path.step) for f in train_stats.datasets[0].features]
    names += [n for n in (".".join(f.path.step) for f in eval_stats.datasets[0].features) if n not in names]
    rows = []
    for name in names:
        t_kind, t_missing, t_summary = _feature_summary(train_stats, name)
        _, e_missing, e_summary = _feature_summary(eval_stats, name)
        measured = drift.get(name)
        bound = comparators.get(name, (None, None))[1]
        drift_cell = f"{_fmt(measured['value'])} (bound {bound:g})" if measured else "not checked"
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{cell}</td>"
                for cell in (
                    html.escape(name),
                    t_kind,
                    t_missing,
                    t_summary,
                    e_missing,
                    e_summary,
                    drift_cell,
                )
            )
            + "</tr>"
        )
    n_train, n_eval = train_stats.datasets[0].num_examples, eval_stats.datasets[0].num_examples
    facets = display_util.get_statistics_html(
        lhs_statistics=train_stats, rhs_statistics=eval_stats, lhs_name="train", rhs_name="eval"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Statistics: train vs eval</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}</style></head><body>\n"
        f"<h2>Statistics: train ({n_train} rows) vs eval ({n_eval} rows)</h2>\n"
        "<table><tr><th>feature</th><th>type</th><th>train missing</th><th>train</th>"
        "<th>eval missing</th><th>eval</th><th>drift (eval vs train)</th></tr>\n"
        + "\n".join(rows)
        + "\n</table>\n<h2>Facets Overview</h2>\n"
        + facets
        + "\n</body></html>\n"
    )


# ----------------------------------------------------------------------------------------- the stage


def validate_splits(
    splits: dict[str, str],
    *,
    target: str,
    schema_uri: str = "",
    drift_threshold: float = 0.3,
    drift_thresholds: dict[str, float] | None = None,
    statistics_dir: str,
    schema_path: str,
    html_path: str,
    report_path: str,
) -> ValidationResult:
    """Validate the train/eval/test Parquet splits with TFDV; write outputs only if there is no anomaly.

    - statistics of every split (``statistics_dir/<split>.pb``, binary ``DatasetFeatureStatisticsList``);
    - the schema: ``schema_uri`` (text proto, local or http(s)/s3/gs), or inferred from train and relaxed
      for a first run (see ``relax_inferred_schema``); written with its drift comparators to ``schema_path``;
    - drift of eval against train, per feature (the target included): L-infinity distance for categorical
      features, approximate Jensen-Shannon divergence for numeric ones, bounded by ``drift_thresholds[f]``
      or ``drift_threshold`` (0 disables). These settings replace any comparator in a curated schema;
    - every split validated against the schema; any anomaly raises ``DataValidationError`` listing all
      of them, and nothing is written.
    """
    drift_thresholds = dict(drift_thresholds or {})
    missing = [s for s in (BASELINE_SPLIT, DRIFT_SPLIT) if s not in splits]
    if missing:
        raise ConfigError(f"validate_splits needs the splits {missing}; got {sorted(splits)}")
    if not target:
        raise ConfigError("target is empty: name the target column")

    frames = {name: read_split(name, path, target) for name, path in splits.items()}
    tfdv = _tfdv()

    statistics = {}
    for name, df in frames.items():
        statistics[name] = tfdv.generate_statistics_from_dataframe(df)
        log.info("%s split: %d rows, %d features", name, len(df), df.shape[1])
    num_examples = {name: int(statistics[name].datasets[0].num_examples) for name in frames}
    num_features = {name: frames[name].shape[1] for name in frames}

    schema_inferred = not schema_uri.strip()
    if schema_inferred:
        schema = tfdv.infer_schema(statistics[BASELINE_SPLIT])
        relax_inferred_schema(schema, target)
        log.info(
            "schema inferred from the %s split (%d features), relaxed: %s",
            BASELINE_SPLIT,
            len(schema.feature),
            RELAXATION_NOTE,
        )
    else:
        schema = load_schema(schema_uri)
        log.info("schema given: %s (%d features)", schema_uri, len(schema.feature))

    bounds = drift_bounds(schema, drift_threshold, drift_thresholds)
    comparators = set_drift_comparators(schema, bounds)
    disabled = sorted(set(bounds) - set(comparators))
    log.info(
        "drift (%s vs %s): default bound %g, overrides %s; checked: %d features, not checked: %s",
        DRIFT_SPLIT,
        BASELINE_SPLIT,
        drift_threshold,
        drift_thresholds or "none",
        len(comparators),
        disabled or "none",
    )

    anomalies: list[dict] = []
    drift: dict[str, dict] = {}
    for name in frames:
        previous = statistics[BASELINE_SPLIT] if name == DRIFT_SPLIT else None
        result = tfdv.validate_statistics(statistics[name], schema, previous_statistics=previous)
        found = collect_anomalies(name, result)
        if name == DRIFT_SPLIT:
            drift = drift_measurements(result)
            for feature, measured in sorted(drift.items()):
                log.info(
                    "drift %s: %s = %.4g (bound %g)",
                    feature,
                    measured["measure"],
                    measured["value"],
                    measured["threshold"],
                )
        log.info("%s split: %d anomalies", name, len(found))
        anomalies += found

    if anomalies:
        message = format_error(anomalies, schema_inferred, schema_uri)
        log.error("decision: FAIL, %d anomalies; nothing written\n%s", len(anomalies), message)
        if schema_inferred:
            log.info("inferred schema (text proto; curate it and pass it as schema_uri):\n%s", schema)
        raise DataValidationError(message, anomalies)

    report = render_report(
        num_examples=num_examples,
        num_features=num_features,
        schema_inferred=schema_inferred,
        schema_uri=schema_uri,
        target=target,
        drift_threshold=drift_threshold,
        drift_thresholds=drift_thresholds,
        drift=drift,
        comparators=comparators,
        anomalies=anomalies,
    )
    page = render_html(statistics[BASELINE_SPLIT], statistics[DRIFT_SPLIT], drift, comparators)
    with (
        atomic_dir(statistics_dir) as stats_tmp,
        atomic_file(schema_path) as schema_tmp,
        atomic_file(html_path) as html_tmp,
        atomic_file(report_path) as report_tmp,
    ):
        for name, stats in statistics.items():
            (stats_tmp / f"{name}.pb").write_bytes(stats.SerializeToString())
        tfdv.write_schema_text(schema, str(schema_tmp))
        Path(html_tmp).write_text(page, encoding="utf-8")
        Path(report_tmp).write_text(report, encoding="utf-8")
    log.info(
        "decision: PASS, no anomalies in %s; schema %s",
        list(frames),
        "inferred (curate it and pass it as schema_uri)" if schema_inferred else "as given",
    )
    return ValidationResult(
        anomalies=anomalies,
        schema_inferred=schema_inferred,
        num_examples=num_examples,
        num_features=num_features[BASELINE_SPLIT],
        drift=drift,
    )
