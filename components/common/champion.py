"""Fetching the model a run is measured against (the champion, or an explicit baseline) as a directory.

Which model that is, is decided once per pipeline run, by its first step (``components/track``): the
registry's ``champion`` of the model name (``models:/<name>/<version>``), or ``baseline_model_uri``.
Validation compares the new training data with the data that model was trained on (its
``train_stats.pb``); evaluation compares the new model with it on the new test split.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from components.common.errors import ModelArtifactError
from components.common.io import REMOTE_SCHEMES, resolve_uri

REGISTRY_SCHEMES = ("models:/", "runs:/")


@contextlib.contextmanager
def local_model_dir(uri: str, what: str = "model", tracking_uri: str = "") -> Iterator[Path]:
    """A local directory holding the model at ``uri``: a path or ``file://`` (used in place), an
    s3/gs/http folder (copied), or a registry URI (``models:/name/3``, downloaded from ``tracking_uri``)."""
    path = resolve_uri(uri) if not uri.startswith(REGISTRY_SCHEMES) else uri
    if not path.startswith(REMOTE_SCHEMES + REGISTRY_SCHEMES):
        if not Path(path).is_dir():
            raise ModelArtifactError(f"{what} {uri!r} does not exist (or is not a model directory)")
        yield Path(path)
        return
    local = Path(tempfile.mkdtemp(prefix="model-"))
    try:
        if path.startswith(REGISTRY_SCHEMES):
            from components.registry.models import download

            yield download(tracking_uri, uri, local / "model")
            return
        import fsspec

        try:
            fs, remote = fsspec.core.url_to_fs(path)
            fs.get(remote.rstrip("/") + "/", str(local), recursive=True)
        except Exception as exc:
            raise ModelArtifactError(f"{what} {uri!r} cannot be fetched: {exc}") from exc
        yield local
    finally:
        shutil.rmtree(local, ignore_errors=True)
