"""Candidate model families, their hyperparameter spaces, and how one fold of one trial is fitted.

Each family has a search space (``Float``/``Int`` ranges or a list of choices), the parameters its first
trial uses (the library's own defaults, so that every family is first tried as its authors tuned it) and,
for boosting families, the parameter that counts rounds: that one is not searched but chosen by early
stopping on each cross-validation fold (``fit_fold``), and the mean of the folds' best round counts is
what the final model is refitted with.

Every fit obeys a deadline: XGBoost and LightGBM through a training callback checked after each round, histogram
gradient boosting by growing its trees ``HGB_CHUNK`` rounds at a time (``warm_start``, which gives the
same model as one fit of the same length; tested), so that a slow trial is cut within one round or one chunk of
the search's time budget instead of running to its end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost
from lightgbm import LGBMClassifier, LGBMRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils.class_weight import compute_sample_weight
from xgboost import XGBClassifier, XGBRegressor

from components.common.ensemble import loss
from components.common.threads import fit_threads

MAX_ROUNDS = 500  # boosting: the most rounds a trial may grow (early stopping usually ends sooner)
PATIENCE = 25  # boosting: rounds without improvement on the fold's held-out rows before stopping
HGB_CHUNK = 25  # histogram gradient boosting: rounds grown between checks (held-out scores, deadline)


class OutOfTime(Exception):
    """A fit passed the search's deadline (the trial is dropped; the search stops)."""


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int


@dataclass(frozen=True)
class Candidate:
    name: str
    framework: str  # "sklearn" | "xgboost"
    make: Callable[..., Any]  # (seed, **params) -> unfitted estimator
    space: dict[str, Any]  # parameter -> Float | Int | list of choices
    defaults: dict[str, Any] = field(default_factory=dict)  # the first trial's parameters
    rounds: str = ""  # boosting: the parameter counting rounds, chosen by early stopping per fold

    def first_params(self) -> dict[str, Any]:
        """The first trial: the defaults, completed with the first choice of any parameter they omit."""
        params = dict(self.defaults)
        for name, spec in self.space.items():
            if name not in params:
                params[name] = spec[0] if isinstance(spec, list) else spec.low
        return params


def suggest(trial, candidate: Candidate) -> dict[str, Any]:
    """The parameters of ``candidate`` an Optuna trial proposes (names prefixed by the family's)."""
    params = {}
    for name, spec in candidate.space.items():
        key = f"{candidate.name}.{name}"
        if isinstance(spec, Float):
            params[name] = trial.suggest_float(key, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Int):
            params[name] = trial.suggest_int(key, spec.low, spec.high)
        else:
            params[name] = trial.suggest_categorical(key, list(spec))
    return params


def fit_fold(
    candidate: Candidate,
    params: dict[str, Any],
    seed: int,
    train: tuple[np.ndarray, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray],
    scorer: Callable[[Any, np.ndarray, np.ndarray], float],
    deadline: float = math.inf,
) -> tuple[float, int, np.ndarray]:
    """Fit one fold; returns (held-out score, rounds: the best round count for boosting, else 0, the
    held-out predictions: class probabilities or values, of the model that was scored).

    Raises ``OutOfTime`` when the fit passes ``deadline``."""
    (x, y), (x_out, y_out) = train, held_out
    if candidate.rounds and candidate.framework == "xgboost":
        return _fit_xgboost(candidate, params, seed, x, y, x_out, y_out, scorer, deadline)
    if candidate.rounds and candidate.framework == "lightgbm":
        return _fit_lightgbm(candidate, params, seed, x, y, x_out, y_out, scorer, deadline)
    if candidate.rounds == "max_iter":
        return _fit_hist_gradient_boosting(candidate, params, seed, x, y, x_out, y_out, scorer, deadline)
    estimator = candidate.make(seed, **params)
    fit(estimator, candidate, params, x, y)
    if time.perf_counter() > deadline:
        raise OutOfTime
    return float(scorer(estimator, x_out, y_out)), 0, _predict(estimator, x_out)


def _predict(estimator, x: np.ndarray) -> np.ndarray:
    return estimator.predict_proba(x) if hasattr(estimator, "predict_proba") else estimator.predict(x)


