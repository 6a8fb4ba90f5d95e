"""KFP shell of the deploy stage (runs only for a blessed model)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    test_data: Input[Dataset],
    deploy_target: str,
    model_name: str,
    model_repository: str,
    kserve_namespace: str,
    kserve_deployment_mode: str,
    canary_traffic_percent: int,
    deploy_timeout_seconds: float,
    deployment: Output[Artifact],
) -> NamedTuple("DeployOutputs", [("model_uri", str), ("version", int), ("endpoint", str), ("status", str)]):
    """Deploy the blessed model: ``local`` (versioned local model repository) or ``kserve`` (InferenceService,
    smoke-tested with test rows, rolled back on failure). ``deployment``: a JSON record of what was done."""
    import json
    from collections import namedtuple
    from dataclasses import asdict

    from components.common.stage import failure_note
    from components.deploy.core import deploy as run
    from components.deploy.kserve import KServeSettings

    with failure_note(deployment.path):
        result = run(
            model_dir=model.path,
            deploy_target=deploy_target,
            model_name=model_name,
            model_repository=model_repository,
            source_uri=model.uri,
            test_path=test_data.path,
            kserve=KServeSettings(
                namespace=kserve_namespace,
                deployment_mode=kserve_deployment_mode,
                canary_traffic_percent=canary_traffic_percent,
                timeout_seconds=deploy_timeout_seconds,
            ),
        )
    record = {"model_name": model_name, **asdict(result)}
    with open(deployment.path, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
    deployment.metadata.update(record)
    outputs = namedtuple("DeployOutputs", ["model_uri", "version", "endpoint", "status"])
    return outputs(result.model_uri, result.version, result.endpoint, result.status)
