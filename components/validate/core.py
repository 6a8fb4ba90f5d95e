"""Data validation with TensorFlow Data Validation (TFDV): statistics, schema, anomalies and drift.

``validate_splits`` checks a run's train/eval/test splits in three ways and either writes its four
outputs or raises ``DataValidationError`` listing every problem, writing nothing:

1. **the schema**: TFDV statistics of every split validated against a curated schema (``schema_uri``:
   types, presence, string and numeric domains; a curated ``float_domain`` catches a rescaled column)
   or, on a first run, one inferred from the whole table (written out to curate);
2. **within the run**: what a random split can really break, a class missing from a split. The
   distances between the splits are sampling noise, not drift: they are measured and reported as
   information and never stop a run;
3. **against the current model** (the champion, ``components/common/champion.py``): the training data
   is compared with the statistics of the data that model was trained on (stored in it as
   ``train_stats.pb``): a feature that changed kind, and per-feature drift beyond its bound that is
   statistically significant (``drift.py``), stop the run (``drift_action: stop``) or are reported
   (``drift_action: warn``).

TFDV (and with it TensorFlow, 10-17 s) is imported on first use, so importing this module is cheap.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.common.champion import local_model_dir
from components.common.errors import ConfigError, DataValidationError, InputDataError
from components.common.io import atomic_dir, atomic_file, fetch_bytes, read_table_metadata
from components.common.logs import get_logger
from components.validate import drift as drift_measures

log = get_logger("validate")

BASELINE_SPLIT = "train"  # the within-run reference, and what is compared with the champion's data
INDEX_COLUMN = re.compile(r"__index_level_\d+__")  # what pandas/pyarrow call a stored DataFrame index
DATASET_LEVEL = "(dataset)"  # the "feature" of an anomaly about a whole split (e.g. its row count)
TRAIN_STATS_FILE = "train_stats.pb"  # in a model directory: statistics of the data it was trained on
SCHEMA_FILE = "schema.pbtxt"  # in a model directory: the schema of that data
KIND_TAG = "kfp-tabular:kind="  # schema feature annotation carrying ingestion's column kind
MIN_DOMAIN_MASS = 0.99  # inferred string domains: up to 1% of values may be categories not seen here
NOT_COMPARED_KINDS = ("datetime",)  # time moves on: its values always "drift"

RELAXATION_NOTE = (
    "inferred from all rows of the table; non-target features: no minimum present fraction (missing "
    "values allowed), exactly one value where present (value_count 1..1 instead of a fixed shape), "
    f"categories outside the domain allowed for up to {100 * (1 - MIN_DOMAIN_MASS):g}% of values "
    "(min_domain_mass); datetime features have no domain; the target must be present in every row "
    "and is not expected in the SERVING environment"
)


@dataclass
class ValidationResult:
    """What validation found; ``anomalies`` is empty whenever ``validate_splits`` returns."""

    anomalies: list[dict]
    schema_inferred: bool
    num_examples: dict[str, int]
    num_features: int  # columns of the train split, target included
    # eval/test against train, per feature (information): Drift.as_dict()
    split_drift: dict[str, dict[str, dict]] = field(default_factory=dict)
    # the training data against the current model's: uri, drift per feature, changes of kind, warnings
    reference: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def drift(self) -> dict[str, dict]:
        """Drift against the current model's training data, per feature (empty on a first run)."""
        return self.reference.get("drift", {})


def _tfdv():
    # TensorFlow's C++ start-up messages (CUDA plugin registration and the like) say nothing about the data
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import sys

    if "tensorflow_data_validation" in sys.modules:
        return sys.modules["tensorflow_data_validation"]
    import io

    captured, stderr = io.StringIO(), sys.stderr
    sys.stderr = captured  # protobuf 6 and an absent IPython make TFDV's import print noise there
    try:
        import tensorflow_data_validation as tfdv
    finally:
        sys.stderr = stderr
    for line in captured.getvalue().splitlines():
        if line.strip() and not _IMPORT_NOISE.search(line):
            log.warning("TFDV import: %s", line)
    return tfdv


# Lines TFDV 1.16's import prints under the locked versions that mean nothing for validation:
# protobuf 6 dropped MessageFactory.GetPrototype (TensorFlow probes it, then uses the newer API), and
# the notebook visualization needs IPython, which the pipeline does not use.
_IMPORT_NOISE = re.compile(
    r"MessageFactory' object has no attribute 'GetPrototype'|Unable to import IPython|TFDV visualization APIs"
)


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