def fit(estimator, candidate: Candidate, params: dict[str, Any], x, y, **kwargs):
    """``estimator.fit``, with class weights given as sample weights where the family needs them."""
    if candidate.framework == "xgboost" and params.get("class_weight"):
        kwargs["sample_weight"] = compute_sample_weight(params["class_weight"], y)
    return estimator.fit(x, y, **kwargs)


class _Deadline(xgboost.callback.TrainingCallback):
    def __init__(self, deadline: float):
        super().__init__()
        self.deadline, self.passed = deadline, False

    def after_iteration(self, model, epoch, evals_log) -> bool:
        self.passed = time.perf_counter() > self.deadline
        return self.passed


def _fit_xgboost(candidate, params, seed, x, y, x_out, y_out, scorer, deadline):
    clock = _Deadline(deadline)
    estimator = candidate.make(
        seed,
        **{**params, "n_estimators": MAX_ROUNDS},
        early_stopping_rounds=PATIENCE,
        callbacks=[clock],
    )
    fit(estimator, candidate, params, x, y, eval_set=[(x_out, y_out)], verbose=False)
    if clock.passed:
        raise OutOfTime
    # predictions of an early-stopped model use its best round; that is the score of this trial's fold
    return (
        float(scorer(estimator, x_out, y_out)),
        int(estimator.best_iteration) + 1,
        _predict(estimator, x_out),
    )


def _fit_lightgbm(candidate, params, seed, x, y, x_out, y_out, scorer, deadline):
    import lightgbm

    def clock(env) -> None:
        if time.perf_counter() > deadline:
            raise OutOfTime

    estimator = candidate.make(seed, **{**params, "n_estimators": MAX_ROUNDS})
    estimator.fit(
        x,
        y,
        eval_X=(x_out,),
        eval_y=(y_out,),
        callbacks=[lightgbm.early_stopping(PATIENCE, first_metric_only=True, verbose=False), clock],
    )
    # predictions of an early-stopped model use its best round; that is the score of this trial's fold
    rounds = int(estimator.best_iteration_ or MAX_ROUNDS)
    return float(scorer(estimator, x_out, y_out)), rounds, _predict(estimator, x_out)


def _fit_hist_gradient_boosting(candidate, params, seed, x, y, x_out, y_out, scorer, deadline):
    """Grow ``HGB_CHUNK`` rounds at a time; after each chunk, score every round so far on the held-out
    rows (staged predictions: cheap) and stop once the best round is ``PATIENCE`` rounds behind. The
    fold's score is the search's scorer on the model cut at that round (the same as XGBoost's)."""
    estimator = candidate.make(seed, **{**params, "max_iter": HGB_CHUNK}, warm_start=True)
    while True:
        estimator.fit(x, y)
        losses = _staged_losses(estimator, x_out, y_out)
        best = int(np.argmin(losses))
        if estimator.n_iter_ - (best + 1) >= PATIENCE or estimator.n_iter_ >= MAX_ROUNDS:
            rounds = best + 1
            cut = candidate.make(seed, **{**params, "max_iter": rounds}).fit(x, y)
            return float(scorer(cut, x_out, y_out)), rounds, _predict(cut, x_out)
        if time.perf_counter() > deadline:
            raise OutOfTime
        estimator.set_params(max_iter=estimator.max_iter + HGB_CHUNK)


def _staged_losses(estimator, x_out, y_out) -> np.ndarray:
    """The held-out loss after each round (log loss or RMSE, as ensemble selection measures them), in
    numpy: scikit-learn's metric functions validate their input on every call, which costs more than the
    arithmetic for hundreds of rounds."""
    if hasattr(estimator, "predict_proba"):
        codes = np.searchsorted(estimator.classes_, y_out)
        return np.array([loss("classification", codes, p) for p in estimator.staged_predict_proba(x_out)])
    return np.array([loss("regression", y_out, p) for p in estimator.staged_predict(x_out)])


