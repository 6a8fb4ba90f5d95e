"""pipelines/cluster.py without a cluster: upload creates the pipeline once, then new versions."""

from types import SimpleNamespace

import pytest

from pipelines import cluster
from pipelines.compile import PIPELINE_YAML


class FakeClient:
    def __init__(self):
        self.pipelines, self.versions = {}, []

    def get_pipeline_id(self, name):
        return self.pipelines.get(name)

    def upload_pipeline(self, path, pipeline_name=None):
        assert path == str(PIPELINE_YAML)
        self.pipelines[pipeline_name] = f"p-{len(self.pipelines)}"
        return SimpleNamespace(pipeline_id=self.pipelines[pipeline_name])

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id):
        assert path == str(PIPELINE_YAML)
        self.versions.append((pipeline_id, pipeline_version_name))
        return SimpleNamespace(pipeline_version_id=f"v-{len(self.versions)}")


def test_upload_creates_the_pipeline_once_then_adds_versions():
    client = FakeClient()
    assert cluster.upload(client, "first") == ("p-0", "v-1")
    assert cluster.upload(client, "second") == ("p-0", "v-2")
    assert list(client.pipelines) == [cluster.PIPELINE_NAME]
    assert client.versions == [("p-0", "first"), ("p-0", "second")]


def test_parameters_from_the_command_line():
    assert cluster.parse_sets(["max_trials=3", 'thresholds={"accuracy": 0.8}', "model_name=penguins"]) == {
        "max_trials": 3,
        "thresholds": {"accuracy": 0.8},
        "model_name": "penguins",
    }
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        cluster.parse_sets(["oops"])
