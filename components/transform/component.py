"""KFP shell of the transform stage."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def transform(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    target: str,
    task: str,
    max_categories: int,
    mlflow_tracking_uri: str,
    mlflow_run_id: str,
    transform_graph: Output[Artifact],
    transformed_train: Output[Dataset],
    transformed_eval: Output[Dataset],
):
    """Fit the preprocessing on the train split (booleans and datetimes to numbers, imputation, scaling,
    one-hot encoding, as ingestion typed the columns); transform train and eval."""
    from components.common.stage import failure_note
    from components.registry.tracking import Tracker
    from components.transform.core import fit_transform, track

    with failure_note(transform_graph.path):
        tracker = Tracker(mlflow_tracking_uri, mlflow_run_id)
        spec = fit_transform(
            train_path=train_data.path,
            eval_path=eval_data.path,
            target=target,
            task=task,
            max_categories=max_categories,
            transform_dir=transform_graph.path,
            transformed_train_path=transformed_train.path,
            transformed_eval_path=transformed_eval.path,
        )
        track(tracker, spec, params={"max_categories": max_categories})
    transform_graph.metadata.update(
        {"features": [f["name"] for f in spec.features], "model_inputs": len(spec.output_features)}
    )
    for artifact in (transformed_train, transformed_eval):
        artifact.metadata.update({"columns": len(spec.output_features), "format": "parquet"})