def relax_inferred_schema(schema, target: str, kinds: dict[str, str] | None = None) -> None:
    """Make a schema inferred from one table fit for validating it and the data that follows (in place).

    TFDV infers ``presence.min_fraction: 1`` and a fixed ``shape`` for every feature that had no missing
    value, and a string domain that admits no other value. For every feature but the target: no minimum
    present fraction, ``value_count {min: 1 max: 1}`` instead of ``shape`` (one value where present), and
    ``distribution_constraints.min_domain_mass`` so a few rare new categories are not anomalies (a renamed
    or new frequent one still is). Datetime features lose their domain (new dates are not anomalies).
    The target must be present in every row, in the TRAINING environment only (SERVING data has none).
    Each feature is tagged with its kind from ingestion (``kfp-tabular:kind=...``).
    """
    kinds = kinds or {}
    schema.ClearField("default_environment")
    schema.default_environment.extend(["TRAINING", "SERVING"])
    for feature in schema.feature:
        kind = "target" if feature.name == target else kinds.get(feature.name)
        if kind:
            tag_kind(feature, kind)
        if feature.name == target:
            feature.presence.min_fraction = 1.0
            feature.presence.min_count = max(feature.presence.min_count, 1)
            feature.ClearField("not_in_environment")
            feature.not_in_environment.append("SERVING")
            continue
        feature.presence.ClearField("min_fraction")
        feature.presence.min_count = 0
        if feature.HasField("shape"):
            feature.ClearField("shape")
            feature.value_count.min = 1
            feature.value_count.max = 1
        if kind in NOT_COMPARED_KINDS and feature.WhichOneof("domain_info") == "domain":
            feature.ClearField("domain")
        elif feature.WhichOneof("domain_info") in ("domain", "string_domain"):
            feature.distribution_constraints.min_domain_mass = MIN_DOMAIN_MASS
    used = {f.domain for f in schema.feature if f.WhichOneof("domain_info") == "domain"}
    kept = [d for d in schema.string_domain if d.name in used]
    del schema.string_domain[:]
    schema.string_domain.extend(kept)


def tag_kind(feature, kind: str) -> None:
    tags = [t for t in feature.annotation.tag if not t.startswith(KIND_TAG)]
    del feature.annotation.tag[:]
    feature.annotation.tag.extend([*tags, KIND_TAG + kind])


def schema_kinds(schema) -> dict[str, str]:
    """``{feature: kind}`` from the schema's ``kfp-tabular:kind=`` tags."""
    kinds = {}
    for feature in schema.feature:
        for tag in feature.annotation.tag:
            if tag.startswith(KIND_TAG):
                kinds[feature.name] = tag.removeprefix(KIND_TAG)
    return kinds


def drift_bounds(
    names: list[str], drift_threshold: float, drift_thresholds: dict[str, float] | None
) -> dict[str, float]:
    """The drift bound of every feature: the override if any, else ``drift_threshold`` (0 disables)."""
    overrides = dict(drift_thresholds or {})
    for name, bound in [("drift_threshold", drift_threshold), *overrides.items()]:
        if (
            not isinstance(bound, int | float)
            or isinstance(bound, bool)
            or not math.isfinite(bound)
            or bound < 0
        ):
            raise ConfigError(f"drift bound for {name!r} must be a number >= 0 (0 disables), not {bound!r}")
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ConfigError(f"drift_thresholds names features not in the data: {unknown}; features: {names}")
    return {name: float(overrides.get(name, drift_threshold)) for name in names}


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


def format_error(anomalies: list[dict], schema_inferred: bool, schema_uri: str) -> str:
    splits = sorted({a["split"] for a in anomalies})
    lines = [
        f"data validation found {len(anomalies)} problem{'' if len(anomalies) == 1 else 's'} in {splits}:"
    ]
    lines += [f"{a['split']}: feature '{a['feature']}': {a['kind']}: {a['description']}" for a in anomalies]
    hints = []
    if any(a["kind"] in ("DRIFT", "KIND_CHANGED") for a in anomalies):
        hints.append(
            "if the change is real and intended, raise drift_threshold / set drift_thresholds for those "
            "features (0 disables), or set drift_action: warn"
        )
    if any(a["kind"] not in ("DRIFT", "KIND_CHANGED", "CLASS_MISSING") for a in anomalies):
        hints.append(
            "if these values are legitimate, curate the inferred schema (printed in this task's log) and pass "
            "it as schema_uri"
            if schema_inferred
            else f"if these values are legitimate, update the curated schema {schema_uri!r}"
        )
    lines.append("To proceed: fix the data" + "".join(f"; or, {h}" for h in hints) + ".")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- comparisons


