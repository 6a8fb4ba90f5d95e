"""Serving a registry URI: ``models:/<name>@champion`` (or ``/<version>``), followed as it moves.

The local model server (``make serve``) serves what the registry says serves: it resolves the alias,
downloads that version's files into a cache folder (once per version), loads them with every check,
and, every ``follow_seconds``, looks again: when the alias moved (a deployment, ``make rollback``), it
loads the new version and swaps it in between two requests. A version that cannot be loaded is logged
and the current one keeps serving.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from components.common.logs import get_logger
from components.registry import models as registry

log = get_logger("serving")


class RegistrySource:
    def __init__(self, tracking_uri: str, uri: str, cache_dir: str | Path):
        self.tracking_uri = tracking_uri
        self.uri = uri
        self.cache_dir = Path(cache_dir).expanduser()

    def resolve(self) -> registry.Version | None:
        """The version the URI names now (None while the alias points nowhere)."""
        try:
            return registry.resolve(self.tracking_uri, self.uri)
        except registry.TrackingError as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                return None
            raise

    def fetch(self, version: registry.Version) -> Path:
        """The version's files in the cache (downloaded once; a partial download never counts)."""
        target = self.cache_dir / version.name / version.version
        if (target / "metadata.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version.version}-", dir=target.parent))
        try:
            files = registry.download(self.tracking_uri, version.uri, staging / "files")
            shutil.rmtree(target, ignore_errors=True)
            files.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def follow(self, model, every: float, stop: threading.Event) -> None:
        """Until ``stop``: every ``every`` seconds, swap in the version the URI names if it changed."""
        from components.serving.model import load_model_dir

        while not stop.wait(every):
            try:
                version = self.resolve()
                current = model._loaded.version if model._loaded else ""
                if version is None or version.version == current:
                    continue
                log.info(
                    "%s moved: version %s -> %s; loading it", self.uri, current or "none", version.version
                )
                model.swap(load_model_dir(self.fetch(version), version.version))
                model.ready = True
            except Exception as exc:  # keep serving what serves; say why the new one did not load
                log.warning(
                    "cannot follow %s: %s; still serving version %s",
                    self.uri,
                    exc,
                    model._loaded.version if model._loaded else "none",
                )
