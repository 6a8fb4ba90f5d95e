"""KFP shells of the tracking steps: the MLflow run opened first, closed by the exit handler."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Output, PipelineTaskFinalStatus

from components.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def start_run(
    mlflow_tracking_uri: str,
    source_uri: str,
    target: str,
    task: str,
    model_name: str,
    baseline_model_uri: str,
    tracking: Output[Markdown],
    pipeline_run: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    pipeline_run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    pipeline_image: str = "",
) -> NamedTuple(
    "Run", [("run_id", str), ("model_name", str), ("champion_uri", str), ("champion_version", str)]
):
    """Open this pipeline run's MLflow run (experiment: the model's name) and find the current champion.

    ``tracking`` says where the run is (a link to it in the MLflow UI when the server is over HTTP)."""
    from collections import namedtuple

    from components.common.stage import failure_note
    from components.track.core import start, write_run_card

    with failure_note(tracking.path):
        started = start(
            tracking_uri=mlflow_tracking_uri,
            source_uri=source_uri,
            target=target,
            task=task,
            model_name=model_name,
            baseline_model_uri=baseline_model_uri,
            pipeline_run=pipeline_run,
            pipeline_run_id=pipeline_run_id,
            pipeline_image=pipeline_image,
        )
        write_run_card(started, mlflow_tracking_uri, tracking.path)
    outputs = namedtuple("Run", ["run_id", "model_name", "champion_uri", "champion_version"])
    return outputs(started.run_id, started.model_name, started.champion_uri, started.champion_version)


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def end_run(
    mlflow_tracking_uri: str,
    source_uri: str,
    target: str,
    model_name: str,
    status: PipelineTaskFinalStatus,
    pipeline_run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
):
    """The exit handler: mark this pipeline run's MLflow run FINISHED or FAILED, as the pipeline ended.

    (An exit task cannot take other tasks' outputs: it finds the MLflow run by the KFP run id tag.)"""
    from components.track.core import end

    end(
        tracking_uri=mlflow_tracking_uri,
        experiment=model_name,
        source_uri=source_uri,
        target=target,
        pipeline_run_id=pipeline_run_id,
        pipeline_status=status.state,
        error=(status.error_message or "")[:2000],
    )
