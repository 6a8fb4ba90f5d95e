"""Batch prediction: a table of any size scored with a registered (or given) model, validated, atomic.

    plan (model -> one version, input files -> shards) -> score_shard x N (ParallelFor) -> commit

The shards write into a hidden staging folder beside the output; the commit step moves their files into
``output_uri`` and writes ``_SUCCESS`` last, so a reader never takes a failed job's files for output.
"""

from kfp import dsl

from components.batch_predict.component import clean_staging, commit_batch, plan_batch, score_shard
from components.batch_predict.core import DEFAULT_BATCH_ROWS
from components.config import CLUSTER_TRACKING_URI

# Scoring shards at once (ParallelFor's parallelism is fixed when the pipeline is compiled); the number of
# shards is the pipeline parameter max_shards.
PARALLELISM = 4

# Caching on a cluster: every step reads or writes state outside KFP's artifact store (the registry's alias,
# the input table, the output location), so none is served from cache.
CACHING = {"plan_batch": False, "score_shard": False, "commit_batch": False, "clean_staging": False}


@dsl.pipeline(
    name="kfp-tabular-batch-predict",
    description="Score a CSV/Parquet table (file, folder or prefix) with a model: validated, streaming, atomic.",
)
def batch_predict_pipeline(
    model_uri: str = "models:/penguins-species@champion",
    input_uri: str = "demo://penguins",
    output_uri: str = "",
    passthrough_columns: list = [],  # noqa: B006 (a KFP pipeline parameter's default)
    on_bad_rows: str = "error",
    overwrite: bool = False,
    file_format: str = "auto",
    delimiter: str = "auto",
    missing_values: list = [],  # noqa: B006
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_shards: int = 16,
    cpu_request: str = "1",
    memory_request: str = "2Gi",
    memory_limit: str = "4Gi",
    mlflow_tracking_uri: str = CLUSTER_TRACKING_URI,
):
    job = dsl.PIPELINE_JOB_ID_PLACEHOLDER  # the staging folder beside the output is this job's own
    cleanup = clean_staging(output_uri=output_uri, job_id=job).set_caching_options(CACHING["clean_staging"])
    with dsl.ExitHandler(cleanup, name="batch-job"):
        plan = plan_batch(
            model_uri=model_uri,
            mlflow_tracking_uri=mlflow_tracking_uri,
            input_uri=input_uri,
            file_format=file_format,
            delimiter=delimiter,
            missing_values=missing_values,
            passthrough_columns=passthrough_columns,
            output_uri=output_uri,
            overwrite=overwrite,
            max_shards=max_shards,
            job_id=job,
        ).set_caching_options(CACHING["plan_batch"])
        with dsl.ParallelFor(plan.outputs["Output"], parallelism=PARALLELISM, name="shards") as shard:
            scored = score_shard(
                model=plan.outputs["model"],
                shard=shard,
                input_uri=input_uri,
                output_uri=output_uri,
                job_id=job,
                passthrough_columns=passthrough_columns,
                on_bad_rows=on_bad_rows,
                batch_rows=batch_rows,
                delimiter=delimiter,
                missing_values=missing_values,
                # also an input: kfp.local 2.17 resolves a loop's channels only from its tasks' inputs
                resources={
                    "cpu_request": cpu_request,
                    "memory_request": memory_request,
                    "memory_limit": memory_limit,
                },
            )
            scored.set_caching_options(CACHING["score_shard"])
            scored.set_cpu_request(cpu_request).set_memory_request(memory_request).set_memory_limit(
                memory_limit
            )
        commit_batch(
            shard_results=dsl.Collected(scored.outputs["Output"]),
            output_uri=output_uri,
            job_id=job,
            overwrite=overwrite,
        ).set_caching_options(CACHING["commit_batch"])
