"""Experiment tracking with MLflow: one MLflow run per pipeline run, written to by every stage.

The first stage creates the run (experiment = the model's name) and passes its id on; each later stage
opens a ``Tracker`` on the same run and logs what it found (parameters, metrics, tables, reports); the
pipeline's exit handler marks the run FINISHED or FAILED. Plain Python over ``MlflowClient``: no KFP.

Where it writes: ``tracking_uri``. Locally that is one SQLite file with an artifact folder beside it
(``local_store``); on a cluster an MLflow tracking server (``http://...``) that stores artifacts in
object storage (proxied: the pipeline's pods need no storage credentials).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from components.common.errors import KfpTabularError
from components.common.logs import get_logger

log = get_logger("tracking")

LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "artifacts"
MAX_PARAM_CHARS = 6000  # MLflow's limit on one parameter value
STATUS = {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "CANCELED": "KILLED", "CANCELLED": "KILLED"}


class TrackingError(KfpTabularError):
    """The tracking server or the registry cannot be reached or refused a write (names the URI)."""


def local_store(directory: str | os.PathLike) -> str:
    """The tracking URI of a local store: ``<directory>/mlflow.db`` (runs, registry) and
    ``<directory>/artifacts`` (files)."""
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / LOCAL_DB}"


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside a local SQLite store; the server decides otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS).as_uri()
    return None


def client(tracking_uri: str):
    """An ``MlflowClient`` on ``tracking_uri`` (tracking and registry), checked to answer."""
    if not tracking_uri:
        raise TrackingError("no MLflow tracking URI: set mlflow_tracking_uri")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # fail in seconds, not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow_client = MlflowClient(tracking_uri, tracking_uri)
    try:
        mlflow_client.search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(
            f"the MLflow tracking server {tracking_uri} does not answer: {_short(exc)}"
        ) from exc
    return mlflow_client


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"


class Tracker:
    """Logs to one MLflow run. Every failure to write raises ``TrackingError`` naming the URI."""

    def __init__(self, tracking_uri: str, run_id: str, mlflow_client=None):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.client = mlflow_client or client(tracking_uri)

    # --- the run ----------------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        tracking_uri: str,
        *,
        experiment: str,
        run_name: str,
        params: dict[str, Any],
        tags: dict[str, str],
        description: str = "",
    ) -> Tracker:
        """A new run in ``experiment`` (created if needed), with ``params`` and ``tags`` logged."""
        mlflow_client = client(tracking_uri)
        try:
            found = mlflow_client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id
                if found
                else mlflow_client.create_experiment(
                    experiment, artifact_location=artifact_root(tracking_uri)
                )
            )
            all_tags = {**tags, "mlflow.runName": run_name}
            if description:
                all_tags["mlflow.note.content"] = description
            run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        except TrackingError:
            raise
        except Exception as exc:
            raise TrackingError(f"cannot start an MLflow run at {tracking_uri}: {_short(exc)}") from exc
        tracker = cls(tracking_uri, run.info.run_id, mlflow_client)
        tracker.log_params(params)
        log.info("MLflow run %s in experiment %r at %s", tracker.run_id, experiment, tracking_uri)
        return tracker

    def finish(self, pipeline_status: str) -> str:
        """End the run: FINISHED for a SUCCEEDED pipeline, FAILED for a failed one (returns MLflow's status)."""
        status = STATUS.get(pipeline_status.upper(), "FAILED")
        self._call("end the run", self.client.set_terminated, self.run_id, status)
        return status

    @property
    def experiment_id(self) -> str:
        return self._call("read the run", self.client.get_run, self.run_id).info.experiment_id

    @property
    def artifact_uri(self) -> str:
        return self._call("read the run", self.client.get_run, self.run_id).info.artifact_uri

    # --- what stages log ----------------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            self._call(
                "log parameters", self.client.log_batch, self.run_id, params=items[start : start + 100]
            )

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(_metric_key(k), float(v), now, step)
            for k, v in metrics.items()
            if v is not None and isinstance(v, int | float) and math.isfinite(float(v))
        ]
        for start in range(0, len(items), 1000):
            self._call("log metrics", self.client.log_batch, self.run_id, metrics=items[start : start + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)[:5000]) for k, v in tags.items()]
        self._call("set tags", self.client.log_batch, self.run_id, tags=items)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._call("upload artifacts", self.client.log_artifacts, self.run_id, str(path), artifact_path)
        elif path.is_file():
            self._call("upload an artifact", self.client.log_artifact, self.run_id, str(path), artifact_path)

    def log_file(self, path: str | os.PathLike, artifact_file: str) -> None:
        """Upload one file under the name ``artifact_file`` (``validate/report.md``): KFP artifact files have
        no extension, and the MLflow UI shows a file by its extension."""
        import shutil
        import tempfile

        if not Path(path).is_file():
            return
        folder, name = artifact_file.rsplit("/", 1) if "/" in artifact_file else (None, artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / name
            shutil.copyfile(path, copy)
            self._call("upload an artifact", self.client.log_artifact, self.run_id, str(copy), folder)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self._call("upload a table", self.client.log_dict, self.run_id, data, artifact_file)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table (shown in the run's artifacts and comparable across runs)."""
        import pandas as pd

        self._call("upload a table", self.client.log_table, self.run_id, pd.DataFrame(rows), artifact_file)

    def log_dataset(
        self,
        *,
        name: str,
        digest: str,
        source: str,
        schema: dict[str, Any],
        profile: dict[str, Any],
        context: str,
    ) -> None:
        """The input table as an MLflow dataset input of the run (what the UI's "Datasets used" shows)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="uri",
            source=json.dumps({"uri": source}),
            schema=json.dumps(schema, sort_keys=True),
            profile=json.dumps(profile, sort_keys=True),
        )
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        self._call("log the input dataset", self.client.log_inputs, self.run_id, datasets=inputs)

    def child_runs(self, rows: Iterable[tuple[str, dict[str, Any], dict[str, float]]]) -> None:
        """One nested run per (name, params, metrics): the search's trials, comparable in the UI."""
        experiment_id = self.experiment_id
        for name, params, metrics in rows:
            child = self._call(
                "start a child run",
                self.client.create_run,
                experiment_id,
                run_name=name,
                tags={"mlflow.parentRunId": self.run_id, "mlflow.runName": name},
            )
            nested = Tracker(self.tracking_uri, child.info.run_id, self.client)
            nested.log_params(params)
            nested.log_metrics(metrics)
            self._call("end a child run", self.client.set_terminated, child.info.run_id, "FINISHED")

    def _call(self, what: str, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            raise TrackingError(f"MLflow at {self.tracking_uri}: cannot {what}: {_short(exc)}") from exc


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 1] + "…"


def _metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / space``: anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(key))


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"prefix.a.b": 1}`` for numbers only."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(name, value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out
