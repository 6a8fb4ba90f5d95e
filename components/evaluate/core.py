"""Evaluation: metrics on the held-out test split and the quality gate that decides deployment.

The gate blesses a model only when it beats the trivial model (class shares / the train mean), every
threshold holds (the task's defaults when none are configured) and, when a champion serves (or an
explicit baseline is given), when the model is no worse than it (within a tolerance) on each gated
metric, both scored on the same new test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from components.common.champion import local_model_dir
from components.common.errors import InputDataError, ModelArtifactError
from components.common.io import atomic_file, read_parquet
from components.common.logs import get_logger
from components.common.metrics import classification_metrics, regression_metrics
from components.common.servable import ServableModel
from components.common.threads import fit_threads, limit
from components.config import DEFAULT_THRESHOLDS, METRIC_DIRECTIONS, check_thresholds

log = get_logger("evaluate")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class EvaluationResult:
    task: str
    metrics: dict[str, float]
    blessed: bool
    checks: list[Check]
    test_rows: int
    baseline_metrics: dict[str, float] | None = None
    confusion_matrix: list[list[int]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    roc_curve: dict[str, list[float]] = field(default_factory=dict)  # fpr, tpr, thresholds
    thresholds: dict[str, float] = field(default_factory=dict)  # the gate's, defaults resolved

    @property
    def reason(self) -> str:
        failed = [c.detail for c in self.checks if not c.passed]
        return "all checks passed" if self.blessed else "; ".join(failed)


def score(model: ServableModel, test: pd.DataFrame) -> tuple[dict[str, float], dict]:
    """Metrics of ``model`` on ``test`` plus the raw material for the confusion matrix and ROC."""
    y = test[model.metadata["target"]]
    if model.task == "regression":
        with limit(fit_threads()):
            predictions = model.predict(test)
        return regression_metrics(y.to_numpy(dtype=float), predictions), {}
    classes = model.classes
    index = {value: i for i, value in enumerate(classes)}
    unknown = sorted({str(v) for v in y.unique() if v not in index})
    if unknown:
        raise InputDataError(f"test split has classes {unknown} the model was not trained on")
    y_idx = y.map(index).to_numpy(dtype=np.int64)
    with limit(fit_threads()):
        proba = model.predict_proba(test)
    return classification_metrics(y_idx, proba), {"y": y_idx, "proba": proba}


def trivial_metrics(model: ServableModel, test: pd.DataFrame) -> dict[str, float] | None:
    """The test metrics of the trivial model (the train class shares for every row / the train mean);
    None for a model that does not record its training target (built before it did)."""
    summary = model.metadata.get("target_summary")
    if not summary:
        return None
    y = test[model.metadata["target"]]
    if model.task == "regression":
        return regression_metrics(y.to_numpy(dtype=float), np.full(len(y), summary["mean"]))
    counts = np.array([summary["class_counts"][str(c)] for c in model.classes], dtype=float)
    shares = np.clip(counts / counts.sum(), 1e-15, None)
    index = {value: i for i, value in enumerate(model.classes)}
    return classification_metrics(y.map(index).to_numpy(dtype=np.int64), np.tile(shares, (len(y), 1)))


# the metric the model must beat the trivial model on (strictly): proper scoring, any class balance
TRIVIAL_METRIC = {"classification": "log_loss", "regression": "rmse"}


def gate(
    task: str,
    metrics: dict[str, float],
    thresholds: dict[str, float],
    baseline_metrics: dict[str, float] | None,
    tolerance: float,
    trivial: dict[str, float] | None = None,
) -> list[Check]:
    """Every check of the gate: the model beats the trivial model, meets every threshold (the task's
    defaults when none are configured) and, with a champion, is no worse than it within ``tolerance``."""
    directions = METRIC_DIRECTIONS[task]
    thresholds = thresholds or DEFAULT_THRESHOLDS[task]
    checks = []
    if trivial is not None:
        name = TRIVIAL_METRIC[task]
        value, base = metrics[name], trivial[name]
        ok = value < base if directions[name] == "min" else value > base
        what = "class shares" if task == "classification" else "the train mean"
        checks.append(
            Check(
                f"trivial:{name}",
                bool(ok),
                f"{name} = {value:.4f} {'better than' if ok else 'not better than'} {base:.4f} of the trivial "
                f"model (predicting {what})",
            )
        )
    for name, bound in sorted(thresholds.items()):
        value = metrics[name]
        if directions[name] == "max":
            ok = value >= bound
            detail = f"{name} = {value:.4f} {'>=' if ok else '<'} {bound} (threshold)"
        else:
            ok = value <= bound
            detail = f"{name} = {value:.4f} {'<=' if ok else '>'} {bound} (threshold)"
        checks.append(Check(f"threshold:{name}", bool(ok and not math.isnan(value)), detail))
    if baseline_metrics is not None:
        for name in sorted(thresholds):
            value, base = metrics[name], baseline_metrics[name]
            ok = value >= base - tolerance if directions[name] == "max" else value <= base + tolerance
            detail = f"{name} = {value:.4f} vs champion {base:.4f} (tolerance {tolerance})"
            checks.append(Check(f"champion:{name}", bool(ok), ("no worse: " if ok else "worse: ") + detail))
    return checks


def load_champion(uri: str, tracking_uri: str = "") -> ServableModel:
    """The model to compare with; one that cannot be loaded (other package versions, a tampered file) is
    an error, never a silent pass."""
    with local_model_dir(uri, "champion model", tracking_uri) as directory:
        try:
            return ServableModel.load(directory)
        except ModelArtifactError as exc:
            raise ModelArtifactError(f"the champion {uri} cannot be compared with: {exc}") from exc


def evaluate(
    *,
    model_dir: str,
    test_path: str,
    thresholds: dict[str, float],
    champion_uri: str = "",
    baseline_tolerance: float = 0.0,
    tracking_uri: str = "",
    report_path: str,
) -> EvaluationResult:
    model = ServableModel.load(model_dir)
    task = model.task
    check_thresholds(task, thresholds)
    test = read_parquet(test_path)
    metrics, raw = score(model, test)
    log.info("test split (%d rows): %s", len(test), ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    baseline_metrics = None
    if champion_uri:
        baseline = load_champion(champion_uri, tracking_uri)
        if baseline.task != task or baseline.metadata["target"] != model.metadata["target"]:
            raise ModelArtifactError(
                f"the champion {champion_uri!r} predicts {baseline.metadata['target']!r} ({baseline.task}), "
                f"the model predicts {model.metadata['target']!r} ({task}): they cannot be compared"
            )
        lacking = [name for name in baseline.feature_names if name not in test.columns]
        if lacking:
            raise ModelArtifactError(
                f"the champion {champion_uri} takes features {lacking} that this run's data does not have, so "
                "the two cannot be scored on the same rows; to replace it anyway, set baseline_model_uri: none "
                "(the thresholds alone decide)"
            )
        baseline_metrics, _ = score(baseline, test)
        log.info(
            "champion %s on the same test split: %s",
            champion_uri,
            ", ".join(f"{k}={v:.4f}" for k, v in baseline_metrics.items()),
        )
    else:
        log.info("no champion to compare with: the thresholds alone decide")

    thresholds = thresholds or dict(DEFAULT_THRESHOLDS[task])
    log.info("gate thresholds: %s", thresholds)
    checks = gate(
        task, metrics, thresholds, baseline_metrics, baseline_tolerance, trivial_metrics(model, test)
    )
    blessed = all(c.passed for c in checks)
    result = EvaluationResult(
        task=task,
        metrics=metrics,
        blessed=blessed,
        checks=checks,
        test_rows=len(test),
        baseline_metrics=baseline_metrics,
        thresholds=thresholds,
    )
    if task == "classification":
        result.classes = [str(c) for c in model.classes]
        labels = np.arange(len(model.classes))
        result.confusion_matrix = skm.confusion_matrix(
            raw["y"], raw["proba"].argmax(axis=1), labels=labels
        ).tolist()
        result.roc_curve = roc_points(raw["y"], raw["proba"])
    for check in checks:
        log.info("gate %s: %s", "PASS" if check.passed else "FAIL", check.detail)
    log.info("decision: %s", "BLESSED" if blessed else f"NOT BLESSED ({result.reason})")
    with atomic_file(report_path) as tmp:
        tmp.write_text(render_report(result, model, champion_uri))
    return result


def roc_points(y: np.ndarray, proba: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    """Binary: the ROC of the positive class; multiclass: the micro-averaged one-vs-rest ROC."""
    if proba.shape[1] == 2:
        truth, scores = y == 1, proba[:, 1]
    else:
        truth = label_binarize(y, classes=np.arange(proba.shape[1])).ravel().astype(bool)
        scores = proba.ravel()
    if truth.all() or not truth.any():
        return {}
    fpr, tpr, thr = skm.roc_curve(truth, scores)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    thr = np.minimum(thr, 1.0)  # the first threshold is +inf, which JSON cannot carry
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}


def render_report(result: EvaluationResult, model: ServableModel, baseline_uri: str) -> str:
    verdict = (
        "**BLESSED**: the model may be deployed." if result.blessed else f"**NOT BLESSED**: {result.reason}."
    )
    lines = [
        "# Evaluation",
        "",
        verdict,
        "",
        f"Model: `{model.metadata.get('estimator')}` ({model.metadata.get('framework')}), "
        f"sha256 `{model.sha256[:16]}`; test split: {result.test_rows} rows.",
        "",
        "## Gate",
        "",
        "| check | result | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.detail} |" for c in result.checks]
    lines += [
        "",
        "## Test metrics",
        "",
        "| metric | this model |" + (" champion |" if result.baseline_metrics else ""),
    ]
    lines += ["|---|---|" + ("---|" if result.baseline_metrics else "")]
    for name, value in result.metrics.items():
        row = f"| {name} | {value:.4f} |"
        if result.baseline_metrics:
            row += f" {result.baseline_metrics[name]:.4f} |"
        lines.append(row)
    if baseline_uri:
        lines += ["", f"Champion (scored on the same test split): `{baseline_uri}`."]
    else:
        lines += ["", "No champion to compare with: the thresholds alone decide."]
    if result.confusion_matrix:
        lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
        lines += ["| | " + " | ".join(result.classes) + " |", "|---|" + "---|" * len(result.classes)]
        for name, row in zip(result.classes, result.confusion_matrix, strict=True):
            lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def track(tracker, result: EvaluationResult, *, params: dict, report_path: str) -> None:
    """Log evaluation into the run: the gate's settings, test metrics (and the champion's on the same
    split), the decision and the report."""
    from components.registry.tracking import flatten

    tracker.log_params({**params, "thresholds": result.thresholds})
    metrics = {**flatten("test", result.metrics), "blessed": float(result.blessed)}
    if result.baseline_metrics:
        metrics.update(flatten("champion_test", result.baseline_metrics))
    tracker.log_metrics(metrics)
    tracker.set_tags(
        {
            "kfp_tabular.decision": "BLESSED" if result.blessed else "NOT BLESSED",
            "kfp_tabular.reason": result.reason,
        }
    )
    tracker.log_file(report_path, "evaluate/report.md")
