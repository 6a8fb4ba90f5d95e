"""Transformation: derived numbers, imputation, scaling and one-hot encoding, fitted on the train split only.

The fitted preprocessing (booleans and datetimes to numbers as ingestion typed them, then a
``ColumnTransformer``) is saved as the transform artifact; training puts it, unchanged, in front of the
chosen estimator inside the one servable model artifact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from components.common.errors import InputDataError
from components.common.features import KINDS, DeriveFeatures, model_columns
from components.common.io import atomic_dir, read_parquet, read_table_metadata, write_parquet
from components.common.logs import get_logger

log = get_logger("transform")
PREPROCESSOR_FILE = "preprocessor.joblib"
SPEC_FILE = "transform.json"
TARGET_COLUMN = "__target__"
MISSING_CATEGORY = "__missing__"


@dataclass
class TransformSpec:
    """What the transform learned about the columns; stored beside the fitted preprocessor."""

    task: str
    target: str
    features: list[
        dict
    ]  # {"name", "kind": numeric|categorical|boolean|datetime, "dtype"[, "format", "parts"][, "codes"]}
    output_features: list[str]
    classes: list
    dropped_columns: dict[str, str] = field(default_factory=dict)  # ingestion's: name -> why

    def save(self, directory: Path) -> None:
        (directory / SPEC_FILE).write_text(json.dumps(asdict(self), indent=2, default=str))

    @classmethod
    def load(cls, directory: str | Path) -> TransformSpec:
        return cls(**json.loads((Path(directory) / SPEC_FILE).read_text()))


def as_text(frame):
    """Categorical values as strings (missing stays NaN), so 1 and "1" are the same category."""
    frame = pd.DataFrame(frame)
    text = frame.astype(str).to_numpy(dtype=object)
    text[frame.isna().to_numpy()] = np.nan
    return text


def feature_kinds(df: pd.DataFrame, target: str, column_types: dict[str, dict] | None = None) -> list[dict]:
    """The raw features in column order, each with the kind ingestion decided (``column_types``) or,
    for a table typed elsewhere, the kind its dtype implies (numbers numeric, the rest categorical)."""
    column_types = column_types or {}
    features = []
    for name in df.columns:
        if name == target:
            continue
        col = df[name]
        typed = column_types.get(name)
        if typed:
            feature = {"name": name, "kind": typed["kind"], "dtype": str(col.dtype)}
            if typed["kind"] == "datetime":
                feature.update(format=typed["format"], parts=list(typed["parts"]))
        else:
            numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
            feature = {"name": name, "kind": "numeric" if numeric else "categorical", "dtype": str(col.dtype)}
        if feature["kind"] == "categorical" and _integer_codes(col):
            feature["codes"] = True  # integer codes kept as text: requests may send them as numbers
        features.append(feature)
    return features


def _integer_codes(col: pd.Series) -> bool:
    """Text values that are all integers written plainly ('3', '-12'; not '03' or '3.0'): codes such as
    store ids that ingestion kept as categories."""
    if pd.api.types.is_numeric_dtype(col):
        return False
    values = col.dropna().unique()
    return len(values) > 0 and all(
        isinstance(v, str) and v.lstrip("-").isdigit() and str(int(v)) == v for v in values
    )


def as_float32(matrix):
    """The model's input dtype, applied inside the fitted preprocessing so training and serving agree."""
    return np.asarray(matrix, dtype=np.float32)


