"""The fitted estimator's arithmetic, without the per-call overhead that dominates one-row requests.

``estimator.predict_proba(x)`` on one row spends most of its time outside the arithmetic: scikit-learn
validates the input on every call (about 70 us, against 8 us for a linear model's arithmetic), and the
tree ensembles start an OpenMP parallel region per tree (milliseconds per row for histogram gradient
boosting). A kernel reads the fitted parameters once and repeats the estimator's own operations, in the
same order and dtypes, so the answers are the estimator's bit for bit (tests compare them for every
model family the search can pick). For small batches, histogram gradient boosting walks all its trees
together in numpy and XGBoost and LightGBM predict on one thread; large batches use the estimators' own threaded
code on ``threads`` threads (threads split rows, so the answers do not depend on them; by default one,
or the user's ``OMP_NUM_THREADS``: ``components.common.threads``, docs/benchmarks.md "Thread set-ups").
An estimator without a kernel here is called as it is.

The kernels read fitted attributes, some of them private (``_predictors``, ``_loss``): the serving image
pins the exact versions the artifact was trained with (the artifact refuses to load otherwise), and the
bit-for-bit tests fail if a version bump changes them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

from components.common.ensemble import WeightedEnsemble, normalize
from components.common.threads import fit_threads

Kernel = Callable[[np.ndarray], np.ndarray]
SMALL_BATCH = 64  # rows; smaller batches: tree ensembles on one thread, or all trees walked together


def estimator_kernel(estimator, task: str, threads: int | None = None) -> tuple[Kernel, str]:
    """A function of the float32 model-input matrix giving what the estimator gives (class
    probabilities for classification, values for regression), and its name for the logs. Tree ensembles
    predict batches above ``SMALL_BATCH`` rows on ``threads`` threads (default ``fit_threads()``), whichever
    thread calls them (an OpenMP limit set with threadpoolctl would hold only in the thread that set it)."""
    threads = threads or fit_threads()
    kind = type(estimator)
    if kind is WeightedEnsemble:
        return _ensemble(estimator, task, threads)
    if kind is LogisticRegression and task == "classification":
        return _logistic(estimator), "numpy (logistic regression)"
    if kind in (Ridge, LinearRegression) and task == "regression":
        return _linear(estimator), "numpy (linear model)"
    hgb = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
    if kind in hgb and getattr(estimator, "_preprocessor", None) is None:  # no native categoricals
        return _hist_gradient_boosting(estimator, task, threads), "histogram gradient boosting predictors"
    kernel = _xgboost(estimator, task, threads)
    if kernel is not None:
        return kernel, "xgboost booster.inplace_predict"
    kernel = _lightgbm(estimator, task, threads)
    if kernel is not None:
        return kernel, "lightgbm booster.predict"
    generic = estimator.predict_proba if task == "classification" else estimator.predict
    return generic, f"{kind.__name__}.{generic.__name__}"


def _logistic(estimator: LogisticRegression) -> Kernel:
    # LogisticRegression.predict_proba: binary -> expit of the decision function, stacked [1 - p, p];
    # multiclass -> softmax of the decision function (sklearn.utils.extmath.softmax, numpy branch).
    coef_t, intercept = estimator.coef_.T, estimator.intercept_
    binary = len(estimator.classes_) <= 2

    def predict_proba(x: np.ndarray) -> np.ndarray:
        scores = x @ coef_t + intercept
        if binary:
            p = scores.reshape(-1)
            expit(p, out=p)
            return np.stack([1 - p, p], axis=1)
        scores -= scores.max(axis=1).reshape(-1, 1)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1).reshape(-1, 1)
        return scores

    return predict_proba


def _linear(estimator) -> Kernel:
    # LinearModel._decision_function
    coef, intercept = estimator.coef_, estimator.intercept_
    coef = coef if coef.ndim == 1 else coef.T
    return lambda x: x @ coef + intercept


def _hist_gradient_boosting(estimator, task: str, n_threads: int) -> Kernel:
    # BaseHistGradientBoosting._raw_predict / _predict_iterations, then the loss's inverse link. Small
    # batches walk all trees at once (_Forest); large ones use the fitted predictors on n_threads threads.
    known_cat_bitsets, f_idx_map = estimator._bin_mapper.make_known_categories_bitsets()
    predictors, baseline = estimator._predictors, estimator._baseline_prediction
    loss, k_trees = estimator._loss, estimator.n_trees_per_iteration_
    forest = _Forest(predictors, baseline, k_trees)

    def predict(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)  # validate_data(dtype=X_DTYPE)
        if forest.usable and x.shape[0] <= SMALL_BATCH:
            raw = forest.raw_predict(x)
        else:
            raw = np.zeros((x.shape[0], k_trees), dtype=baseline.dtype, order="F")
            raw += baseline
            for iteration in predictors:
                for k, predictor in enumerate(iteration):
                    raw[:, k] += predictor.predict(x, known_cat_bitsets, f_idx_map, n_threads)
        if task == "classification":
            return loss.predict_proba(raw)
        return loss.link.inverse(raw.ravel())

    return predict


class _Forest:
    """Every tree of a histogram gradient boosting model in flat arrays, walked level by level together.

    The same decisions as scikit-learn's ``_predict_one_from_raw_data`` (NaN goes where the node sends
    missing values, else ``value <= num_threshold`` goes left), and the same sums: the baseline, then each
    iteration's leaf value added in order (``np.add.accumulate`` adds sequentially). About 50 us for one
    row instead of one call per tree. Trees with categorical splits are left to scikit-learn.
    """

    def __init__(self, predictors, baseline: np.ndarray, k_trees: int):
        trees = [predictor.nodes for iteration in predictors for predictor in iteration]
        self.usable = bool(trees) and not any(tree["is_categorical"].any() for tree in trees)
        if not self.usable:
            return
        sizes = [len(tree) for tree in trees]
        self.roots = np.cumsum([0] + sizes[:-1]).astype(np.intp)
        nodes = np.concatenate(trees)
        shift = np.repeat(self.roots, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        here = np.arange(len(nodes), dtype=np.intp)  # a leaf's children are itself: walks stop there
        self.left = np.where(leaf, here, nodes["left"].astype(np.intp) + shift)
        self.right = np.where(leaf, here, nodes["right"].astype(np.intp) + shift)
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"]
        self.missing_left = nodes["missing_go_to_left"].astype(bool)
        self.value = nodes["value"]
        self.levels = int(nodes["depth"].max())
        self.start = baseline.reshape(1, 1, k_trees)
        self.k_trees = k_trees

    def raw_predict(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        node = np.broadcast_to(self.roots, (n, len(self.roots)))
        rows = np.arange(n)[:, None]
        for _ in range(self.levels):
            value = x[rows, self.feature[node]]
            go_left = np.where(np.isnan(value), self.missing_left[node], value <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        leaves = self.value[node].reshape(n, -1, self.k_trees)  # (rows, iterations, trees per iteration)
        terms = np.concatenate([np.broadcast_to(self.start, (n, 1, self.k_trees)), leaves], axis=1)
        return np.add.accumulate(terms, axis=1)[:, -1, :]


def _xgboost(estimator, task: str, threads: int) -> Kernel | None:
    # XGBModel.predict (inplace_predict) and XGBClassifier.predict_proba (binary: [1 - p, p]).
    try:
        from xgboost import XGBModel
    except ImportError:  # pragma: no cover - xgboost is a locked dependency
        return None
    if not isinstance(estimator, XGBModel) or not estimator._can_use_inplace_predict():
        return None
    if task == "classification" and estimator.objective == "multi:softmax":
        return None  # predict_proba applies a softmax to margins there
    booster = estimator.get_booster()
    single = booster.copy()  # the same trees on one thread, for small batches
    single.set_param({"nthread": 1})
    booster.set_param({"nthread": threads})  # large batches; the fit's n_jobs (if any) is not the server's
    iteration_range = estimator._get_iteration_range(None)
    missing, n_classes = estimator.missing, getattr(estimator, "n_classes_", 0)

    def predict(x: np.ndarray) -> np.ndarray:
        chosen = single if x.shape[0] <= SMALL_BATCH else booster
        out = chosen.inplace_predict(x, iteration_range=iteration_range, missing=missing)
        if task == "classification" and not (out.ndim == 2 and out.shape[1] == n_classes):
            return np.vstack((1.0 - out, out)).transpose()
        return out

    return predict


def _lightgbm(estimator, task: str, threads: int) -> Kernel | None:
    # LGBMModel.predict -> Booster.predict (every round: the refit has no early stopping), and
    # LGBMClassifier.predict_proba (binary: [1 - p, p]); without the wrapper's input validation.
    try:
        from lightgbm import LGBMModel
    except ImportError:  # pragma: no cover - lightgbm is a locked dependency
        return None
    if not isinstance(estimator, LGBMModel) or callable(estimator._objective):
        return None
    booster = estimator.booster_
    binary = task == "classification" and estimator.n_classes_ <= 2

    def predict(x: np.ndarray) -> np.ndarray:
        out = booster.predict(x, num_threads=1 if x.shape[0] <= SMALL_BATCH else threads)
        return np.vstack((1.0 - out, out)).transpose() if binary else out

    return predict


def _ensemble(estimator: WeightedEnsemble, task: str, threads: int) -> tuple[Kernel, str]:
    # WeightedEnsemble.predict_proba / predict: the members' outputs weighted and added in member order.
    parts = [estimator_kernel(member, task, threads) for member in estimator.members]
    kernels, weights = [kernel for kernel, _ in parts], estimator.weights

    def predict(x: np.ndarray) -> np.ndarray:
        total = None
        for weight, kernel in zip(weights, kernels, strict=True):
            total = weight * kernel(x) if total is None else total + weight * kernel(x)
        return normalize(total) if task == "classification" else total

    names = ", ".join(f"{name} x{w:.2f}" for (_, name), w in zip(parts, weights, strict=True))
    return predict, f"weighted ensemble ({names})"
