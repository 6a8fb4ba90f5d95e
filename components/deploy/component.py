"""KFP shell of the deploy stage (runs only for a blessed, registered model)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    test_data: Input[Dataset],
    version: str,
    source: str,
    champion_version: str,
    deploy_target: str,
    model_name: str,
    kserve_namespace: str,
    kserve_deployment_mode: str,
    canary_traffic_percent: int,
    deploy_timeout_seconds: float,
    mlflow_tracking_uri: str,
    mlflow_run_id: str,
    mlflow_artifacts_destination: str,
    deployment: Output[Artifact],
) -> NamedTuple("DeployOutputs", [("model_uri", str), ("version", str), ("endpoint", str), ("status", str)]):
    """Deploy registered ``version`` and make it the champion: ``local`` (the registry alias the local model
    server follows) or ``kserve`` (InferenceService, smoke-tested with test rows, rolled back on failure;
    the alias moves once it serves). ``champion_version``: the champion this run compared its model with;
    if another run moved it meanwhile, nothing is deployed. ``deployment``: a JSON record of what was done."""
    import json
    from collections import namedtuple
    from dataclasses import asdict

    from components.common.stage import failure_note
    from components.deploy.core import deploy as run
    from components.deploy.kserve import KServeSettings
    from components.registry.tracking import Tracker

    with failure_note(deployment.path):
        tracker = Tracker(mlflow_tracking_uri, mlflow_run_id)
        result = run(
            model_dir=model.path,
            deploy_target=deploy_target,
            model_name=model_name,
            version=version,
            source=source,
            expected_champion=champion_version,
            tracking_uri=mlflow_tracking_uri,
            artifacts_destination=mlflow_artifacts_destination,
            test_path=test_data.path,
            kserve=KServeSettings(
                namespace=kserve_namespace,
                deployment_mode=kserve_deployment_mode,
                canary_traffic_percent=canary_traffic_percent,
                timeout_seconds=deploy_timeout_seconds,
            ),
        )
        record = {"model_name": model_name, **asdict(result)}
        tracker.log_params(
            {
                "deploy_target": deploy_target,
                "kserve_namespace": kserve_namespace,
                "kserve_deployment_mode": kserve_deployment_mode,
                "canary_traffic_percent": canary_traffic_percent,
            }
        )
        tracker.set_tags({"kfp_tabular.deployed": f"{result.model_uri} ({result.status})"})
    with open(deployment.path, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
    deployment.metadata.update(record)
    outputs = namedtuple("DeployOutputs", ["model_uri", "version", "endpoint", "status"])
    return outputs(result.model_uri, result.version, result.endpoint, result.status)
