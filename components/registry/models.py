"""The model registry (MLflow): versions of a model, and aliases that carry their state.

- A blessed model becomes a new version of the registered model ``model_name``; its files are the one
  servable directory (model.joblib, metadata.json, train_stats.pb, schema.pbtxt), logged as the run's
  ``model`` artifact, so a version links back to the run, its data, config and reports.
- ``champion`` is the version that serves. Deployment moves it only after the rollout succeeded, and
  only if it still points where it pointed when the run compared its model with it (two racing runs
  cannot both become champion). ``challenger`` marks a version in canary.
- Every move of ``champion`` is recorded in the registered model's tag ``kfp-tabular.champion_history``;
  ``rollback`` moves it back to the version before.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.common.errors import KfpTabularError
from components.common.logs import get_logger
from components.common.servable import ServableModel
from components.registry.tracking import Tracker, TrackingError, _short, client

log = get_logger("registry")

CHAMPION, CHALLENGER = "champion", "challenger"
HISTORY_TAG = "kfp-tabular.champion_history"
MODEL_ARTIFACT = "model"  # the run's artifact folder holding the servable directory
HISTORY_LENGTH = 100


class ChampionChangedError(KfpTabularError):
    """Another run moved ``champion`` after this run compared its model with it."""


@dataclass
class Version:
    name: str
    version: str
    source: str  # where its files are (the run's artifact URI)
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _version(mv) -> Version:
    return Version(mv.name, str(mv.version), mv.source, mv.run_id or "")


def champion(tracking_uri: str, name: str, mlflow_client=None) -> Version | None:
    """The version ``champion`` points at, or None (no such model yet, or no champion)."""
    mlflow_client = mlflow_client or client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        return _version(mlflow_client.get_model_version_by_alias(name, CHAMPION))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise TrackingError(f"the model registry at {tracking_uri} cannot be read: {_short(exc)}") from exc


def register(tracker: Tracker, model_dir: str | os.PathLike, name: str, tags: dict[str, str]) -> Version:
    """Log the servable directory as the run's ``model`` artifact and make it a new version of ``name``."""
    from mlflow.exceptions import MlflowException

    model = ServableModel.load(model_dir)  # whole and untampered before anything is registered
    tracker.log_artifact(model_dir, MODEL_ARTIFACT)
    mlflow_client = tracker.client
    try:
        try:
            mlflow_client.create_registered_model(
                name, description="Registered by kfp-tabular: one servable directory per version."
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mv = mlflow_client.create_model_version(
            name,
            source=f"{tracker.artifact_uri}/{MODEL_ARTIFACT}",
            run_id=tracker.run_id,
            tags={"sha256": model.sha256, **tags},
            description=f"{model.metadata.get('estimator')} ({model.metadata.get('framework')}), "
            f"{model.task} of {model.metadata['target']!r}",
        )
        mv = _wait_ready(mlflow_client, name, mv)
    except MlflowException as exc:
        raise TrackingError(
            f"the model registry at {tracker.tracking_uri} refused version of {name!r}: {_short(exc)}"
        ) from exc
    version = _version(mv)
    log.info("registered %s (run %s, sha256 %s)", version.uri, tracker.run_id, model.sha256[:12])
    return version


def _wait_ready(mlflow_client, name: str, mv, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while mv.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
        time.sleep(0.5)
        mv = mlflow_client.get_model_version(name, mv.version)
    if mv.status != "READY":
        raise TrackingError(f"version {mv.version} of {name!r} is {mv.status}: {mv.status_message}")
    return mv


def promote(tracking_uri: str, name: str, version: str, expected: str | None) -> str | None:
    """Make ``version`` the champion if the champion is still ``expected`` (None: there was none).

    Returns the previous champion's version. Raises ``ChampionChangedError`` when another run moved the
    champion since this run compared its model with it: this run's model was not compared with the
    model now serving, so it must not replace it.
    """
    mlflow_client = client(tracking_uri)
    with _champion_lock(tracking_uri, name):
        current = champion(tracking_uri, name, mlflow_client)
        current_version = current.version if current else None
        if current_version == version:
            return current_version
        if current_version != expected:
            raise ChampionChangedError(
                f"the champion of {name!r} is version {current_version}, not {expected} as when this run "
                f"compared its model with it: another run deployed meanwhile; run again to compare with it"
            )
        _set_champion(mlflow_client, tracking_uri, name, version)
    now = champion(tracking_uri, name, mlflow_client)
    if now is None or now.version != version:  # a remote store has no lock: check who won
        raise ChampionChangedError(
            f"another run moved the champion of {name!r} to version {now.version if now else None} at the "
            f"same time as this run (version {version})"
        )
    log.info("champion of %r: version %s (was %s)", name, version, current_version)
    return current_version


def set_challenger(tracking_uri: str, name: str, version: str | None) -> None:
    """Point ``challenger`` at ``version`` (in canary), or remove it (None)."""
    mlflow_client = client(tracking_uri)
    try:
        if version is None:
            with contextlib.suppress(Exception):
                mlflow_client.delete_registered_model_alias(name, CHALLENGER)
        else:
            mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
    except Exception as exc:
        raise TrackingError(
            f"the model registry at {tracking_uri}: cannot set {CHALLENGER}: {_short(exc)}"
        ) from exc


def history(tracking_uri: str, name: str, mlflow_client=None) -> list[str]:
    """The versions ``champion`` pointed at, oldest first."""
    mlflow_client = mlflow_client or client(tracking_uri)
    tags = mlflow_client.get_registered_model(name).tags
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def rollback(tracking_uri: str, name: str, to: str | None = None) -> tuple[str | None, str]:
    """Move ``champion`` back: to version ``to``, or to the version that was champion before the current
    one. Returns (from, to)."""
    mlflow_client = client(tracking_uri)
    with _champion_lock(tracking_uri, name):
        current = champion(tracking_uri, name, mlflow_client)
        current_version = current.version if current else None
        if to is None:
            earlier = [v for v in history(tracking_uri, name, mlflow_client) if v != current_version]
            if not earlier:
                raise KfpTabularError(
                    f"{name!r} has no earlier champion to roll back to (champion: {current_version})"
                )
            to = earlier[-1]
        try:
            mlflow_client.get_model_version(name, to)
        except Exception as exc:
            raise KfpTabularError(f"{name!r} has no version {to}: {_short(exc)}") from exc
        _set_champion(mlflow_client, tracking_uri, name, str(to), rolled_back_from=current_version)
    log.info("rolled back %r: champion version %s -> %s", name, current_version, to)
    return current_version, str(to)


def _set_champion(
    mlflow_client, tracking_uri: str, name: str, version: str, rolled_back_from: str | None = None
):
    try:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
        past = [v for v in json.loads(mlflow_client.get_registered_model(name).tags.get(HISTORY_TAG, "[]"))]
        if rolled_back_from is not None and past and past[-1] == rolled_back_from:
            past = past[
                :-1
            ]  # the rolled-back version leaves the history: the next rollback goes further back
        if not past or past[-1] != version:
            past.append(version)
        mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(past[-HISTORY_LENGTH:]))
        mlflow_client.set_model_version_tag(
            name, version, "champion_since", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )
        with contextlib.suppress(Exception):
            if str(mlflow_client.get_model_version_by_alias(name, CHALLENGER).version) == str(version):
                mlflow_client.delete_registered_model_alias(name, CHALLENGER)
    except Exception as exc:
        raise TrackingError(
            f"the model registry at {tracking_uri}: cannot move {CHAMPION}: {_short(exc)}"
        ) from exc


@contextlib.contextmanager
def _champion_lock(tracking_uri: str, name: str) -> Iterator[None]:
    """An exclusive lock around check-and-move of ``champion`` for a local store (a file lock beside the
    SQLite file); a tracking server has none, so ``promote`` checks the outcome afterwards."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(tracking_uri.removeprefix("sqlite:///")).with_suffix(f".{name}.champion.lock")
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download(tracking_uri: str, uri: str, destination: str | os.PathLike) -> Path:
    """The files of a registry URI (``models:/name/3``, ``models:/name@champion``) or a run artifact, in
    ``destination`` (which must not exist yet)."""
    import mlflow

    client(tracking_uri)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=False)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination)))
    except Exception as exc:
        raise TrackingError(f"cannot download {uri} from {tracking_uri}: {_short(exc)}") from exc


def resolve(tracking_uri: str, uri: str) -> Version:
    """The version a ``models:/name/<version>`` or ``models:/name@alias`` URI names."""
    if not uri.startswith("models:/"):
        raise KfpTabularError(
            f"{uri!r} is not a registry URI (models:/<name>/<version> or models:/<name>@<alias>)"
        )
    mlflow_client = client(tracking_uri)
    path = uri.removeprefix("models:/")
    try:
        if "@" in path:
            name, alias = path.split("@", 1)
            return _version(mlflow_client.get_model_version_by_alias(name, alias))
        name, version = path.rsplit("/", 1)
        return _version(mlflow_client.get_model_version(name, version))
    except Exception as exc:
        raise TrackingError(f"the model registry at {tracking_uri} has no {uri}: {_short(exc)}") from exc


def storage_uri(source: str, artifacts_destination: str = "") -> str:
    """Where KServe's storage initializer reads a version's files. A tracking server that proxies
    artifacts hands out ``mlflow-artifacts:/<path>``, stored at ``<artifacts_destination>/<path>``."""
    if source.startswith("mlflow-artifacts:"):
        if not artifacts_destination:
            raise KfpTabularError(
                f"version source {source} is proxied by the tracking server: set mlflow_artifacts_destination "
                "to the server's --artifacts-destination (e.g. s3://mlflow) so KServe can read it"
            )
        path = source.removeprefix("mlflow-artifacts:").lstrip("/")
        return f"{artifacts_destination.rstrip('/')}/{path}"
    return source
