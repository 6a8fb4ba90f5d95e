"""Training: model selection by cross-validation under a search budget, then one servable artifact."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from components.common.ensemble import WeightedEnsemble, better, select
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
    # out-of-fold predictions of a complete trial (what ensemble selection works on); not recorded
    oof: np.ndarray | None = field(default=None, repr=False, compare=False)

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "oof"}


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
    ensemble: list[dict[str, Any]] | None = None  # the members (trial, candidate, weight) when chosen
    model_bytes: int = 0
    model_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def cv_score(self) -> float:
        """The chosen model's cross-validated score: the best trial's, or the ensemble's out of fold."""
        return float(self.model_metadata.get("cv_score", {}).get(self.scoring, self.best.cv_score))

    def summary(self) -> dict[str, Any]:
        return {
            "best": self.best.record(),
            "trials": len(self.trials),
            "scoring": self.scoring,
            "eval_metrics": self.eval_metrics,
            "stopped_by": self.stopped_by,
            "search_seconds": round(self.search_seconds, 3),
            "ensemble": self.ensemble,
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
        oof = None
        try:
            with limit(threads):
                for step, (fit_rows, out_rows) in enumerate(folds):
                    score, best_rounds, predicted = fit_fold(
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
                    if oof is None:
                        oof = np.zeros((len(y), *predicted.shape[1:]), dtype=np.float64)
                    oof[out_rows] = predicted
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
            number,
            candidate.name,
            params,
            float(np.mean(scores)),
            time.perf_counter() - began,
            state,
            oof if state == "complete" else None,
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


ENSEMBLE_POOL = 10  # ensemble selection chooses among the best complete trials, at most this many


@dataclass
class Members:
    trials: list[Trial]
    weights: list[float]
    oof_score: float  # the ensemble's out-of-fold score (the search's scoring: higher is better)
    best_single_oof_score: float

    def record(self) -> list[dict[str, Any]]:
        return [
            {"trial": t.number, "candidate": t.candidate, "weight": w, "params": t.params}
            for t, w in zip(self.trials, self.weights, strict=True)
        ]

    def metadata(self, scoring: str, by_name: dict[str, Candidate]) -> dict[str, Any]:
        return {
            "framework": "ensemble",
            "estimator": "WeightedEnsemble",
            "candidate": "ensemble",
            "params": {"members": self.record()},
            "member_frameworks": sorted({by_name[t.candidate].framework for t in self.trials}),
            "cv_score": {scoring: self.oof_score},
        }


def choose_ensemble(task: str, y: np.ndarray, trials: list[Trial], rounds: int) -> Members | None:
    """Caruana ensemble selection over the best complete trials' out-of-fold predictions; the ensemble
    when it beats the best single model's out-of-fold score, else None (the best single model is used)."""
    pool = sorted((t for t in trials if t.oof is not None), key=lambda t: -t.cv_score)[:ENSEMBLE_POOL]
    if rounds < 2 or len(pool) < 2:
        return None
    target = y.astype(np.int64) if task == "classification" else y
    chosen = select(task, target, [t.oof for t in pool], rounds)
    sign = -1.0  # losses (log loss, RMSE) as the search's scores (negative log loss, negative RMSE)
    if len(chosen.weights) < 2 or not better(chosen.loss, chosen.best_single_loss):
        log.info(
            "ensemble selection: no ensemble beats the best single model out of fold (%.4f)",
            sign * chosen.best_single_loss,
        )
        return None
    members = Members(
        [pool[i] for i in chosen.weights],
        list(chosen.weights.values()),
        sign * chosen.loss,
        sign * chosen.best_single_loss,
    )
    log.info(
        "ensemble selection: %s, out of fold %.4f against the best single model's %.4f",
        ", ".join(
            f"trial {t.number} {t.candidate} x{w:.2f}"
            for t, w in zip(members.trials, members.weights, strict=True)
        ),
        members.oof_score,
        members.best_single_oof_score,
    )
    return members


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
    ensemble_size: int = 25,
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
    by_name = {c.name: c for c in pool}
    members = choose_ensemble(task, y_search, trials, ensemble_size)
    with limit(fit_threads()):
        if members:
            log.info(
                "refitting the ensemble's %d models on all %d train rows", len(members.weights), len(y_train)
            )
            estimator = WeightedEnsemble(
                [
                    fit(
                        by_name[t.candidate].make(seed, **t.params),
                        by_name[t.candidate],
                        t.params,
                        x_train,
                        y_train,
                    )
                    for t in members.trials
                ],
                list(members.weights),
                task,
            )
        else:
            log.info("best: %s %s; refitting on all %d train rows", best.candidate, best.params, len(y_train))
            chosen = by_name[best.candidate]
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
            **(
                members.metadata(SCORING[task], by_name)
                if members
                else {
                    "framework": by_name[best.candidate].framework,
                    "estimator": type(estimator).__name__,
                    "candidate": best.candidate,
                    "params": best.params,
                    "cv_score": {SCORING[task]: best.cv_score},
                }
            ),
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
    model_bytes = os.path.getsize(os.path.join(model_dir, "model.joblib"))
    log.info(
        "model artifact written: %s (sha256 %s, %.1f MB)",
        model_dir,
        meta["sha256"]["model.joblib"][:12],
        model_bytes / 1e6,
    )
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
        ensemble=members.record() if members else None,
        model_bytes=model_bytes,
    )


def track(tracker, result: TrainResult, *, params: dict) -> None:
    """Log training into the run: the search budget, every trial (a nested run each, and one table),
    the chosen model and its scores."""
    from components.registry.tracking import flatten

    tracker.log_params(params)
    tracker.log_params(
        {
            "chosen_candidate": "ensemble" if result.ensemble else result.best.candidate,
            **(
                {
                    f"chosen.member{i}": f"trial {m['trial']} {m['candidate']} x{m['weight']:.3f}"
                    for i, m in enumerate(result.ensemble, 1)
                }
                if result.ensemble
                else {f"chosen.{k}": v for k, v in result.best.params.items()}
            ),
        }
    )
    tracker.log_metrics(
        {
            f"cv_{result.scoring}": result.cv_score,
            f"best_trial_cv_{result.scoring}": result.best.cv_score,
            "model_bytes": result.model_bytes,
            "ensemble_members": len(result.ensemble or []),
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
