"""KFP shell of the register step (runs only for a blessed model)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def register(
    model: Input[Model],
    model_name: str,
    mlflow_tracking_uri: str,
    mlflow_run_id: str,
    registered: Output[Artifact],
) -> NamedTuple("Registered", [("version", str), ("model_uri", str), ("source", str)]):
    """Register the blessed model as a new version of ``model_name`` in the MLflow Model Registry (linked to
    this run); deployment makes it the champion. ``registered``: a JSON record of the version."""
    import json
    from collections import namedtuple

    from components.common.stage import failure_note
    from components.register.core import register_model

    with failure_note(registered.path):
        version = register_model(
            tracking_uri=mlflow_tracking_uri,
            run_id=mlflow_run_id,
            model_dir=model.path,
            model_name=model_name,
        )
    record = {
        "model_name": model_name,
        "version": version.version,
        "model_uri": version.uri,
        "source": version.source,
    }
    with open(registered.path, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
    registered.metadata.update(record)
    return namedtuple("Registered", ["version", "model_uri", "source"])(
        version.version, version.uri, version.source
    )