def missing_classes(frames: dict[str, pd.DataFrame], target: str) -> list[dict]:
    """A class of the whole table that one split lacks: the one thing a random split can break."""
    classes = set()
    for df in frames.values():
        classes |= set(df[target].dropna().astype(str))
    found = []
    for name, df in frames.items():
        lacking = sorted(classes - set(df[target].dropna().astype(str)))
        if lacking:
            found.append(
                {
                    "split": name,
                    "feature": target,
                    "kind": "CLASS_MISSING",
                    "description": f"the {name} split has no rows of class(es) {lacking}; more rows of them, "
                    "or larger eval_fraction/test_fraction, give every split some",
                }
            )
    return found


def split_drift(stats, frames: dict[str, pd.DataFrame], kinds: dict[str, str], target: str) -> dict:
    """eval and test against train, every feature (information only: a random split cannot drift)."""
    reference = drift_measures.stats_features(stats[BASELINE_SPLIT])
    n = int(stats[BASELINE_SPLIT].datasets[0].num_examples)
    result = {}
    for name, df in frames.items():
        if name == BASELINE_SPLIT:
            continue
        measured = {}
        for feature in df.columns:
            if feature in reference and kinds.get(feature) not in NOT_COMPARED_KINDS:
                d = drift_measures.measure(feature, reference[feature], df[feature], n, 0.0)
                if d is not None:
                    measured[feature] = d.as_dict()
        result[name] = measured
    return result


def compare_with_reference(
    reference_uri: str,
    train: pd.DataFrame,
    kinds: dict[str, str],
    *,
    target: str,
    drift_threshold: float,
    drift_thresholds: dict[str, float],
    tracking_uri: str = "",
) -> tuple[dict, list[dict]]:
    """The training data against the statistics of the data the current model was trained on.

    Returns (the comparison for the report, problems). Problems: a feature whose kind changed, and
    drift beyond its bound that is significant. A model without stored statistics (built before they
    were stored) is reported and not compared.
    """
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from components.common.servable import read_metadata

    with local_model_dir(reference_uri, "current model", tracking_uri) as directory:
        meta = read_metadata(directory)
        stats_file = directory / TRAIN_STATS_FILE
        if not stats_file.is_file():
            message = (
                f"the current model {reference_uri} carries no training statistics ({TRAIN_STATS_FILE}); "
                "drift against its data is not checked this time"
            )
            return {"uri": reference_uri, "compared": False, "note": message}, []
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(stats_file.read_bytes())
    old_kinds = {f["name"]: f["kind"] for f in meta.get("features", [])}
    old_kinds.update({name: t["kind"] for name, t in (meta.get("column_types") or {}).items()})
    reference = drift_measures.stats_features(stats)
    n = int(stats.datasets[0].num_examples)
    features = [c for c in train.columns if c != target]
    problems: list[dict] = []
    kind_changes = {}
    for name, old in sorted(old_kinds.items()):
        new = kinds.get(name)  # None: not in this table at all (reported below, not a change of kind)
        if new is not None and new != old and name != target:
            kind_changes[name] = (old, new)
            problems.append(
                {
                    "split": BASELINE_SPLIT,
                    "feature": name,
                    "kind": "KIND_CHANGED",
                    "description": f"was {old} in the data the current model was trained on, is {new} now"
                    + (" (see the ingest log for why)" if new in ("id", "text") else ""),
                }
            )
    bounds = drift_bounds(features, drift_threshold, drift_thresholds)
    drift = {}
    for name in features:
        if name not in reference or name in kind_changes or kinds.get(name) in NOT_COMPARED_KINDS:
            continue
        d = drift_measures.measure(name, reference[name], train[name], n, bounds[name])
        if d is None:
            continue
        drift[name] = d.as_dict()
        if d.drifted:
            problems.append(
                {
                    "split": BASELINE_SPLIT,
                    "feature": name,
                    "kind": "DRIFT",
                    "description": f"{d.measure} {d.value:.3g} > bound {d.bound:g} against the current model's "
                    f"training data (p = {d.p_value:.1e}); {d.detail}",
                }
            )
    comparison = {
        "uri": reference_uri,
        "compared": True,
        "reference_rows": n,
        "model_sha256": (meta.get("sha256") or {}).get("model.joblib", ""),
        "drift": drift,
        "kind_changes": {k: list(v) for k, v in kind_changes.items()},
        "new_features": sorted(set(features) - set(old_kinds)),
        "missing_features": sorted(set(old_kinds) - set(features) - set(kind_changes) - {target}),
    }
    return comparison, problems


