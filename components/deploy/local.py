"""The ``local`` deploy target: a versioned local model repository that the model server loads.

Layout (one folder per model, one numbered folder per published version)::

    <repository>/<model_name>/1/{model.joblib, metadata.json, deployment.json}
    <repository>/<model_name>/2/...
    <repository>/<model_name>/LATEST      the version the server serves

Publishing verifies the artifact (integrity and versions) first, copies it into a hidden temporary
folder and renames that into place, so a reader never sees a half-written version. Publishing a
model whose files equal the latest version's (same sha256, same metadata) publishes nothing new, so re-runs
are idempotent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.common.errors import ModelArtifactError
from components.common.io import atomic_file
from components.common.logs import get_logger
from components.common.servable import ServableModel, artifact_files, read_metadata

log = get_logger("deploy")
LATEST_FILE = "LATEST"
DEPLOYMENT_FILE = "deployment.json"


@dataclass
class Publication:
    model_name: str
    version: int
    path: str
    sha256: str
    new: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def versions(model_root: Path) -> list[int]:
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.is_dir() and p.name.isdigit())


def latest_version_dir(repository: str | Path, model_name: str) -> Path:
    """The folder of the version ``LATEST`` names (what ``make serve`` serves)."""
    root = Path(repository).expanduser() / model_name
    latest = root / LATEST_FILE
    if not latest.is_file():
        raise ModelArtifactError(
            f"no model {model_name!r} has been deployed to {Path(repository).expanduser()}"
        )
    return root / latest.read_text().strip()


def publish_local(
    *, model_dir: str, repository: str, model_name: str, deployment: dict[str, Any] | None = None
) -> Publication:
    model = ServableModel.load(model_dir)  # refuses a broken or tampered artifact
    root = Path(repository).expanduser().resolve() / model_name
    root.mkdir(parents=True, exist_ok=True)
    existing = versions(root)
    if existing:
        current = read_metadata(root / str(existing[-1]))
        if current == model.metadata:  # same weights (sha256 in it) and same metadata
            _point_latest(root, existing[-1])
            log.info(
                "model %s is already version %d of %r: nothing new published",
                model.sha256[:12],
                existing[-1],
                model_name,
            )
            return Publication(model_name, existing[-1], str(root / str(existing[-1])), model.sha256, False)

    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=root))
    staging.chmod(0o755)
    try:
        for name in artifact_files(model.metadata):
            shutil.copy2(Path(model_dir) / name, staging / name)
        record = {"published_at": datetime.now(UTC).isoformat(timespec="seconds"), "source": str(model_dir)}
        record.update(deployment or {})
        (staging / DEPLOYMENT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
        ServableModel.load(staging)  # the copy is whole
        version = (existing[-1] if existing else 0) + 1
        while True:  # another publisher may take a number first: rename fails, try the next one
            try:
                os.rename(staging, root / str(version))
                break
            except OSError:
                if not (root / str(version)).exists():
                    raise
                version += 1
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _point_latest(root, version)
    path = root / str(version)
    log.info("published %r version %d at %s (sha256 %s)", model_name, version, path, model.sha256[:12])
    return Publication(model_name, version, str(path), model.sha256, True)


def _point_latest(root: Path, version: int) -> None:
    with atomic_file(root / LATEST_FILE) as tmp:
        tmp.write_text(f"{version}\n")
