"""KFP shell of the train stage."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train(
    transformed_train: Input[Dataset],
    transformed_eval: Input[Dataset],
    transform_graph: Input[Artifact],
    statistics: Input[Artifact],
    schema: Input[Artifact],
    candidates: list,
    max_trials: int,
    max_seconds: float,
    cv_folds: int,
    search_sample_rows: int,
    seed: int,
    ensemble_size: int,
    mlflow_tracking_uri: str,
    mlflow_run_id: str,
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Select scikit-learn/XGBoost/LightGBM candidates (or an ensemble of the best) by cross-validation under a
    budget; write the servable model
    (the fitted preprocessing and estimator, with the train split's TFDV statistics and the schema)."""
    import os

    from components.common.stage import failure_note
    from components.registry.tracking import Tracker
    from components.train.core import track
    from components.train.core import train as run

    with failure_note(model.path):
        tracker = Tracker(mlflow_tracking_uri, mlflow_run_id)
        result = run(
            transformed_train_path=transformed_train.path,
            transformed_eval_path=transformed_eval.path,
            transform_dir=transform_graph.path,
            candidates=candidates,
            max_trials=max_trials,
            max_seconds=max_seconds,
            cv_folds=cv_folds,
            search_sample_rows=search_sample_rows,
            seed=seed,
            ensemble_size=ensemble_size,
            model_dir=model.path,
            train_stats_path=os.path.join(statistics.path, "train.pb"),
            schema_path=schema.path,
        )
        track(
            tracker,
            result,
            params={
                "candidates": candidates,
                "max_trials": max_trials,
                "max_seconds": max_seconds,
                "cv_folds": cv_folds,
                "search_sample_rows": search_sample_rows,
                "ensemble_size": ensemble_size,
            },
        )
    meta = result.model_metadata
    model.metadata.update(
        {
            "framework": meta["framework"],
            "estimator": meta["estimator"],
            "task": meta["task"],
            "target": meta["target"],
            "features": [f["name"] for f in meta["features"]],
            "classes": [str(c) for c in meta["classes"]],
            "versions": meta["versions"],
            "sha256": meta["sha256"]["model.joblib"],
            "files": sorted(meta["sha256"]),
            "params": meta["params"],
        }
    )
    metrics.log_metric(f"cv_{result.scoring}", result.cv_score)
    metrics.log_metric("model_bytes", result.model_bytes)
    for name, value in result.eval_metrics.items():
        metrics.log_metric(f"eval_{name}", value)
    metrics.log_metric("trials", len(result.trials))