# ----------------------------------------------------------------------------------------- reports


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report(
    *,
    num_examples: dict[str, int],
    num_features: dict[str, int],
    schema_inferred: bool,
    schema_uri: str,
    target: str,
    kinds: dict[str, str],
    split_measures: dict[str, dict[str, dict]],
    reference: dict,
    drift_action: str,
    warnings: list[str],
) -> str:
    """The Markdown report of a validation run (written only when it passes)."""
    out = ["# Data validation (TFDV)", "", "Decision: **passed**.", "", "## Splits", ""]
    out += ["| split | rows | features |", "|---|---:|---:|"]
    out += [f"| {s} | {num_examples[s]} | {num_features[s]} |" for s in num_examples]
    out += ["", "## Schema", ""]
    if schema_inferred:
        out.append(
            f"Inferred ({RELAXATION_NOTE}). Review it (the `schema` output), curate it (add numeric ranges "
            "as `float_domain`/`int_domain`, tighten domains) and pass it as `schema_uri`."
        )
    else:
        out.append(f"Curated schema from `{schema_uri}` (target `{target}`).")
    if kinds:
        out += ["", "| feature | kind |", "|---|---|"]
        out += [f"| {name} | {kind} |" for name, kind in kinds.items()]
    out += ["", "## Against the current model's training data", ""]
    if not reference:
        out.append("No current model (a first run): nothing to compare with.")
    elif not reference.get("compared"):
        out.append(reference["note"] + ".")
    else:
        out.append(
            f"Current model: `{reference['uri']}` (trained on {reference['reference_rows']} rows). A feature "
            f"drifts when its measure exceeds its bound and the change is significant (p < {drift_measures.ALPHA:g}); "
            f"drift_action: {drift_action}."
        )
        for label, key in (
            ("New features", "new_features"),
            ("Features no longer present", "missing_features"),
        ):
            if reference.get(key):
                out.append(f"{label}: {', '.join(reference[key])}.")
        if reference.get("kind_changes"):
            out.append(
                "Changed kind: "
                + ", ".join(f"{k} ({a} -> {b})" for k, (a, b) in reference["kind_changes"].items())
                + "."
            )
        out += [
            "",
            "| feature | measure | value | bound | p | drifted | what moved most |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        for name, d in sorted(reference["drift"].items()):
            out.append(
                f"| {name} | {d['measure']} | {_fmt(d['value'])} | {d['bound']:g} | {d['p_value']:.1e} | "
                f"{'**yes**' if d['drifted'] else 'no'} | {_md(d['detail'])} |"
            )
    out += ["", f"## Within this run ({', '.join(split_measures)} against {BASELINE_SPLIT})", ""]
    out.append(
        "Information only: the splits are drawn at random from one table, so these distances are sampling "
        "noise and never stop a run."
    )
    for split, measured in split_measures.items():
        out += ["", f"| feature | {split}: measure | value | what moved most |", "|---|---|---:|---|"]
        out += [
            f"| {n} | {d['measure']} | {_fmt(d['value'])} | {_md(d['detail'])} |"
            for n, d in sorted(measured.items())
        ]
    if warnings:
        out += ["", "## Warnings", ""] + [f"- {_md(w)}" for w in warnings]
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
    train_stats, eval_stats, eval_drift: dict[str, dict], reference_drift: dict[str, dict]
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
        within = eval_drift.get(name)
        against = reference_drift.get(name)
        cells = (
            html.escape(name),
            t_kind,
            t_missing,
            t_summary,
            e_missing,
            e_summary,
            _fmt(within["value"]) if within else "not measured",
            f"{_fmt(against['value'])} (bound {against['bound']:g})" if against else "no current model",
        )
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
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
        "<th>eval missing</th><th>eval</th><th>eval vs train (sampling noise)</th>"
        "<th>drift vs the current model's data</th></tr>\n"
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
    drift_threshold: float = 0.2,
    drift_thresholds: dict[str, float] | None = None,
    drift_action: str = "stop",
    reference_model_uri: str = "",
    tracking_uri: str = "",
    statistics_dir: str,
    schema_path: str,
    html_path: str,
    report_path: str,
) -> ValidationResult:
    """Validate the train/eval/test Parquet splits; write outputs only if nothing stops the run.

    - statistics of every split (``statistics_dir/<split>.pb``, binary ``DatasetFeatureStatisticsList``);
    - the schema: ``schema_uri`` (text proto, local or http(s)/s3/gs), or inferred from all rows and
      relaxed (see ``relax_inferred_schema``), written to ``schema_path``;
    - every split validated against the schema; a class missing from a split;
    - eval/test against train measured (information); the train split against the statistics of the data
      ``reference_model_uri`` was trained on (``drift_threshold``/``drift_thresholds``, ``drift_action``).
    Problems raise ``DataValidationError`` listing all of them, and nothing is written.
    """
    drift_thresholds = dict(drift_thresholds or {})
    if BASELINE_SPLIT not in splits:
        raise ConfigError(f"validate_splits needs the {BASELINE_SPLIT} split; got {sorted(splits)}")
    if not target:
        raise ConfigError("target is empty: name the target column")
    if drift_action not in ("stop", "warn"):
        raise ConfigError(f"drift_action must be 'stop' or 'warn', not {drift_action!r}")

    frames = {name: read_split(name, path, target) for name, path in splits.items()}
    table_meta = read_table_metadata(splits[BASELINE_SPLIT])
    kinds = {name: t["kind"] for name, t in (table_meta.get("column_types") or {}).items()}
    for name, col in frames[BASELINE_SPLIT].items():  # a table typed elsewhere: the kind its dtype implies
        if name != target and name not in kinds:
            numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
            kinds[name] = "numeric" if numeric else "categorical"
    task = table_meta.get("task", "")
    drift_bounds(
        [c for c in frames[BASELINE_SPLIT].columns if c != target], drift_threshold, drift_thresholds
    )
    tfdv = _tfdv()

    statistics = {}
    for name, df in frames.items():
        statistics[name] = tfdv.generate_statistics_from_dataframe(df)
        log.info("%s split: %d rows, %d columns", name, len(df), df.shape[1])
    num_examples = {name: int(statistics[name].datasets[0].num_examples) for name in frames}
    num_features = {name: frames[name].shape[1] for name in frames}

    schema_inferred = not schema_uri.strip()
    if schema_inferred:
        whole = pd.concat(list(frames.values()), ignore_index=True)
        schema = tfdv.infer_schema(tfdv.generate_statistics_from_dataframe(whole))
        relax_inferred_schema(schema, target, kinds)
        log.info("schema inferred from all %d rows (%d features)", len(whole), len(schema.feature))
    else:
        schema = load_schema(schema_uri)
        log.info("schema given: %s (%d features)", schema_uri, len(schema.feature))
        kinds = {**schema_kinds(schema), **kinds}
    environment = "TRAINING" if "TRAINING" in schema.default_environment else None

    problems: list[dict] = []
    for name in frames:
        result = tfdv.validate_statistics(statistics[name], schema, environment=environment)
        found = collect_anomalies(name, result)
        log.info("%s split: %d anomalies against the schema", name, len(found))
        problems += found
    if task == "classification" or (not task and frames[BASELINE_SPLIT][target].dtype == object):
        problems += missing_classes(frames, target)

    within = split_drift(statistics, frames, kinds, target)
    for split, measured in within.items():
        largest = max(measured.items(), key=lambda kv: kv[1]["value"], default=None)
        if largest:
            log.info(
                "%s vs %s (sampling noise, information only): largest %s %s = %.3g",
                split,
                BASELINE_SPLIT,
                largest[0],
                largest[1]["measure"],
                largest[1]["value"],
            )

    reference: dict = {}
    warnings: list[str] = []
    if reference_model_uri:
        log.info("comparing the training data with that of the current model %s", reference_model_uri)
        reference, found = compare_with_reference(
            reference_model_uri,
            frames[BASELINE_SPLIT],
            kinds,
            target=target,
            drift_threshold=drift_threshold,
            drift_thresholds=drift_thresholds,
            tracking_uri=tracking_uri,
        )
        if not reference.get("compared"):
            warnings.append(reference["note"])
            log.warning("%s", reference["note"])
        for name, d in sorted(reference.get("drift", {}).items()):
            log.info(
                "drift %s against the current model's data: %s = %.3g (bound %g, p %.1e)%s",
                name,
                d["measure"],
                d["value"],
                d["bound"],
                d["p_value"],
                " DRIFTED" if d["drifted"] else "",
            )
        if found and drift_action == "warn":
            for problem in found:
                text = f"{problem['feature']}: {problem['kind']}: {problem['description']}"
                warnings.append(text)
                log.warning("drift_action warn, going on: %s", text)
        else:
            problems += found
    else:
        log.info("no current model to compare the training data with (first run)")

    if problems:
        message = format_error(problems, schema_inferred, schema_uri)
        log.error("decision: FAIL, %d problems; nothing written\n%s", len(problems), message)
        if schema_inferred:
            log.info("inferred schema (text proto; curate it and pass it as schema_uri):\n%s", schema)
        raise DataValidationError(message, problems)

    report = render_report(
        num_examples=num_examples,
        num_features=num_features,
        schema_inferred=schema_inferred,
        schema_uri=schema_uri,
        target=target,
        kinds=kinds,
        split_measures=within,
        reference=reference,
        drift_action=drift_action,
        warnings=warnings,
    )
    other = next((n for n in frames if n != BASELINE_SPLIT), BASELINE_SPLIT)
    page = render_html(
        statistics[BASELINE_SPLIT], statistics[other], within.get(other, {}), reference.get("drift", {})
    )
    with (
        atomic_dir(statistics_dir) as stats_tmp,
        atomic_file(schema_path) as schema_tmp,
        atomic_file(html_path) as html_tmp,
        atomic_file(report_path) as report_tmp,
    ):
        for name, stats in statistics.items():
            (stats_tmp / f"{name}.pb").write_bytes(stats.SerializeToString())
        (stats_tmp / "validation.json").write_text(
            json.dumps(
                {"split_drift": within, "reference": reference, "warnings": warnings},
                indent=2,
                sort_keys=True,
            )
        )
        tfdv.write_schema_text(schema, str(schema_tmp))
        Path(html_tmp).write_text(page, encoding="utf-8")
        Path(report_tmp).write_text(report, encoding="utf-8")
    log.info(
        "decision: PASS, no problems in %s; schema %s",
        list(frames),
        "inferred (curate it and pass it as schema_uri)" if schema_inferred else "as given",
    )
    return ValidationResult(
        anomalies=[],
        schema_inferred=schema_inferred,
        num_examples=num_examples,
        num_features=num_features[BASELINE_SPLIT],
        split_drift=within,
        reference=reference,
        warnings=warnings,
    )


