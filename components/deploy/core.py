"""Deployment: a registered version becomes the champion, where it serves.

- ``local``: the version becomes ``champion`` in the registry; the local model server
  (``make serve``) serves ``models:/<name>@champion`` and follows the alias (``make rollback`` too);
- ``kserve``: a KServe InferenceService is created or patched to the version's files in object
  storage, waited for, smoke-tested against the model's in-process answers and rolled back on failure
  (``deploy/kserve.py``); a canary is marked ``challenger`` meanwhile; ``champion`` moves only after
  the rollout succeeded.

Either way ``champion`` moves only if it still is the version this run compared its model with (or
there still is none), so two runs racing for one model name cannot both become champion, and a version
that is registered but not deployed never becomes champion.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.errors import ConfigError
from components.common.io import read_parquet
from components.common.logs import get_logger
from components.common.servable import ServableModel
from components.deploy.kserve import KServeSettings, deploy_kserve
from components.registry import models as registry

log = get_logger("deploy")
TARGETS = ("local", "kserve")
SMOKE_ROWS = 20


@dataclass
class DeployResult:
    target: str
    model_uri: str  # the registry version (models:/<name>/<version>)
    version: str  # the registry version now champion
    previous: str  # the champion before ("" on a first deployment)
    endpoint: str  # the InferenceService URL (kserve); "" for local
    status: str  # promoted | unchanged (local); created | updated | unchanged (kserve)
    storage_uri: str = ""  # where KServe reads the files (kserve)


def smoke_inputs(model: ServableModel, test_path: str, rows: int = SMOKE_ROWS) -> tuple[list[dict], list]:
    """Rows of the test split as V1 records, and the answers the model gives them in-process."""
    from components.serving.responses import v1_predictions

    test = read_parquet(test_path).head(rows)
    names = model.feature_names
    records = test[names].astype(object).where(test[names].notna(), None).to_dict(orient="records")
    output = (
        model.predict_proba(test)
        if model.task == "classification"
        else model.pipeline.predict(model.frame(test))
    )
    return records, v1_predictions(model.task, model.classes, output)


def deploy(
    *,
    model_dir: str,
    deploy_target: str,
    model_name: str,
    version: str,
    source: str,
    expected_champion: str,
    tracking_uri: str,
    artifacts_destination: str = "",
    test_path: str = "",
    kserve: KServeSettings | None = None,
) -> DeployResult:
    """Deploy registered ``version`` of ``model_name`` (its files at ``source``; ``model_dir`` the same
    model as a local directory, for the smoke test) and make it the champion."""
    expected = expected_champion or None
    if deploy_target not in TARGETS:
        raise ConfigError(f"unknown deploy_target {deploy_target!r}; available: {list(TARGETS)}")
    current = registry.champion(tracking_uri, model_name)
    current_version = current.version if current else None
    if current_version not in (expected, version):  # fail before touching what serves
        raise registry.ChampionChangedError(
            f"the champion of {model_name!r} is version {current_version}, not {expected} as when this run "
            "compared its model with it: another run deployed meanwhile; run again to compare with it"
        )
    uri = f"models:/{model_name}/{version}"
    if deploy_target == "local":
        previous = registry.promote(tracking_uri, model_name, version, expected)
        status = "unchanged" if previous == version else "promoted"
        log.info("local: %s is the champion (was %s); `make serve` serves it", uri, previous)
        return DeployResult("local", uri, version, previous or "", "", status)

    settings = kserve or KServeSettings()
    settings.check()
    storage = registry.storage_uri(source, artifacts_destination)
    if not storage.startswith(("s3://", "gs://", "pvc://", "https://")):
        raise ConfigError(
            f"the kserve target needs the model in object storage, but version {version} is at {source!r}; "
            "track to the cluster's MLflow server (mlflow_tracking_uri), or use deploy_target local"
        )
    model = ServableModel.load(model_dir)  # the artifact is whole before anything is deployed
    rows, expected_answers = smoke_inputs(model, test_path)
    import requests
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    canary = bool(settings.canary_traffic_percent and current_version and current_version != version)
    if canary:
        registry.set_challenger(tracking_uri, model_name, version)
    try:
        result = deploy_kserve(
            name=model_name,
            storage_uri=storage,
            settings=settings,
            api=client.CustomObjectsApi(),
            smoke_rows=rows,
            expected=expected_answers,
            post=lambda url, body: requests.post(url, json=body, timeout=30),
        )
    except BaseException:
        if canary:
            registry.set_challenger(tracking_uri, model_name, None)
        raise
    previous = registry.promote(tracking_uri, model_name, version, expected)
    return DeployResult("kserve", uri, version, previous or "", result.url, result.status, storage)
