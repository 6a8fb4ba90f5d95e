"""Training: model selection by cross-validation under a search budget, then one servable artifact."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import (
    KFold,
    ParameterSampler,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline

from components.common.errors import ConfigError
from components.common.logs import get_logger
from components.common.metrics import classification_metrics, regression_metrics
from components.common.servable import ServableModel
from components.common.threads import available_cpus, fit_threads, limit
from components.config import check_candidates
from components.train.search import Candidate, candidates_for
from components.transform.core import TransformSpec, load_matrix, load_preprocessor

log = get_logger("train")
SCORING = {"classification": "neg_log_loss", "regression": "neg_root_mean_squared_error"}


@dataclass
class Trial:
    number: int
    candidate: str
    params: dict[str, Any]
    cv_score: float
    seconds: float


@dataclass
class TrainResult:
    best: Trial
    trials: list[Trial]
    scoring: str
    eval_metrics: dict[str, float]
    search_rows: int
    train_rows: int
    stopped_by: str  # "max_trials" | "max_seconds"
    model_metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "best": asdict(self.best),
            "trials": len(self.trials),
            "scoring": self.scoring,
            "eval_metrics": self.eval_metrics,
            "stopped_by": self.stopped_by,
        }


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def _search_sample(
    x: np.ndarray, y: np.ndarray, task: str, rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if len(y) <= rows:
        return x, y
    stratify = y if task == "classification" else None
    x_s, _, y_s, _ = train_test_split(x, y, train_size=rows, random_state=seed, stratify=stratify)
    return x_s, y_s


def search(
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    candidates: list[Candidate],
    max_trials: int,
    max_seconds: float,
    cv_folds: int,
    seed: int,
) -> tuple[list[Trial], str]:
    """Random search, candidates taking turns, each trial scored by k-fold cross-validation.

    Stops after ``max_trials`` trials or once ``max_seconds`` have passed (checked before each trial;
    the first trial of every candidate always runs, so each family is scored at least once).
    With a trials budget only, the outcome is fully determined by ``seed``. Every fit runs on
    ``fit_threads()`` threads (one unless the user sets ``OMP_NUM_THREADS``; ``components.common.threads``).
    """
    scoring = SCORING[task]
    folds = (
        StratifiedKFold(cv_folds, shuffle=True, random_state=seed)
        if task == "classification"
        else KFold(cv_folds, shuffle=True, random_state=seed)
    )
    samplers = {
        c.name: iter(ParameterSampler(c.space, n_iter=max_trials, random_state=seed + i))
        for i, c in enumerate(candidates)
    }
    threads = fit_threads()
    log.info("%d thread(s) per fit (%d CPU(s) available)", threads, available_cpus())
    trials: list[Trial] = []
    start = time.perf_counter()
    stopped_by = "max_trials"
    for number in range(max_trials):
        candidate = candidates[number % len(candidates)]
        if number >= len(candidates) and time.perf_counter() - start > max_seconds:
            stopped_by = "max_seconds"
            break
        params = _jsonable(next(samplers[candidate.name]))
        began = time.perf_counter()
        with limit(threads):
            scores = cross_val_score(
                candidate.make(seed, **params), x, y, scoring=scoring, cv=folds, n_jobs=1
            )
        trial = Trial(number + 1, candidate.name, params, float(np.mean(scores)), time.perf_counter() - began)
        trials.append(trial)
        best = max(trials, key=lambda t: t.cv_score)
        log.info(
            "trial %d/%d %s cv %s=%.4f in %.1fs (best: trial %d %s %.4f)",
            trial.number,
            max_trials,
            candidate.name,
            scoring,
            trial.cv_score,
            trial.seconds,
            best.number,
            best.candidate,
            best.cv_score,
        )
    return trials, stopped_by


def target_summary(task: str, y: np.ndarray, classes: list) -> dict[str, Any]:
    """What the trivial model knows: class counts (it predicts their shares) or the mean (regression)."""
    if task == "classification":
        counts = np.bincount(y.astype(np.int64), minlength=len(classes))
        return {"class_counts": {str(c): int(n) for c, n in zip(classes, counts, strict=True)}}
    return {"mean": float(np.mean(y)), "std": float(np.std(y))}


def train(
    *,
    transformed_train_path: str,
    transformed_eval_path: str,
    transform_dir: str,
    candidates: list[str],
    max_trials: int,
    max_seconds: float,
    cv_folds: int,
    search_sample_rows: int,
    seed: int,
    model_dir: str,
    train_stats_path: str = "",
    schema_path: str = "",
) -> TrainResult:
    """Search, refit the winner on all train rows, and write the servable model to ``model_dir``.

    ``train_stats_path``/``schema_path``: validation's statistics of the train split and the schema; the
    model carries them (``train_stats.pb``, ``schema.pbtxt``) for the next run's drift check, batch
    prediction and monitoring.
    """
    spec = TransformSpec.load(transform_dir)
    task = spec.task
    check_candidates(task, candidates)
    pool = candidates_for(task, candidates)
    x_train, y_train, _ = load_matrix(transformed_train_path)
    x_eval, y_eval, _ = load_matrix(transformed_eval_path)
    if task == "classification":
        smallest = int(np.bincount(y_train.astype(np.int64)).min())
        if smallest < cv_folds:
            raise ConfigError(f"the rarest class has {smallest} train rows, fewer than cv_folds={cv_folds}")
    x_search, y_search = _search_sample(x_train, y_train, task, search_sample_rows, seed)
    log.info(
        "searching %s on %d of %d train rows (%d-fold CV, budget %d trials / %.0fs)",
        [c.name for c in pool],
        len(y_search),
        len(y_train),
        cv_folds,
        max_trials,
        max_seconds,
    )
    trials, stopped_by = search(
        x_search,
        y_search,
        task=task,
        candidates=pool,
        max_trials=max_trials,
        max_seconds=max_seconds,
        cv_folds=cv_folds,
        seed=seed,
    )
    best = max(trials, key=lambda t: t.cv_score)
    chosen = next(c for c in pool if c.name == best.candidate)
    log.info("best: %s %s; refitting on all %d train rows", best.candidate, best.params, len(y_train))
    with limit(fit_threads()):
        estimator = chosen.make(seed, **best.params).fit(x_train, y_train)
        if task == "classification":
            eval_metrics = classification_metrics(y_eval.astype(np.int64), estimator.predict_proba(x_eval))
        else:
            eval_metrics = regression_metrics(y_eval, estimator.predict(x_eval))
    log.info("eval split: %s", ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()))

    pipeline = Pipeline([("preprocess", load_preprocessor(transform_dir)), ("model", estimator)])
    model = ServableModel(
        pipeline=pipeline,
        metadata={
            "task": task,
            "target": spec.target,
            "features": spec.features,
            "classes": spec.classes,
            "model_inputs": spec.output_features,
            "framework": chosen.framework,
            "estimator": type(estimator).__name__,
            "candidate": best.candidate,
            "params": best.params,
            "cv_score": {SCORING[task]: best.cv_score},
            "eval_metrics": eval_metrics,
            "train_rows": int(len(y_train)),
            "target_summary": target_summary(task, y_train, spec.classes),
            "dropped_columns": spec.dropped_columns,
        },
    )
    carried = {
        name: path
        for name, path in (("train_stats.pb", train_stats_path), ("schema.pbtxt", schema_path))
        if path
    }
    meta = model.save(model_dir, files=carried)
    log.info("model artifact written: %s (sha256 %s)", model_dir, meta["sha256"]["model.joblib"][:12])
    return TrainResult(
        best=best,
        trials=trials,
        scoring=SCORING[task],
        eval_metrics=eval_metrics,
        search_rows=int(len(y_search)),
        train_rows=int(len(y_train)),
        stopped_by=stopped_by,
        model_metadata=meta,
    )


def track(tracker, result: TrainResult, *, params: dict) -> None:
    """Log training into the run: the search budget, every trial (a nested run each, and one table),
    the chosen model and its scores."""
    from components.registry.tracking import flatten

    tracker.log_params(params)
    tracker.log_params(
        {
            "chosen_candidate": result.best.candidate,
            **{f"chosen.{k}": v for k, v in result.best.params.items()},
        }
    )
    tracker.log_metrics(
        {
            f"cv_{result.scoring}": result.best.cv_score,
            "trials": len(result.trials),
            "search_rows": result.search_rows,
            "train_rows": result.train_rows,
            "search_seconds": sum(t.seconds for t in result.trials),
            **flatten("eval", result.eval_metrics),
        }
    )
    tracker.set_tags({"kfp_tabular.search_stopped_by": result.stopped_by})
    tracker.log_table(
        [
            {
                "trial": t.number,
                "candidate": t.candidate,
                f"cv_{result.scoring}": t.cv_score,
                "seconds": t.seconds,
                "params": json.dumps(t.params, sort_keys=True),
            }
            for t in result.trials
        ],
        "train/trials.json",
    )
    tracker.child_runs(
        (
            f"trial {t.number} {t.candidate}",
            {"candidate": t.candidate, **t.params},
            {f"cv_{result.scoring}": t.cv_score, "seconds": t.seconds},
        )
        for t in result.trials
    )
