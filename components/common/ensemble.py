"""A weighted ensemble of fitted models, and how its members and weights are chosen.

``select`` is Caruana et al.'s ensemble selection (2004), as AutoGluon uses it: starting from the best
single model, repeatedly add (with replacement) the model whose addition most improves the ensemble's
loss on out-of-fold predictions; the weights are how often each model was added. The training stage uses
the ensemble only when it beats the best single model's out-of-fold loss.

``WeightedEnsemble`` is the servable estimator: the last step of the model's pipeline, like any other
estimator. Its output is the weighted sum of its members' class probabilities (rows then divided by
their sums) or values, added up in member order; the model server's kernel (``components/serving/kernels.py``) adds its members' kernels in
the same order, so the answers are the same bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator


class WeightedEnsemble(BaseEstimator):
    """A fitted weighted average of fitted estimators (classification: probabilities; regression: values).
    Built from fitted members, never fitted itself."""

    def __init__(self, members: list, weights: list[float], task: str):
        if len(members) != len(weights) or not members:
            raise ValueError("an ensemble needs one weight per member and at least one member")
        self.members, self.weights, self.task = list(members), [float(w) for w in weights], task

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, x, y=None):
        raise TypeError("a WeightedEnsemble is built from fitted members (components.train.core)")

    @property
    def classes_(self) -> np.ndarray:
        return self.members[0].classes_

    def _combine(self, outputs) -> np.ndarray:
        total = None
        for weight, out in zip(self.weights, outputs, strict=True):
            total = weight * out if total is None else total + weight * out
        return total

    def predict_proba(self, x) -> np.ndarray:
        return normalize(self._combine(member.predict_proba(x) for member in self.members))

    def predict(self, x) -> np.ndarray:
        if self.task == "classification":
            return self.classes_[np.argmax(self.predict_proba(x), axis=1)]
        return self._combine(member.predict(x) for member in self.members)


def normalize(probabilities: np.ndarray) -> np.ndarray:
    """Rows summing to one again (members' float32 probabilities leave the weighted sum off by ~1e-8)."""
    return probabilities / probabilities.sum(axis=1, keepdims=True)


@dataclass
class Selection:
    weights: dict[int, float]  # model index -> weight (the share of the rounds it was added in)
    loss: float  # the ensemble's out-of-fold loss
    best_single_loss: float


def loss(task: str, y: np.ndarray, predicted: np.ndarray) -> float:
    """Log loss of class probabilities (labels 0..k-1) or root mean squared error of values."""
    if task == "classification":
        chosen = predicted[np.arange(len(y)), y.astype(np.int64)]
        return float(-np.mean(np.log(np.clip(chosen, np.finfo(np.float64).eps, None))))
    return float(np.sqrt(np.mean((predicted - y) ** 2)))


def better(candidate: float, incumbent: float) -> bool:
    """A lower loss by more than rounding (the same model added twice differs from it in the last bit)."""
    return candidate < incumbent - 1e-9 * max(abs(incumbent), 1e-12)


def select(task: str, y: np.ndarray, predictions: list[np.ndarray], rounds: int) -> Selection:
    """Greedy ensemble selection with replacement over out-of-fold ``predictions`` (one array per model)."""
    predictions = [np.asarray(p, dtype=np.float64) for p in predictions]
    singles = [loss(task, y, p) for p in predictions]
    best = int(np.argmin(singles))
    counts = {best: 1}
    total = predictions[best].copy()
    kept, kept_loss = dict(counts), singles[best]  # the best ensemble met along the way
    for size in range(2, rounds + 1):
        trial_losses = [loss(task, y, (total + p) / size) for p in predictions]
        pick = int(np.argmin(trial_losses))
        total += predictions[pick]
        counts[pick] = counts.get(pick, 0) + 1
        if better(trial_losses[pick], kept_loss):
            kept, kept_loss = dict(counts), trial_losses[pick]
    used = sum(kept.values())
    return Selection({i: n / used for i, n in sorted(kept.items())}, kept_loss, singles[best])
