"""KFP shell of the ingest stage."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(
    source_uri: str,
    file_format: str,
    target: str,
    task: str,
    drop_columns: list,
    eval_fraction: float,
    test_fraction: float,
    seed: int,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    test_data: Output[Dataset],
) -> NamedTuple("IngestOutputs", [("target", str), ("rows", int)]):
    """Read a CSV/Parquet table, sanitize column names, split it into train/eval/test Parquet datasets."""
    from collections import namedtuple

    from components.ingest.core import ingest as run

    result = run(
        source_uri=source_uri,
        file_format=file_format,
        target=target,
        task=task,
        drop_columns=drop_columns,
        eval_fraction=eval_fraction,
        test_fraction=test_fraction,
        seed=seed,
        train_path=train_data.path,
        eval_path=eval_data.path,
        test_path=test_data.path,
    )
    for split, artifact in (("train", train_data), ("eval", eval_data), ("test", test_data)):
        artifact.metadata.update(
            {
                "split": split,
                "rows": result.split_rows[split],
                "columns": result.columns,
                "source_uri": source_uri,
                "source_sha256": result.source_sha256,
                "format": "parquet",
            }
        )
    return namedtuple("IngestOutputs", ["target", "rows"])(result.target, result.rows)
