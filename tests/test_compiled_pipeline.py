"""The compiled pipeline YAML (what users upload to the KFP dashboard) matches the code."""

import yaml

from components.images import PIPELINE_IMAGE
from pipelines.compile import PIPELINE_YAML, compiled_text
from pipelines.tabular_pipeline import tabular_pipeline

STAGES = {
    "start_run",
    "ingest",
    "validate",
    "transform",
    "train",
    "evaluate",
    "register",
    "deploy",
    "end_run",
}
TASKS = {stage.replace("_", "-") for stage in STAGES}  # KFP names a component's task with dashes


def test_committed_yaml_is_fresh():
    assert PIPELINE_YAML.read_text() == compiled_text(), (
        "pipelines/tabular_pipeline.yaml is stale: run `make compile`"
    )


def test_compiled_pipeline_shape():
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {PIPELINE_IMAGE}
    assert {name.removeprefix("comp-") for name in spec["components"]} >= TASKS
    root = spec["root"]
    params = root["inputDefinitions"]["parameters"]
    from components.config import TabularConfig

    assert set(params) == set(TabularConfig.model_fields)  # every config field is a pipeline parameter
    assert params["source_uri"]["defaultValue"] == "demo://penguins"
    tasks = root["dag"]["tasks"]
    # the MLflow run is opened first, and closed by the exit handler whatever happens in between
    assert set(tasks) == {"start-run", "exit-handler-1", "end-run"}
    assert tasks["end-run"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    handler = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    condition = handler["condition-2"]["triggerPolicy"]["condition"]
    assert "evaluate-Output" in condition and "true" in condition
    inner = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert set(inner) == {"register", "deploy"}
    assert tabular_pipeline.name == "kfp-tabular"


def component_tasks(spec: dict) -> dict[str, dict]:
    """Every task that runs a container, by stage name, wherever it sits (root DAG or inside dsl.If)."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    tasks = {}
    for dag in dags:
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            if "executorLabel" in component:
                tasks[task["taskInfo"]["name"]] = task
    return tasks


def test_caching_policy_is_decided_for_every_stage_and_compiled():
    """KFP caches a task when its compiled cachingOptions say so (enableCache; absent means off). A step that
    reads or changes state outside KFP must never be served from cache: after `make undeploy`, a cached deploy
    would report SUCCEEDED and deploy nothing; a cached ingest would serve a stale table from an s3:// URI."""
    from pipelines.tabular_pipeline import CACHING

    assert set(CACHING) == STAGES, "every stage needs an explicit caching decision"
    assert CACHING["deploy"] is False and CACHING["ingest"] is False
    tasks = component_tasks(yaml.safe_load(PIPELINE_YAML.read_text()))
    assert set(tasks) == TASKS
    compiled = {
        name.replace("-", "_"): task.get("cachingOptions", {}).get("enableCache", False)
        for name, task in tasks.items()
    }
    assert compiled == CACHING


def test_readme_states_the_caching_policy():
    import re

    from pipelines.tabular_pipeline import CACHING
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| (cached|never cached) \|", readme, re.M))
    assert rows == {stage: "cached" if on else "never cached" for stage, on in CACHING.items()}


def test_batch_pipeline_yaml_is_fresh_and_fans_out_with_resources_as_parameters():
    """The batch pipeline (pipelines/batch_predict_pipeline.yaml): fresh, its shards in a ParallelFor with a
    parallelism bound, resource requests from pipeline parameters, nothing cached, a clean-up exit handler."""
    from pipelines.batch_predict_pipeline import CACHING, PARALLELISM, batch_predict_pipeline
    from pipelines.compile import BATCH_PIPELINE_YAML

    assert BATCH_PIPELINE_YAML.read_text() == compiled_text(batch_predict_pipeline), (
        "pipelines/batch_predict_pipeline.yaml is stale: run `make compile`"
    )
    spec = yaml.safe_load(BATCH_PIPELINE_YAML.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert {
        "model_uri",
        "input_uri",
        "output_uri",
        "passthrough_columns",
        "on_bad_rows",
        "cpu_request",
    } <= set(params)
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {PIPELINE_IMAGE}
    tasks = component_tasks(spec)
    assert set(tasks) == {name.replace("_", "-") for name in CACHING}
    assert all(not t.get("cachingOptions", {}).get("enableCache", False) for t in tasks.values())
    loops = [
        t
        for c in spec["components"].values()
        if "dag" in c
        for t in c["dag"]["tasks"].values()
        if "iterator" in t or "parameterIterator" in t
    ]
    assert [loop["iteratorPolicy"]["parallelismLimit"] for loop in loops] == [PARALLELISM]
    resources = next(e for n, e in spec["deploymentSpec"]["executors"].items() if "score-shard" in n)[
        "container"
    ]["resources"]
    assert (
        "cpu_request" in resources["resourceCpuRequest"]
        and "memory_limit" in resources["resourceMemoryLimit"]
    )
    assert (
        spec["root"]["dag"]["tasks"]["clean-staging"]["triggerPolicy"]["strategy"]
        == "ALL_UPSTREAM_TASKS_COMPLETED"
    )
