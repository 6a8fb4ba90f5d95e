"""Metrics shared by training (on the eval split) and evaluation (on the test split)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """``y_true``: class indices 0..K-1; ``proba``: (n, K) probabilities."""
    n_classes = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    labels = np.arange(n_classes)
    result = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", labels=labels, zero_division=0)),
        "log_loss": float(skm.log_loss(y_true, proba, labels=labels)),
    }
    present = np.unique(y_true)
    if len(present) < 2:
        result["roc_auc"] = float("nan")
    elif n_classes == 2:
        result["roc_auc"] = float(skm.roc_auc_score(y_true, proba[:, 1]))
    else:
        result["roc_auc"] = float(
            skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=labels)
        )
    return result


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
    }
