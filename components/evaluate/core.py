"""Evaluation: metrics on the held-out test split and the quality gate that decides deployment.

The gate blesses a model only when every configured threshold holds and, if a baseline model is
given, when the model is no worse than the baseline (within a tolerance) on each gated metric.
With no thresholds configured it refuses to bless.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from components.common.errors import InputDataError, ModelArtifactError
from components.common.io import REMOTE_SCHEMES, atomic_file, read_parquet, resolve_uri
from components.common.logs import get_logger
from components.common.metrics import classification_metrics, regression_metrics
from components.common.servable import ServableModel
from components.common.threads import fit_threads, limit
from components.config import METRIC_DIRECTIONS, check_thresholds

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


def gate(
    task: str,
    metrics: dict[str, float],
    thresholds: dict[str, float],
    baseline_metrics: dict[str, float] | None,
    tolerance: float,
) -> list[Check]:
    directions = METRIC_DIRECTIONS[task]
    if not thresholds:
        return [Check("thresholds", False, "no thresholds configured: the gate refuses to bless without any")]
    checks = []
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
            detail = f"{name} = {value:.4f} vs baseline {base:.4f} (tolerance {tolerance})"
            checks.append(Check(f"baseline:{name}", bool(ok), ("no worse: " if ok else "worse: ") + detail))
    return checks


def load_baseline(uri: str) -> ServableModel:
    path = resolve_uri(uri)
    if not path.startswith(REMOTE_SCHEMES):
        if not Path(path).exists():
            raise ModelArtifactError(f"baseline model {uri!r} does not exist")
        return ServableModel.load(path)
    import fsspec

    local = Path(tempfile.mkdtemp(prefix="baseline-"))
    try:
        fs, remote = fsspec.core.url_to_fs(path)
        fs.get(remote.rstrip("/") + "/", str(local), recursive=True)
        return ServableModel.load(local)
    except ModelArtifactError:
        raise
    except Exception as exc:
        raise ModelArtifactError(f"baseline model {uri!r} cannot be fetched: {exc}") from exc
    finally:
        shutil.rmtree(local, ignore_errors=True)


def evaluate(
    *,
    model_dir: str,
    test_path: str,
    thresholds: dict[str, float],
    baseline_model_uri: str = "",
    baseline_tolerance: float = 0.0,
    report_path: str,
) -> EvaluationResult:
    model = ServableModel.load(model_dir)
    task = model.task
    check_thresholds(task, thresholds)
    test = read_parquet(test_path)
    metrics, raw = score(model, test)
    log.info("test split (%d rows): %s", len(test), ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))

    baseline_metrics = None
    if baseline_model_uri:
        baseline = load_baseline(baseline_model_uri)
        if baseline.task != task or baseline.metadata["target"] != model.metadata["target"]:
            raise ModelArtifactError(
                f"baseline {baseline_model_uri!r} predicts {baseline.metadata['target']!r} ({baseline.task}), "
                f"the model predicts {model.metadata['target']!r} ({task}): they cannot be compared"
            )
        baseline_metrics, _ = score(baseline, test)
        log.info(
            "baseline on the same split: %s", ", ".join(f"{k}={v:.4f}" for k, v in baseline_metrics.items())
        )

    checks = gate(task, metrics, thresholds, baseline_metrics, baseline_tolerance)
    blessed = all(c.passed for c in checks)
    result = EvaluationResult(
        task=task,
        metrics=metrics,
        blessed=blessed,
        checks=checks,
        test_rows=len(test),
        baseline_metrics=baseline_metrics,
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
        tmp.write_text(render_report(result, model, baseline_model_uri))
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
        "| metric | model |" + (" baseline |" if result.baseline_metrics else ""),
    ]
    lines += ["|---|---|" + ("---|" if result.baseline_metrics else "")]
    for name, value in result.metrics.items():
        row = f"| {name} | {value:.4f} |"
        if result.baseline_metrics:
            row += f" {result.baseline_metrics[name]:.4f} |"
        lines.append(row)
    if baseline_uri:
        lines += ["", f"Baseline: `{baseline_uri}`."]
    if result.confusion_matrix:
        lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
        lines += ["| | " + " | ".join(result.classes) + " |", "|---|" + "---|" * len(result.classes)]
        for name, row in zip(result.classes, result.confusion_matrix, strict=True):
            lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
