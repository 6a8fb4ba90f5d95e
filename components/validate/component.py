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
    statistics: Output[Artifact],
    schema: Output[Artifact],
    statistics_report: Output[HTML],
    anomalies_report: Output[Markdown],
):
    """Validate the train/eval/test splits with TensorFlow Data Validation (TFDV).

    Computes statistics per split, takes the curated schema at ``schema_uri`` (or infers one from train,
    relaxed for a first run), checks every split against it and eval against train for drift
    (L-infinity for categorical features, Jensen-Shannon for numeric ones, bound ``drift_threshold`` or
    ``drift_thresholds[feature]``; 0 disables). Any anomaly fails the task with a message listing each
    one, and no output is written. Outputs: ``statistics`` (a directory of ``<split>.pb``
    DatasetFeatureStatisticsList), ``schema`` (text proto, to curate), ``statistics_report`` (train vs
    eval, Facets) and ``anomalies_report`` (Markdown: splits, schema source, drift, anomalies).
    """
    from components.validate.core import validate_splits

    result = validate_splits(
        {"train": train_data.path, "eval": eval_data.path, "test": test_data.path},
        target=target,
        schema_uri=schema_uri,
        drift_threshold=drift_threshold,
        drift_thresholds={str(k): float(v) for k, v in (drift_thresholds or {}).items()},
        statistics_dir=statistics.path,
        schema_path=schema.path,
        html_path=statistics_report.path,
        report_path=anomalies_report.path,
    )
    schema.metadata["inferred"] = result.schema_inferred
    schema.metadata["source"] = schema_uri or "inferred from train"
    schema.metadata["num_features"] = result.num_features
    statistics.metadata["num_examples"] = result.num_examples
    statistics.metadata["splits"] = sorted(result.num_examples)
    statistics.metadata["drift"] = {name: measured["value"] for name, measured in result.drift.items()}
    anomalies_report.metadata["num_anomalies"] = len(result.anomalies)
