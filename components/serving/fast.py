"""A fast prediction path that gives exactly the answers of the fitted scikit-learn pipeline.

Running the fitted ``ColumnTransformer`` on a one-row DataFrame costs milliseconds, almost all of it
pandas and scikit-learn bookkeeping. ``FastPredictor`` reads the fitted parameters once (imputation
statistics, scaler mean and scale, and each one-hot encoder's mapping, taken by probing the fitted
encoder itself, so unknown and infrequent categories go where scikit-learn sends them) and applies
them with plain numpy in the same float64 operations and order, then applies the fitted estimator to
the same float32 matrix through its kernel (``kernels.py``: its arithmetic without per-call checks). Tests
check that the outputs are equal, bit for bit, to the pipeline's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from components.common.servable import ServableModel
from components.serving.kernels import SMALL_BATCH, estimator_kernel
from components.transform.core import MISSING_CATEGORY

_UNKNOWN_PROBE = "\x00kfp-tabular-unknown-category\x00"


class UnsupportedPipeline(ValueError):
    """The artifact's preprocessing is not the structure this fast path knows; use the slow path."""


def category_text(value: Any) -> str | None:
    """How the fitted preprocessing sees a categorical value: its text, or None when missing."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value if isinstance(value, str) else str(value)


class FastPredictor:
    def __init__(self, model: ServableModel):
        self.model = model
        preprocess = model.pipeline.named_steps.get("preprocess")
        self.estimator = model.pipeline.named_steps.get("model")
        if (
            preprocess is None
            or self.estimator is None
            or list(preprocess.named_steps) not in (["derive", "columns", "float32"], ["columns", "float32"])
        ):
            raise UnsupportedPipeline("expected Pipeline(preprocess=[derive, columns, float32], model)")
        # booleans and datetimes become numbers first (the same functions the request parser applies)
        self.derive = preprocess.named_steps.get("derive")
        columns = preprocess.named_steps["columns"]
        fitted = {name: (step, cols) for name, step, cols in columns.transformers_}
        self.n_outputs = len(columns.get_feature_names_out())
        self.numeric_names: list[str] = []
        self.categorical_names: list[str] = []
        self._numeric_slice = self._categorical_slice = slice(0, 0)
        self._numeric_plan: list[tuple[int, float, float, float]] = []

        if "numeric" in fitted and list(fitted["numeric"][1]):
            step, cols = fitted["numeric"]
            self.numeric_names = list(cols)
            self._median = step.named_steps["impute"].statistics_.astype(np.float64)
            scaler = step.named_steps["scale"]
            self._mean, self._scale = scaler.mean_, scaler.scale_
            self._numeric_slice = columns.output_indices_["numeric"]
            # per feature, for small batches in plain Python: (output column, median, mean, scale)
            self._numeric_plan = [
                (self._numeric_slice.start + j, float(m), float(mu), float(sd))
                for j, (m, mu, sd) in enumerate(zip(self._median, self._mean, self._scale, strict=True))
            ]
        if "categorical" in fitted and list(fitted["categorical"][1]):
            step, cols = fitted["categorical"]
            self.categorical_names = list(cols)
            self._categorical_slice = columns.output_indices_["categorical"]
            self._encoders = self._probe_encoder(step, len(cols))
        self._kernel, self.kernel_name = estimator_kernel(self.estimator, model.task)
        derived = self.derive.get_feature_names_out() if self.derive is not None else model.feature_names
        unknown = set(derived) - set(self.numeric_names) - set(self.categorical_names)
        if unknown:
            raise UnsupportedPipeline(f"features {sorted(unknown)} are not in the fitted preprocessing")

    @staticmethod
    def _probe_encoder(step, n_features: int) -> list[tuple[dict[str, int], int, int]]:
        """For each categorical feature: (text -> output column, column for unknown or -1, offset).

        Each known category (and one unknown probe) is pushed through the fitted imputer + encoder, so the
        mapping is the encoder's own, infrequent categories included.
        """
        impute, onehot = step.named_steps["impute"], step.named_steps["onehot"]
        offsets = np.cumsum([0] + [len(c) for c in _output_groups(onehot)])
        result = []
        for j, categories in enumerate(onehot.categories_):
            probes = [str(c) for c in categories] + [_UNKNOWN_PROBE]
            block = np.empty((len(probes), n_features), dtype=object)
            for k, other in enumerate(onehot.categories_):
                block[:, k] = str(other[0])
            block[:, j] = probes
            encoded = onehot.transform(impute.transform(block))[:, offsets[j] : offsets[j + 1]]
            columns = [int(np.flatnonzero(row)[0]) if row.any() else -1 for row in encoded]
            mapping = dict(zip(probes[:-1], columns[:-1], strict=True))
            result.append((mapping, columns[-1], int(offsets[j])))
        return result

    # --- the fast path ---
    def matrix(self, numeric: list[list[float]], categorical: list[list[str | None]]) -> np.ndarray:
        """The estimator's input (float32). ``numeric``: one list of floats per numeric feature, NaN for
        missing; ``categorical``: one list of texts per categorical feature, None for missing.

        Small batches are computed in plain Python floats (the same IEEE float64 operations as numpy's,
        so the same bits, without numpy's per-call cost); larger ones in numpy.
        """
        n = len(numeric[0]) if numeric else len(categorical[0])
        if n <= SMALL_BATCH:
            return self._small_matrix(numeric, categorical, n)
        out = np.zeros((n, self.n_outputs), dtype=np.float64)
        if self.numeric_names:
            out[:, self._numeric_slice] = self._scaled(np.array(numeric, dtype=np.float64).T)
        if self.categorical_names:
            for i, j in self._category_columns(categorical):
                out[i, j] = 1.0
        return out.astype(np.float32)

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        """SimpleImputer(median) then StandardScaler on an [N, numeric features] float64 matrix."""
        x = np.where(np.isnan(x), self._median, x)
        x -= self._mean
        x /= self._scale
        return x

    # --- the columnar path (batch prediction: whole Arrow columns at once) ---
    def category_positions(self, j: int, texts) -> np.ndarray:
        """Output column of the one-hot 1 of each value of categorical feature ``j`` (-1: none), for an
        Arrow string array (null: missing). The same mapping as ``_category_columns``, vectorized."""
        import pyarrow as pa
        import pyarrow.compute as pc

        mapping, unknown, offset = self._encoders[j]
        base = self._categorical_slice.start + offset
        known = list(mapping)
        columns = np.array([mapping[k] for k in known] + [unknown], dtype=np.int64)
        index = pc.index_in(texts, value_set=pa.array(known, type=pa.string()))
        found = index.fill_null(len(known)).to_numpy(zero_copy_only=False).astype(np.int64)
        positions = columns[found]
        if texts.null_count:
            missing = texts.is_null().to_numpy(zero_copy_only=False)
            positions[missing] = mapping.get(MISSING_CATEGORY, unknown)
        return np.where(positions >= 0, positions + base, -1)

    def matrix_columns(self, numeric: np.ndarray, positions: list[np.ndarray]) -> np.ndarray:
        """The estimator's input (float32) from an [N, numeric features] float64 matrix (NaN: missing; in
        ``numeric_names`` order) and ``category_positions`` of each categorical feature."""
        n = numeric.shape[0] if self.numeric_names else len(positions[0])
        # float32 from the start: the same bits as computing in float64 and casting the whole matrix (the
        # scaled numbers are computed in float64 and cast once; 0.0 and 1.0 are exact in both)
        out = np.zeros((n, self.n_outputs), dtype=np.float32)
        if self.numeric_names:
            out[:, self._numeric_slice] = self._scaled(numeric)
        flat = out.reshape(-1)
        starts = np.arange(n, dtype=np.int64) * self.n_outputs
        for column in positions:
            hit = column >= 0
            flat[starts[hit] + column[hit]] = 1.0
        return out

    def predict_columns(self, numeric: np.ndarray, positions: list[np.ndarray]) -> np.ndarray:
        """``predict`` for columnar inputs (see ``matrix_columns``): the same answers, bit for bit."""
        return self._kernel(self.matrix_columns(numeric, positions))

    def _small_matrix(self, numeric: list[list[float]], categorical: list[list[str | None]], n: int):
        rows = [[0.0] * self.n_outputs for _ in range(n)]
        if self.numeric_names:
            for values, (j, median, mean, scale) in zip(numeric, self._numeric_plan, strict=True):
                for row, value in zip(rows, values, strict=True):
                    # SimpleImputer(median) then StandardScaler: x - mean, then / scale, in float64
                    row[j] = ((median if value != value else value) - mean) / scale
        if self.categorical_names:
            for i, j in self._category_columns(categorical):
                rows[i][j] = 1.0
        return np.array(rows, dtype=np.float32)

    def _category_columns(self, categorical: list[list[str | None]]):
        """(row, output column) of every one-hot 1 (unknown categories with nowhere to go have none)."""
        base = self._categorical_slice.start
        for values, (mapping, unknown, offset) in zip(categorical, self._encoders, strict=True):
            for i, value in enumerate(values):
                column = mapping.get(MISSING_CATEGORY if value is None else value, unknown)
                if column >= 0:
                    yield i, base + offset + column

    def predict(self, numeric: np.ndarray, categorical: list[list[str | None]]) -> np.ndarray:
        """Class probabilities (classification) or values (regression), as the pipeline gives them."""
        return self._kernel(self.matrix(numeric, categorical))

    def split_frame(self, df) -> tuple[list[list[float]], list[list[str | None]]]:
        """A DataFrame of raw features (training column names) as ``predict``'s arguments."""
        if self.derive is not None:
            df = self.derive.transform(df)
        numeric = [df[name].to_numpy(dtype=np.float64).tolist() for name in self.numeric_names]
        categorical = [[category_text(v) for v in df[name].tolist()] for name in self.categorical_names]
        return numeric, categorical


def _output_groups(onehot) -> list[list[int]]:
    """Output columns of each input feature of a fitted OneHotEncoder (infrequent pooling included)."""
    names = onehot.get_feature_names_out([f"f{j}" for j in range(len(onehot.categories_))])
    groups: list[list[int]] = [[] for _ in onehot.categories_]
    for index, name in enumerate(names):
        groups[int(name.split("_", 1)[0][1:])].append(index)
    return groups
