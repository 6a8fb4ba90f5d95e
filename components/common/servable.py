"""The one servable model artifact: the preprocessing fitted in training plus the estimator.

A model directory holds::

    model.joblib    sklearn Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])
    metadata.json   task, target, features (name, kind, dtype), classes, framework, versions, sha256

Training writes it, evaluation and the local deploy target verify and load it, and the model server
loads exactly the same directory, so serving applies exactly what training fitted.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from components.common.errors import ModelArtifactError
from components.common.io import atomic_dir, sha256_file

MODEL_FILE = "model.joblib"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1
# Packages whose versions must match between the training and the serving environment.
LOCKED_PACKAGES = ("scikit-learn", "xgboost-cpu", "numpy", "pandas", "joblib")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LOCKED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@dataclass
class ServableModel:
    pipeline: Any  # fitted sklearn Pipeline: preprocess -> model
    metadata: dict[str, Any]

    # --- facts ---
    @property
    def task(self) -> str:
        return self.metadata["task"]

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.metadata["features"]]

    @property
    def classes(self) -> list[Any]:
        return list(self.metadata.get("classes") or [])

    @property
    def sha256(self) -> str:
        return self.metadata["sha256"][MODEL_FILE]

    # --- persistence ---
    def save(self, directory: str | Path) -> dict[str, Any]:
        """Write the model directory atomically; returns the metadata written (with its hash)."""
        with atomic_dir(directory) as tmp:
            joblib.dump(self.pipeline, tmp / MODEL_FILE)
            meta = dict(self.metadata)
            meta["format_version"] = FORMAT_VERSION
            meta["versions"] = package_versions()
            meta["sha256"] = {MODEL_FILE: sha256_file(tmp / MODEL_FILE)}
            (tmp / METADATA_FILE).write_text(
                json.dumps(meta, indent=2, sort_keys=True, default=_json_default)
            )
        self.metadata = meta
        return meta

    @classmethod
    def load(cls, directory: str | Path, *, check_versions: bool = True) -> ServableModel:
        """Load a model directory after checking it is complete, untampered and version-compatible."""
        directory = Path(directory)
        meta = read_metadata(directory)
        model_file = directory / MODEL_FILE
        if not model_file.is_file():
            raise ModelArtifactError(f"model artifact {directory} has no {MODEL_FILE}")
        expected = (meta.get("sha256") or {}).get(MODEL_FILE)
        actual = sha256_file(model_file)
        if expected != actual:
            raise ModelArtifactError(
                f"model artifact {directory} fails its integrity check: {MODEL_FILE} has sha256 {actual}, "
                f"metadata.json says {expected}"
            )
        if check_versions:
            here = package_versions()
            wrong = {
                name: (meta["versions"].get(name), here[name])
                for name in LOCKED_PACKAGES
                if meta.get("versions", {}).get(name) != here[name]
            }
            if wrong:
                detail = ", ".join(f"{k} trained with {a}, here {b}" for k, (a, b) in wrong.items())
                raise ModelArtifactError(
                    f"model artifact {directory} was built with other package versions ({detail}); "
                    "serve it from an image built from the same lock file as training"
                )
        try:
            pipeline = joblib.load(model_file)
        except Exception as exc:
            raise ModelArtifactError(
                f"model artifact {directory}: {MODEL_FILE} cannot be loaded: {exc}"
            ) from exc
        return cls(pipeline=pipeline, metadata=meta)

    # --- prediction ---
    def frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """The features in training order, with the dtypes the fitted preprocessing expects."""
        missing = [name for name in self.feature_names if name not in df.columns]
        if missing:
            raise ModelArtifactError(f"input lacks features {missing}")
        columns = {}
        for feature in self.metadata["features"]:
            col = df[feature["name"]]
            if feature["kind"] == "numeric":
                columns[feature["name"]] = pd.to_numeric(col, errors="raise").astype("float64")
            else:
                columns[feature["name"]] = col.astype("object").where(col.notna(), np.nan)
        return pd.DataFrame(columns, index=df.index)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(self.frame(df))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Class labels (as in the training data) for classification, values for regression."""
        if self.task == "classification":
            index = self.predict_proba(df).argmax(axis=1)
            return np.asarray(self.classes, dtype=object)[index]
        return self.pipeline.predict(self.frame(df))


def read_metadata(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    meta_file = directory / METADATA_FILE
    if not directory.is_dir():
        raise ModelArtifactError(f"model artifact {directory} is not a directory")
    if not meta_file.is_file():
        raise ModelArtifactError(f"model artifact {directory} has no {METADATA_FILE}")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelArtifactError(
            f"model artifact {directory}: {METADATA_FILE} is not valid JSON: {exc}"
        ) from exc
    for key in ("task", "target", "features", "sha256", "versions"):
        if key not in meta:
            raise ModelArtifactError(f"model artifact {directory}: {METADATA_FILE} lacks {key!r}")
    return meta


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to metadata.json")
