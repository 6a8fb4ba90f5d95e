"""KFP shells of batch prediction: plan (model and input files), score one shard, commit the output."""

from kfp import dsl
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def plan_batch(
    model_uri: str,
    mlflow_tracking_uri: str,
    input_uri: str,
    file_format: str,
    delimiter: str,
    missing_values: list,
    passthrough_columns: list,
    output_uri: str,
    overwrite: bool,
    max_shards: int,
    job_id: str,
    model: Output[Model],
) -> list:
    """Resolve the model to one version (copied into ``model``; its name and version in its metadata), list
    the input files, check the first rows against the model (every feature there, values of the right type,
    TFDV against its training schema in the SERVING environment: once per job, before anything is scored),
    group the files into at most ``max_shards`` shards (returned, JSON each, for ``dsl.ParallelFor``), and
    check the output can be written. Nothing is written outside KFP.

    One output besides the model: kfp.local 2.17 cannot iterate over a named output of a NamedTuple."""
    import json

    from components.batch_predict import core
    from components.common.stage import failure_note

    with failure_note(model.path):
        core.check_output(output_uri, overwrite)
        files, fmt = core.list_inputs(input_uri, file_format)
        name, version = core.fetch_model(model_uri, mlflow_tracking_uri, model.path)
        warnings = core.check_input(
            model.path,
            files,
            input_uri=input_uri,
            passthrough=list(passthrough_columns),
            file_format=fmt,
            delimiter=delimiter,
            missing_values=list(missing_values),
        )
        shards = core.plan_shards(files, max_shards)
        staging = core.staging_uri(output_uri, job_id)
    model.metadata.update(
        {"model_uri": model_uri, "model_name": name, "model_version": version, "schema_warnings": warnings}
    )
    core.log.info("%d %s file(s) in %d shard(s); staging in %s", len(files), fmt, len(shards), staging)
    return [json.dumps({**s, "format": fmt}) for s in shards]


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def score_shard(
    model: Input[Model],
    shard: str,
    input_uri: str,
    output_uri: str,
    job_id: str,
    passthrough_columns: list,
    on_bad_rows: str,
    batch_rows: int,
    delimiter: str,
    missing_values: list,
    resources: dict,
    metrics: Output[Metrics],
) -> str:
    """Score one shard's files into ``<staging>/part-<index>.parquet`` (rejected rows: ``_quarantine/``);
    returns the shard's counts (JSON) for the commit step. ``resources``: what the task was given (logged;
    the pipeline sets them as the task's requests)."""
    import json

    from components.batch_predict import core
    from components.common.stage import failure_note

    with failure_note(metrics.path):
        plan = json.loads(shard)
        core.log.info("shard %d: %d file(s); task resources %s", plan["index"], len(plan["files"]), resources)
        output, quarantine = core.part_uris(core.staging_uri(output_uri, job_id), plan["index"])
        result = core.predict(
            model_dir=model.path,
            input_uri=input_uri,
            files=plan["files"],
            file_format=plan["format"],
            output_uri=output,
            quarantine_uri=quarantine,
            passthrough=list(passthrough_columns),
            on_bad_rows=on_bad_rows,
            batch_rows=batch_rows,
            delimiter=delimiter,
            missing_values=list(missing_values),
            model_name=model.metadata["model_name"],
            model_version=model.metadata["model_version"],
            validate=False,  # the plan step checked the schema once for the whole job
        )
        result.warnings = list(model.metadata.get("schema_warnings") or [])
    for key, value in result.metrics().items():
        metrics.log_metric(key, value)
    return json.dumps({**result.as_dict(), "index": plan["index"]})


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def commit_batch(
    shard_results: list,
    output_uri: str,
    job_id: str,
    overwrite: bool,
    metrics: Output[Metrics],
    summary: Output[Markdown],
) -> str:
    """Move every shard's files into ``output_uri`` (complete or not at all); the job's metrics and a
    Markdown summary. Returns the output URI."""
    import json

    from components.batch_predict import core
    from components.common.stage import failure_note

    with failure_note(summary.path):
        results = [json.loads(r) if isinstance(r, str) else r for r in shard_results]
        totals = core.commit(core.staging_uri(output_uri, job_id), output_uri, results, overwrite)
        text = core.summary_markdown(totals, results)
    with open(summary.path, "w") as handle:
        handle.write(text)
    seconds = totals["seconds"]
    metrics.log_metric("rows_in", totals["rows_in"])
    metrics.log_metric("rows_scored", totals["rows_scored"])
    metrics.log_metric("rows_rejected", totals["rows_rejected"])
    metrics.log_metric("seconds", round(seconds, 3))
    metrics.log_metric("rows_per_second", round(totals["rows_in"] / seconds, 1) if seconds else 0.0)
    metrics.log_metric("shards", totals["shards"])
    summary.metadata.update(
        {k: totals[k] for k in ("output_uri", "quarantine_uri", "model_name", "model_version")}
    )
    return output_uri


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def clean_staging(output_uri: str, job_id: str) -> str:
    """Always last (the exit handler): remove this job's staging folder if a failed job left one."""
    from components.batch_predict import core

    return core.remove_staging(core.staging_uri(output_uri, job_id)) if output_uri.strip() else ""
