"""The one servable model artifact: the preprocessing fitted in training plus the estimator.

A model directory holds::

    model.joblib     sklearn Pipeline([("preprocess", [derive, columns, float32]), ("model", estimator)])
    metadata.json    task, target, features (name, kind, ...), column typing, classes, framework,
                     versions, and the sha256 of every other file
    train_stats.pb   TFDV statistics of the training split (the next run's drift reference)
    schema.pbtxt     the TFDV schema of the training data (serving environment: no target)

Training writes it, evaluation and the local deploy target verify and load it, and the model server
loads exactly the same directory, so serving applies exactly what training fitted.
"""

from __future__ import annotations

import json
import platform
import shutil
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
LOCKED_PACKAGES = ("scikit-learn", "xgboost-cpu", "lightgbm", "numpy", "pandas", "joblib")
# Packages added to the lock after artifacts already existed: an artifact that does not record one was
# trained before it was a dependency, so it cannot contain its models.
LATER_PACKAGES = ("lightgbm",)


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
    def save(self, directory: str | Path, files: dict[str, str | Path] | None = None) -> dict[str, Any]:
        """Write the model directory atomically; returns the metadata written (with the hashes).

        ``files``: more files the model carries (name in the directory -> source path), such as the
        training data's statistics and schema; each is hashed and checked on every load like the model.
        """
        with atomic_dir(directory) as tmp:
            joblib.dump(self.pipeline, tmp / MODEL_FILE)
            for name, source in (files or {}).items():
                shutil.copyfile(source, tmp / name)
            meta = dict(self.metadata)
            meta["format_version"] = FORMAT_VERSION
            meta["versions"] = package_versions()
            meta["sha256"] = {name: sha256_file(tmp / name) for name in sorted([MODEL_FILE, *(files or {})])}
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
        check_files(directory, meta)
        if check_versions:
            here = package_versions()
            wrong = {
                name: (meta["versions"].get(name), here[name])
                for name in LOCKED_PACKAGES
                if meta.get("versions", {}).get(name) != here[name]
                and not (name in LATER_PACKAGES and name not in meta.get("versions", {}))
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
            elif feature["kind"] == "categorical":
                columns[feature["name"]] = col.astype("object").where(col.notna(), np.nan)
            else:  # boolean, datetime: the fitted preprocessing's first step reads the raw values
                columns[feature["name"]] = col.astype("object")
        return pd.DataFrame(columns, index=df.index)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(self.frame(df))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        """Class labels (as in the training data) for classification, values for regression."""
        if self.task == "classification":
            index = self.predict_proba(df).argmax(axis=1)
            return np.asarray(self.classes, dtype=object)[index]
        return self.pipeline.predict(self.frame(df))


def artifact_files(meta: dict[str, Any]) -> list[str]:
    """Every file of a model directory: those its metadata hashes, and the metadata itself."""
    return sorted({MODEL_FILE, *(meta.get("sha256") or {})}) + [METADATA_FILE]


def check_files(directory: str | Path, meta: dict[str, Any]) -> None:
    """Every file the metadata lists is there with the sha256 it says (the model file always is listed)."""
    directory = Path(directory)
    hashes = meta.get("sha256") or {}
    if MODEL_FILE not in hashes:
        raise ModelArtifactError(f"model artifact {directory}: {METADATA_FILE} has no sha256 of {MODEL_FILE}")
    for name, expected in sorted(hashes.items()):
        path = directory / name
        if not path.is_file():
            raise ModelArtifactError(f"model artifact {directory} has no {name}")
        actual = sha256_file(path)
        if expected != actual:
            raise ModelArtifactError(
                f"model artifact {directory} fails its integrity check: {name} has sha256 {actual}, "
                f"metadata.json says {expected}"
            )


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
