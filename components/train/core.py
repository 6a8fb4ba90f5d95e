"""Training: model selection by cross-validation under a search budget, then one servable artifact."""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from components.common.errors import ConfigError
from components.common.logs import get_logger
from components.common.metrics import classification_metrics, regression_metrics
from components.common.servable import ServableModel
from components.common.threads import available_cpus, fit_threads, limit
from components.config import check_candidates
from components.train.search import Candidate, OutOfTime, candidates_for, fit, fit_fold, suggest
from components.transform.core import TransformSpec, load_matrix, load_preprocessor

log = get_logger("train")
SCORING = {"classification": "neg_log_loss", "regression": "neg_root_mean_squared_error"}


@dataclass
class Trial:
    number: int
    candidate: str
    params: dict[str, Any]
    cv_score: float  # mean over the folds run (all of them unless pruned)
    seconds: float
    state: str = "complete"  # "complete" | "pruned" (stopped after a fold: never chosen)


@dataclass
class TrainResult:
    best: Trial
    trials: list[Trial]
    scoring: str
    eval_metrics: dict[str, float]
    search_rows: int
    train_rows: int
    stopped_by: str  # "max_trials" | "max_seconds"
    search_seconds: float = 0.0
    model_metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "best": asdict(self.best),
            "trials": len(self.trials),
            "scoring": self.scoring,
            "eval_metrics": self.eval_metrics,
            "stopped_by": self.stopped_by,
            "search_seconds": round(self.search_seconds, 3),
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
    """Optuna's TPE sampler (seeded) over the families and their parameters, each trial scored by k-fold
    cross-validation, unpromising trials pruned after a fold (those in the worst quarter of the trials at
    that fold), boosting rounds chosen by
    early stopping per fold.

    The first trials are each family's defaults (``Candidate.first_params``), in the order given; then the
    sampler proposes, favouring what scored well, so the families do not take equal turns. Stops after
    ``max_trials`` trials or at ``max_seconds``: a fit that passes the deadline is cut within one
    boosting round (XGBoost) or ``HGB_CHUNK`` rounds (histogram gradient boosting) and its trial dropped, so the search ends within
    ``max_seconds`` plus about one such step. The first trial is never cut, so there is always a model.
    With a trials budget only, the outcome is fully determined by ``seed``. Every fit runs on
    ``fit_threads()`` threads (one unless the user sets ``OMP_NUM_THREADS``; ``components.common.threads``).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # multivariate TPE over conditional spaces (group=True) is marked experimental in Optuna 5.0
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    scorer = get_scorer(SCORING[task])
    folds = list(
        (
            StratifiedKFold(cv_folds, shuffle=True, random_state=seed)
            if task == "classification"
            else KFold(cv_folds, shuffle=True, random_state=seed)
        ).split(x, y)
    )
    by_name = {c.name: c for c in candidates}
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=len(candidates), multivariate=True, group=True
        ),
        pruner=optuna.pruners.PercentilePruner(75.0, n_startup_trials=len(candidates), n_warmup_steps=0),
    )
    for c in candidates[:max_trials]:
        study.enqueue_trial(
            {"candidate": c.name, **{f"{c.name}.{k}": v for k, v in c.first_params().items()}}
        )
    threads = fit_threads()
    log.info("%d thread(s) per fit (%d CPU(s) available)", threads, available_cpus())
    trials: list[Trial] = []
    start = time.perf_counter()
    deadline = start + max_seconds
    stopped_by = "max_trials"
    for number in range(1, max_trials + 1):
        if number > 1 and time.perf_counter() > deadline:
            stopped_by = "max_seconds"
            break
        proposal = study.ask()
        candidate = by_name[proposal.suggest_categorical("candidate", list(by_name))]
        params = _jsonable(suggest(proposal, candidate))
        began, scores, rounds, state = time.perf_counter(), [], [], "complete"
        try:
            with limit(threads):
                for step, (fit_rows, out_rows) in enumerate(folds):
                    score, best_rounds = fit_fold(
                        candidate,
                        params,
                        seed,
                        (x[fit_rows], y[fit_rows]),
                        (x[out_rows], y[out_rows]),
                        scorer,
                        deadline if number > 1 else math.inf,
                    )
                    scores.append(score)
                    rounds.append(best_rounds)
                    proposal.report(float(np.mean(scores)), step)
                    if step < len(folds) - 1 and proposal.should_prune():
                        state = "pruned"
                        break
        except OutOfTime:
            study.tell(proposal, state=optuna.trial.TrialState.FAIL)
            stopped_by = "max_seconds"
            log.info(
                "trial %d/%d %s cut at the time budget (%.0fs) after %.1fs; search stopped",
                number,
                max_trials,
                candidate.name,
                max_seconds,
                time.perf_counter() - began,
            )
            break
        if candidate.rounds and rounds:
            params[candidate.rounds] = max(1, round(float(np.mean(rounds))))
        trial = Trial(
            number, candidate.name, params, float(np.mean(scores)), time.perf_counter() - began, state
        )
        trials.append(trial)
        if state == "pruned":
            study.tell(proposal, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(proposal, trial.cv_score)
        best = max((t for t in trials if t.state == "complete"), key=lambda t: t.cv_score)
        log.info(
            "trial %d/%d %s%s cv %s=%.4f in %.1fs%s (best: trial %d %s %.4f)",
            trial.number,
            max_trials,
            candidate.name,
            "" if state == "complete" else f" pruned after {len(scores)} of {len(folds)} folds,",
            SCORING[task],
            trial.cv_score,
            trial.seconds,
            f", {candidate.rounds}={params[candidate.rounds]}" if candidate.rounds else "",
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
    searching = time.perf_counter()
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
    search_seconds = time.perf_counter() - searching
    best = max((t for t in trials if t.state == "complete"), key=lambda t: t.cv_score)
    log.info(
        "search: %d trials (%d pruned) in %.1fs, stopped by %s",
        len(trials),
        sum(t.state == "pruned" for t in trials),
        search_seconds,
        stopped_by,
    )
    chosen = next(c for c in pool if c.name == best.candidate)
    log.info("best: %s %s; refitting on all %d train rows", best.candidate, best.params, len(y_train))
    with limit(fit_threads()):
        estimator = fit(chosen.make(seed, **best.params), chosen, best.params, x_train, y_train)
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
        search_seconds=search_seconds,
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
            "search_seconds": result.search_seconds,
            "pruned_trials": sum(t.state == "pruned" for t in result.trials),
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
                "state": t.state,
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
