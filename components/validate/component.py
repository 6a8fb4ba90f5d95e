from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    test_data: Input[Dataset],
    target: str,
    schema_uri: str,
    drift_threshold: float,
    drift_thresholds: dict,
    drift_action: str,
    champion_uri: str,
    mlflow_tracking_uri: str,
    mlflow_run_id: str,
    statistics: Output[Artifact],
    schema: Output[Artifact],
    statistics_report: Output[HTML],
    anomalies_report: Output[Markdown],
):
    """Validate the train/eval/test splits with TensorFlow Data Validation (TFDV).

    Statistics per split; the curated schema at ``schema_uri`` (or one inferred from the table); every
    split checked against it; a class missing from a split; the train split compared with the data the
    current model (``champion_uri``: the champion, or an explicit baseline) was trained on: a feature
    that changed kind, or drift beyond ``drift_threshold``/``drift_thresholds[feature]`` that is
    significant, stops the run (``drift_action: stop``) or is reported (``warn``). eval/test against
    train is reported as information. Any problem fails the task with one line per problem, and no
    output is written. Outputs: ``statistics`` (``<split>.pb`` DatasetFeatureStatisticsList and
    ``validation.json``), ``schema`` (text proto, to curate), ``statistics_report`` (HTML) and
    ``anomalies_report`` (Markdown).
    """
    from components.common.stage import failure_note
    from components.registry.tracking import Tracker
    from components.validate.core import track, validate_splits

    with failure_note(statistics.path):
        tracker = Tracker(mlflow_tracking_uri, mlflow_run_id)
        result = validate_splits(
            {"train": train_data.path, "eval": eval_data.path, "test": test_data.path},
            target=target,
            schema_uri=schema_uri,
            drift_threshold=drift_threshold,
            drift_thresholds={str(k): float(v) for k, v in (drift_thresholds or {}).items()},
            drift_action=drift_action,
            reference_model_uri=champion_uri,
            tracking_uri=mlflow_tracking_uri,
            statistics_dir=statistics.path,
            schema_path=schema.path,
            html_path=statistics_report.path,
            report_path=anomalies_report.path,
        )
        track(
            tracker,
            result,
            params={
                "schema_uri": schema_uri,
                "drift_threshold": drift_threshold,
                "drift_thresholds": drift_thresholds,
                "drift_action": drift_action,
            },
            outputs={
                "schema": schema.path,
                "html": statistics_report.path,
                "report": anomalies_report.path,
                "statistics": statistics.path,
            },
        )
    schema.metadata["inferred"] = result.schema_inferred
    schema.metadata["source"] = schema_uri or "inferred from the table"
    schema.metadata["num_features"] = result.num_features
    statistics.metadata["num_examples"] = result.num_examples
    statistics.metadata["splits"] = sorted(result.num_examples)
    statistics.metadata["reference_model"] = result.reference.get("uri", "")
    statistics.metadata["drift"] = {name: d["value"] for name, d in result.drift.items()}
    statistics.metadata["drifted"] = sorted(name for name, d in result.drift.items() if d["drifted"])
    statistics.metadata["warnings"] = result.warnings
    anomalies_report.metadata["num_anomalies"] = len(result.anomalies)
