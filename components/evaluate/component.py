"""KFP shell of the evaluate stage (the quality gate)."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test_data: Input[Dataset],
    thresholds: dict,
    champion_uri: str,
    baseline_tolerance: float,
    mlflow_tracking_uri: str,
    mlflow_run_id: str,
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
) -> bool:
    """Score the model on the test split; return whether it may be deployed (blessed), for ``dsl.If``.

    A single ``bool`` output, not a NamedTuple: kfp.local 2.17 cannot resolve a condition on a named
    output. The reason for the decision is in the report and its metadata.
    """
    import math

    from components.common.stage import failure_note
    from components.evaluate.core import evaluate as run
    from components.evaluate.core import track
    from components.registry.tracking import Tracker

    with failure_note(report.path):
        tracker = Tracker(mlflow_tracking_uri, mlflow_run_id)
        result = run(
            model_dir=model.path,
            test_path=test_data.path,
            thresholds=thresholds,
            champion_uri=champion_uri,
            baseline_tolerance=baseline_tolerance,
            tracking_uri=mlflow_tracking_uri,
            report_path=report.path,
        )
        track(
            tracker,
            result,
            params={"thresholds": thresholds, "baseline_tolerance": baseline_tolerance},
            report_path=report.path,
        )
    for name, value in result.metrics.items():
        if not math.isnan(value):
            metrics.log_metric(name, value)
    metrics.log_metric("blessed", float(result.blessed))
    if result.confusion_matrix:
        classification_metrics.log_confusion_matrix(result.classes, result.confusion_matrix)
    if result.roc_curve:
        curve = result.roc_curve
        classification_metrics.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    report.metadata.update(
        {
            "blessed": result.blessed,
            "reason": result.reason,
            "compared_with": champion_uri or "thresholds only",
        }
    )
    return result.blessed
