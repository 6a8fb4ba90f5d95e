"""The model a new run is measured against: the one serving now (the champion), or an explicit baseline.

Validation compares the new training data with the data the champion was trained on (its
``train_stats.pb``); evaluation compares the new model with the champion on the new test split.
Which model that is: ``baseline_model_uri`` when set; otherwise, for the ``local`` deploy target, the
version the local model repository serves (``<repository>/<model_name>/LATEST``).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from components.common.errors import ModelArtifactError
from components.common.io import REMOTE_SCHEMES, resolve_uri


def current_model_uri(
    *,
    baseline_model_uri: str = "",
    deploy_target: str = "local",
    model_repository: str = "",
    model_name: str = "",
) -> str:
    """The URI of the model to compare with, or "" when there is none yet (a first run)."""
    if baseline_model_uri.strip():
        return baseline_model_uri.strip()
    if deploy_target == "local" and model_repository and model_name:
        from components.deploy.local import LATEST_FILE

        root = Path(model_repository).expanduser() / model_name
        latest = root / LATEST_FILE
        if latest.is_file():
            return str(root / latest.read_text().strip())
    return ""


@contextlib.contextmanager
def local_model_dir(uri: str, what: str = "model") -> Iterator[Path]:
    """A local directory holding the model at ``uri`` (a path, ``file://``, or s3/gs/http folder, copied)."""
    path = resolve_uri(uri)
    if not path.startswith(REMOTE_SCHEMES):
        if not Path(path).is_dir():
            raise ModelArtifactError(f"{what} {uri!r} does not exist (or is not a model directory)")
        yield Path(path)
        return
    import fsspec

    local = Path(tempfile.mkdtemp(prefix="model-"))
    try:
        try:
            fs, remote = fsspec.core.url_to_fs(path)
            fs.get(remote.rstrip("/") + "/", str(local), recursive=True)
        except Exception as exc:
            raise ModelArtifactError(f"{what} {uri!r} cannot be fetched: {exc}") from exc
        yield local
    finally:
        shutil.rmtree(local, ignore_errors=True)