def track(tracker, result: ValidationResult, *, params: dict, outputs: dict[str, str]) -> None:
    """Log validation into the run: its settings, drift against the current model's data (one metric per
    feature), the reports and the schema (with its hash)."""
    from components.common.io import sha256_file
    from components.registry.tracking import flatten

    tracker.log_params(params)
    metrics = {"anomalies": len(result.anomalies), "warnings": len(result.warnings)}
    metrics.update(flatten("drift", {name: d["value"] for name, d in result.drift.items()}))
    for split, measured in result.split_drift.items():
        if measured:
            metrics[f"split_noise.{split}.max"] = max(d["value"] for d in measured.values())
    tracker.log_metrics(metrics)
    tracker.set_tags(
        {
            "kfp_tabular.schema_sha256": sha256_file(outputs["schema"]),
            "kfp_tabular.schema_inferred": str(result.schema_inferred).lower(),
            "kfp_tabular.drift_reference": result.reference.get("uri", "none"),
        }
    )
    tracker.log_file(outputs["schema"], "validate/schema.pbtxt")
    tracker.log_file(outputs["html"], "validate/statistics.html")
    tracker.log_file(outputs["report"], "validate/report.md")
    tracker.log_file(str(Path(outputs["statistics"]) / "validation.json"), "validate/validation.json")