def _boosting_pool(
    linear: Candidate, hgb_class: type, xgb_class: type, lgbm_class: type, weights: list
) -> dict[str, Candidate]:
    """A task's families: its linear model, then histogram gradient boosting, XGBoost and LightGBM."""
    return {
        linear.name: linear,
        "hist_gradient_boosting": Candidate(
            "hist_gradient_boosting",
            "sklearn",
            lambda seed, **p: hgb_class(random_state=seed, early_stopping=False, **p),
            {
                "learning_rate": Float(0.02, 0.3, log=True),
                "max_leaf_nodes": Int(8, 64),
                "min_samples_leaf": Int(5, 50),
                "l2_regularization": Float(1e-4, 10, log=True),
                **({"class_weight": weights} if weights else {}),
            },
            # scikit-learn's defaults
            {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 1e-4},
            rounds="max_iter",
        ),
        "xgboost": Candidate(
            "xgboost",
            "xgboost",
            # n_jobs None: XGBoost takes the calling thread's OpenMP limit (components.common.threads);
            # class_weight is applied as sample weights at fit (``fit``), not an XGBoost parameter.
            lambda seed, class_weight=None, **p: xgb_class(
                random_state=seed, n_jobs=None, tree_method="hist", **p
            ),
            {
                "max_depth": Int(2, 8),
                "learning_rate": Float(0.02, 0.3, log=True),
                "subsample": Float(0.6, 1.0),
                "colsample_bytree": Float(0.6, 1.0),
                "min_child_weight": Float(0.5, 10, log=True),
                "reg_lambda": Float(0.1, 10, log=True),
                **({"class_weight": weights} if weights else {}),
            },
            # XGBoost's defaults (learning rate 0.3 is its default too; early stopping picks the rounds)
            {
                "max_depth": 6,
                "learning_rate": 0.3,
                "subsample": 1.0,
                "colsample_bytree": 1.0,
                "min_child_weight": 1.0,
                "reg_lambda": 1.0,
            },
            rounds="n_estimators",
        ),
        "lightgbm": Candidate(
            "lightgbm",
            "lightgbm",
            # n_jobs: LightGBM sets its own OpenMP thread count per call (threadpoolctl's limit does not
            # hold there), so it is given the fit's threads explicitly
            lambda seed, **p: lgbm_class(
                random_state=seed, n_jobs=fit_threads(), subsample_freq=1, verbose=-1, **p
            ),
            {
                "num_leaves": Int(8, 128),
                "learning_rate": Float(0.02, 0.3, log=True),
                "min_child_samples": Int(5, 50),
                "subsample": Float(0.6, 1.0),
                "colsample_bytree": Float(0.6, 1.0),
                "reg_lambda": Float(1e-3, 10, log=True),
                **({"class_weight": weights} if weights else {}),
            },
            # LightGBM's defaults (its reg_lambda 0 is below the searched range: its low end stands in)
            {
                "num_leaves": 31,
                "learning_rate": 0.1,
                "min_child_samples": 20,
                "subsample": 1.0,
                "colsample_bytree": 1.0,
                "reg_lambda": 1e-3,
            },
            rounds="n_estimators",
        ),
    }


CLASS_WEIGHTS = [None, "balanced"]  # classification: class weights are a searched option

CLASSIFIERS = _boosting_pool(
    Candidate(
        "logistic_regression",
        "sklearn",
        lambda seed, **p: LogisticRegression(max_iter=2000, random_state=seed, **p),
        {"C": Float(1e-3, 1e2, log=True), "class_weight": CLASS_WEIGHTS},
        {"C": 1.0},
    ),
    HistGradientBoostingClassifier,
    XGBClassifier,
    LGBMClassifier,
    CLASS_WEIGHTS,
)
REGRESSORS = _boosting_pool(
    Candidate(
        "ridge",
        "sklearn",
        lambda seed, **p: Ridge(random_state=seed, **p),
        {"alpha": Float(1e-3, 1e3, log=True)},
        {"alpha": 1.0},
    ),
    HistGradientBoostingRegressor,
    XGBRegressor,
    LGBMRegressor,
    [],
)


def candidates_for(task: str, names: list[str] | None = None) -> list[Candidate]:
    pool = CLASSIFIERS if task == "classification" else REGRESSORS
    names = list(names) if names else list(pool)
    return [pool[name] for name in names]
