"""KFP shell of the ingest stage."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(
    source_uri: str,
    file_format: str,
    delimiter: str,
    missing_values: list,
    target: str,
    task: str,
    drop_columns: list,
    column_types: dict,
    non_finite: str,
    eval_fraction: float,
    test_fraction: float,
    seed: int,
    mlflow_tracking_uri: str,
    mlflow_run_id: str,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    test_data: Output[Dataset],
) -> NamedTuple("IngestOutputs", [("target", str), ("rows", int)]):
    """Read a CSV/Parquet table, type and check its columns, split it into train/eval/test Parquet datasets.

    Outputs the sanitized target name for the later stages; logs the table as the MLflow run's dataset.
    """
    from collections import namedtuple

    from components.common.stage import failure_note
    from components.ingest.core import ingest as run
    from components.ingest.core import track
    from components.registry.tracking import Tracker

    settings = {
        "source_uri": source_uri,
        "file_format": file_format,
        "delimiter": delimiter,
        "missing_values": missing_values,
        "target": target,
        "task": task,
        "drop_columns": drop_columns,
        "column_types": column_types,
        "non_finite": non_finite,
        "eval_fraction": eval_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
    }
    with failure_note(train_data.path):
        tracker = Tracker(mlflow_tracking_uri, mlflow_run_id)
        result = run(
            source_uri=source_uri,
            file_format=file_format,
            delimiter=delimiter,
            missing_values=[str(v) for v in missing_values or []],
            target=target,
            task=task,
            drop_columns=drop_columns,
            column_types={str(k): str(v) for k, v in (column_types or {}).items()},
            non_finite=non_finite,
            eval_fraction=eval_fraction,
            test_fraction=test_fraction,
            seed=seed,
            train_path=train_data.path,
            eval_path=eval_data.path,
            test_path=test_data.path,
        )
        track(tracker, result, source_uri=source_uri, params=settings)
    for split, artifact in (("train", train_data), ("eval", eval_data), ("test", test_data)):
        artifact.metadata.update(
            {
                "split": split,
                "rows": result.split_rows[split],
                "columns": result.columns,
                "source_uri": source_uri,
                "source_sha256": result.source_sha256,
                "source_rows": result.source_rows,
                "dropped_rows_missing_target": result.dropped_rows_missing_target,
                "column_types": {k: v["kind"] for k, v in result.column_types.items()},
                "dropped_columns": result.dropped_columns,
                "non_finite": result.non_finite,
                "format": "parquet",
            }
        )
    return namedtuple("IngestOutputs", ["target", "rows"])(result.target, result.rows)
