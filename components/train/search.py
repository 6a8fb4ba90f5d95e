"""Candidate model families and their hyperparameter spaces (scikit-learn and XGBoost)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scipy.stats import loguniform, randint, uniform
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from xgboost import XGBClassifier, XGBRegressor


@dataclass(frozen=True)
class Candidate:
    name: str
    framework: str  # "sklearn" | "xgboost"
    make: Callable[..., Any]  # (seed, **params) -> unfitted estimator
    space: dict[str, Any]  # scipy distributions or lists, for ParameterSampler


def _xgb_space() -> dict[str, Any]:
    return {
        "n_estimators": randint(50, 400),
        "max_depth": randint(2, 8),
        "learning_rate": loguniform(0.02, 0.3),
        "subsample": uniform(0.6, 0.4),
        "colsample_bytree": uniform(0.6, 0.4),
        "min_child_weight": loguniform(0.5, 10),
        "reg_lambda": loguniform(0.1, 10),
    }


def _hgb_space() -> dict[str, Any]:
    return {
        "learning_rate": loguniform(0.02, 0.3),
        "max_iter": randint(50, 400),
        "max_leaf_nodes": randint(8, 64),
        "min_samples_leaf": randint(5, 50),
        "l2_regularization": loguniform(1e-4, 10),
    }


def _pool(linear: Candidate, hgb_class: type, xgb_class: type) -> dict[str, Candidate]:
    """A task's families: its linear model, then histogram gradient boosting and XGBoost."""
    return {
        linear.name: linear,
        "hist_gradient_boosting": Candidate(
            "hist_gradient_boosting",
            "sklearn",
            lambda seed, **p: hgb_class(random_state=seed, early_stopping=False, **p),
            _hgb_space(),
        ),
        "xgboost": Candidate(
            "xgboost",
            "xgboost",
            # n_jobs None: XGBoost takes the calling thread's OpenMP limit (components.common.threads)
            lambda seed, **p: xgb_class(random_state=seed, n_jobs=None, tree_method="hist", **p),
            _xgb_space(),
        ),
    }


CLASSIFIERS = _pool(
    Candidate(
        "logistic_regression",
        "sklearn",
        lambda seed, **p: LogisticRegression(max_iter=2000, random_state=seed, **p),
        {"C": loguniform(1e-3, 1e2)},
    ),
    HistGradientBoostingClassifier,
    XGBClassifier,
)
REGRESSORS = _pool(
    Candidate(
        "ridge", "sklearn", lambda seed, **p: Ridge(random_state=seed, **p), {"alpha": loguniform(1e-3, 1e3)}
    ),
    HistGradientBoostingRegressor,
    XGBRegressor,
)


def candidates_for(task: str, names: list[str] | None = None) -> list[Candidate]:
    pool = CLASSIFIERS if task == "classification" else REGRESSORS
    names = list(names) if names else list(pool)
    return [pool[name] for name in names]
