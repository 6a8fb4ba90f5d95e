"""KFP shell of the deploy stage (runs only for a blessed model)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Model

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    deploy_target: str,
    model_name: str,
    model_repository: str,
) -> NamedTuple("DeployOutputs", [("model_uri", str), ("version", int)]):
    """Publish the blessed model to the deploy target (``local``: a versioned local model repository)."""
    from collections import namedtuple

    from components.deploy.core import deploy as run

    result = run(
        model_dir=model.path,
        deploy_target=deploy_target,
        model_name=model_name,
        model_repository=model_repository,
        source_uri=model.uri,
    )
    return namedtuple("DeployOutputs", ["model_uri", "version"])(result.path, result.version)
