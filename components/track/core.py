"""Tracking a pipeline run: its MLflow run, the model it is about, and the model it is measured against.

``start`` (the pipeline's first step) resolves the model's name, opens one MLflow run in the experiment
named after it, tags it with where it runs (KFP run id or local run folder, code version, pipeline
image) and finds the current champion; ``end`` (the pipeline's exit handler) marks the MLflow run
FINISHED or FAILED. The stages in between log into the same run.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from components.common.logs import get_logger
from components.config import check_model_name, default_model_name
from components.registry.models import champion
from components.registry.tracking import Tracker

log = get_logger("track")
RUN_ID_TAG = "kfp.run_id"  # the KFP run's id: how the exit handler finds the MLflow run


@dataclass
class Started:
    run_id: str
    model_name: str
    champion_uri: str  # what validation and evaluation compare with ("" on a first run)
    champion_version: str  # the registry version behind it ("" when none, or an explicit baseline)
    experiment_id: str


def code_version() -> str:
    """The git commit of the source tree when there is one (a checkout), else the package version."""
    root = Path(__file__).resolve().parent.parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"git:{commit}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"kfp-tabular=={metadata.version('kfp-tabular')}"
        except metadata.PackageNotFoundError:
            return "unknown"


def start(
    *,
    tracking_uri: str,
    source_uri: str,
    target: str,
    task: str,
    model_name: str,
    baseline_model_uri: str,
    pipeline_run: str,
    pipeline_run_id: str,
    pipeline_image: str,
) -> Started:
    name = check_model_name(model_name) if model_name else default_model_name(source_uri, target)
    if not model_name:
        log.info("model name %r (from the source and the target; set model_name to choose one)", name)
    tracker = Tracker.start(
        tracking_uri,
        experiment=name,
        run_name=f"{name} {pipeline_run.rsplit('/', 1)[-1]}"[:250],
        params={"model_name": name, "source_uri": source_uri, "target": target, "task": task},
        tags={
            "kfp.run": pipeline_run,
            RUN_ID_TAG: pipeline_run_id,
            "kfp_tabular.code_version": code_version(),
            "kfp_tabular.pipeline_image": pipeline_image,
            "kfp_tabular.task": task,
        },
        description=f"kfp-tabular pipeline run: {task} of {target!r} from {source_uri}",
    )
    current = champion(tracking_uri, name, tracker.client)
    if baseline_model_uri.strip().lower() == "none":
        champion_uri, version = "", current.version if current else ""
        log.info("baseline_model_uri: none: compared with nothing; the thresholds alone decide")
    elif baseline_model_uri:
        champion_uri, version = baseline_model_uri, current.version if current else ""
        log.info("measured against the baseline %s (baseline_model_uri)", baseline_model_uri)
    elif current:
        champion_uri, version = current.uri, current.version
        log.info("current champion of %r: version %s (run %s)", name, current.version, current.run_id)
    else:
        champion_uri, version = "", ""
        log.info("%r has no champion yet: this run is measured against its thresholds alone", name)
    tracker.set_tags(
        {"kfp_tabular.champion_at_start": version or "none", "kfp_tabular.compared_with": champion_uri}
    )
    return Started(tracker.run_id, name, champion_uri, version, tracker.experiment_id)


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run when the tracking server is over HTTP, else ""."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def write_run_card(started: Started, tracking_uri: str, path: str | Path) -> None:
    """A short Markdown note (the KFP UI renders it): which MLflow run this is and what it is compared with."""
    link = run_link(tracking_uri, started.experiment_id, started.run_id)
    run = f"[{started.run_id}]({link})" if link else f"`{started.run_id}`"
    compared = (
        f"`{started.champion_uri}`" if started.champion_uri else "nothing yet (the thresholds alone decide)"
    )
    lines = [
        f"# MLflow run of model `{started.model_name}`",
        "",
        f"- tracking server: `{tracking_uri}`",
        f"- experiment: `{started.model_name}` (id {started.experiment_id})",
        f"- run: {run}",
        f"- compared with: {compared}",
        "",
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def end(
    *,
    tracking_uri: str,
    experiment: str,
    source_uri: str,
    target: str,
    pipeline_run_id: str,
    pipeline_status: str,
    error: str = "",
) -> str:
    """Mark the MLflow run of KFP run ``pipeline_run_id`` FINISHED (SUCCEEDED) or FAILED; returns the status."""
    from components.registry.tracking import client

    name = experiment or default_model_name(source_uri, target)
    mlflow_client = client(tracking_uri)
    found = mlflow_client.get_experiment_by_name(name)
    runs = (
        mlflow_client.search_runs([found.experiment_id], f"tags.`{RUN_ID_TAG}` = '{pipeline_run_id}'")
        if found
        else []
    )
    if not runs:
        log.warning("no MLflow run of KFP run %s in experiment %r: nothing to end", pipeline_run_id, name)
        return ""
    statuses = []
    for run in runs:
        tracker = Tracker(tracking_uri, run.info.run_id, mlflow_client)
        if error:
            tracker.set_tags({"kfp_tabular.error": error})
        statuses.append(tracker.finish(pipeline_status))
        log.info("MLflow run %s: %s (pipeline %s)", run.info.run_id, statuses[-1], pipeline_status)
    return statuses[0]
