"""The compiled pipeline YAML (what users upload to the KFP dashboard) matches the code."""

import yaml

from components.images import PIPELINE_IMAGE
from pipelines.compile import PIPELINE_YAML, compiled_text
from pipelines.tabular_pipeline import tabular_pipeline

STAGES = {"ingest", "validate", "transform", "train", "evaluate", "deploy"}


def test_committed_yaml_is_fresh():
    assert PIPELINE_YAML.read_text() == compiled_text(), (
        "pipelines/tabular_pipeline.yaml is stale: run `make compile`"
    )


def test_compiled_pipeline_shape():
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {PIPELINE_IMAGE}
    assert {name.removeprefix("comp-") for name in spec["components"]} >= STAGES
    root = spec["root"]
    params = root["inputDefinitions"]["parameters"]
    from components.config import TabularConfig

    assert set(params) == set(TabularConfig.model_fields)  # every config field is a pipeline parameter
    assert params["source_uri"]["defaultValue"] == "demo://penguins"
    tasks = root["dag"]["tasks"]
    condition = tasks["condition-1"]["triggerPolicy"]["condition"]
    assert "evaluate-Output" in condition and "true" in condition
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"deploy"}
    assert tabular_pipeline.name == "kfp-tabular"