def build_preprocessor(features: list[dict], max_categories: int) -> Pipeline:
    """derive (booleans and datetimes to numbers) -> columns (impute, scale, one-hot) -> float32."""
    numeric, categorical = model_columns(features)
    numeric_steps = Pipeline(
        [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
    )
    categorical_steps = Pipeline(
        [
            ("text", FunctionTransformer(as_text, feature_names_out="one-to-one")),
            (
                "impute",
                SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, keep_empty_features=True),
            ),
            (
                "onehot",
                OneHotEncoder(
                    handle_unknown="infrequent_if_exist",
                    max_categories=max_categories,
                    sparse_output=False,
                    dtype=np.float32,
                ),
            ),
        ]
    )
    columns = ColumnTransformer(
        [("numeric", numeric_steps, numeric), ("categorical", categorical_steps, categorical)],
        remainder="drop",
        verbose_feature_names_out=True,
    )
    return Pipeline(
        [
            ("derive", DeriveFeatures(features)),
            ("columns", columns),
            ("float32", FunctionTransformer(as_float32, feature_names_out="one-to-one")),
        ]
    )


def encode_target(y: pd.Series, task: str, classes: list) -> np.ndarray:
    if task == "regression":
        return y.to_numpy(dtype=np.float64)
    index = {value: i for i, value in enumerate(classes)}
    unknown = sorted({str(v) for v in y.unique() if v not in index})
    if unknown:
        raise InputDataError(f"target classes {unknown} do not occur in the train split")
    return y.map(index).to_numpy(dtype=np.int64)


def fit_transform(
    *,
    train_path: str,
    eval_path: str,
    target: str,
    task: str,
    max_categories: int,
    transform_dir: str,
    transformed_train_path: str,
    transformed_eval_path: str,
) -> TransformSpec:
    train = read_parquet(train_path)
    evaluation = read_parquet(eval_path)
    if target not in train.columns:
        raise InputDataError(
            f"target column {target!r} is not in the train split; columns are {list(train.columns)}"
        )
    table_meta = read_table_metadata(train_path)
    features = feature_kinds(train, target, table_meta.get("column_types"))
    kinds = {k: [f["name"] for f in features if f["kind"] == k] for k in KINDS}
    log.info(
        "fitting on %d train rows: %s",
        len(train),
        "; ".join(f"{len(names)} {kind} {names}" for kind, names in kinds.items() if names),
    )

    preprocessor = build_preprocessor(features, max_categories)
    x_train = preprocessor.fit_transform(train.drop(columns=[target]))
    x_eval = preprocessor.transform(evaluation.drop(columns=[target]))
    output_features = [str(n) for n in preprocessor.get_feature_names_out()]
    classes = sorted(train[target].unique().tolist(), key=str) if task == "classification" else []
    spec = TransformSpec(
        task=task,
        target=target,
        features=features,
        output_features=output_features,
        classes=classes,
        dropped_columns=dict(table_meta.get("dropped_columns") or {}),
    )

    y_train = encode_target(train[target], task, classes)
    y_eval = encode_target(evaluation[target], task, classes)
    with atomic_dir(transform_dir) as tmp:
        joblib.dump(preprocessor, tmp / PREPROCESSOR_FILE)
        spec.save(tmp)
    write_parquet(_matrix_frame(x_train, output_features, y_train), transformed_train_path)
    write_parquet(_matrix_frame(x_eval, output_features, y_eval), transformed_eval_path)
    log.info("%d input features -> %d model inputs", len(features), len(output_features))
    return spec


def _matrix_frame(x: np.ndarray, names: list[str], y: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(x, columns=names)
    frame[TARGET_COLUMN] = y
    return frame


def load_preprocessor(transform_dir: str | Path) -> Pipeline:
    return joblib.load(Path(transform_dir) / PREPROCESSOR_FILE)


def load_matrix(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    frame = read_parquet(path)
    y = frame.pop(TARGET_COLUMN).to_numpy()
    return frame.to_numpy(dtype=np.float32), y, list(frame.columns)


def track(tracker, spec: TransformSpec, *, params: dict) -> None:
    """Log the transform into the run: its settings, features in and model inputs out, and the kinds."""
    tracker.log_params(params)
    tracker.log_metrics({"features": len(spec.features), "model_inputs": len(spec.output_features)})
    tracker.log_dict(
        {"features": spec.features, "model_inputs": spec.output_features}, "transform/features.json"
    )
