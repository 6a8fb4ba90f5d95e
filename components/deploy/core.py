"""Deployment: dispatch to a deploy target.

- ``local``: publish into a versioned local model repository (``deploy/local.py``);
- ``kserve``: create or patch a KServe InferenceService pointing at the artifact in object storage,
  wait for it, smoke-test it against the model's in-process answers, roll back on failure
  (``deploy/kserve.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from components.common.errors import ConfigError
from components.common.io import read_parquet
from components.common.logs import get_logger
from components.common.servable import ServableModel
from components.deploy.kserve import KServeSettings, deploy_kserve
from components.deploy.local import publish_local

log = get_logger("deploy")
TARGETS = ("local", "kserve")
SMOKE_ROWS = 20


@dataclass
class DeployResult:
    target: str
    model_uri: str  # where the model now lives (local version folder, or the storage URI)
    version: int  # local repository version; 0 for kserve
    endpoint: str  # the InferenceService URL (kserve); "" for local
    status: str  # published | unchanged | created | updated


def storage_uri_for(artifact_uri: str) -> str:
    """KServe's storage URI for a KFP artifact: KFP's ``minio://bucket/key`` is S3 to KServe."""
    if artifact_uri.startswith("minio://"):
        return "s3://" + artifact_uri.removeprefix("minio://")
    if artifact_uri.startswith(("s3://", "gs://", "pvc://", "https://")):
        return artifact_uri
    raise ConfigError(
        f"the kserve target needs the model in object storage, but its artifact is at {artifact_uri!r}; "
        "run the pipeline on a KFP cluster, or use deploy_target local"
    )


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
    model_repository: str = "",
    source_uri: str = "",
    test_path: str = "",
    kserve: KServeSettings | None = None,
) -> DeployResult:
    if deploy_target == "local":
        published = publish_local(
            model_dir=model_dir,
            repository=model_repository,
            model_name=model_name,
            deployment={"target": "local", "source_uri": source_uri},
        )
        return DeployResult(
            "local", published.path, published.version, "", "published" if published.new else "unchanged"
        )
    if deploy_target == "kserve":
        settings = kserve or KServeSettings()
        settings.check()
        storage_uri = storage_uri_for(source_uri)
        model = ServableModel.load(model_dir)  # the artifact is whole before anything is deployed
        rows, expected = smoke_inputs(model, test_path)
        import requests
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        result = deploy_kserve(
            name=model_name,
            storage_uri=storage_uri,
            settings=settings,
            api=client.CustomObjectsApi(),
            smoke_rows=rows,
            expected=expected,
            post=lambda url, body: requests.post(url, json=body, timeout=30),
        )
        return DeployResult("kserve", storage_uri, 0, result.url, result.status)
    raise ConfigError(f"unknown deploy_target {deploy_target!r}; available: {list(TARGETS)}")
