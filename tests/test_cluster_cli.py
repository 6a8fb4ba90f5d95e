"""pipelines/cluster.py without a cluster: upload creates the pipeline once, then new versions."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pipelines import cluster
from pipelines.compile import PIPELINE_YAML


def as_struct(value):
    """A pipeline spec as KFP's API returns it (a protobuf Struct: every number a float)."""
    if isinstance(value, dict):
        return {k: as_struct(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_struct(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class FakeClient:
    """kfp.Client's pipeline calls, behaving as KFP 2.14.3's API server: uploading a pipeline creates it *and* its
    first version, named after the pipeline (backend/src/apiserver/server/pipeline_upload_server.go)."""

    def __init__(self):
        self.pipelines, self.versions = {}, []

    def get_pipeline_id(self, name):
        return self.pipelines.get(name)

    def upload_pipeline(self, path, pipeline_name=None):
        assert path == str(cluster.PIPELINE_YAML)
        self.pipelines[pipeline_name] = f"p-{len(self.pipelines)}"
        self._add_version(self.pipelines[pipeline_name], pipeline_name, path)
        return SimpleNamespace(pipeline_id=self.pipelines[pipeline_name])

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id):
        assert path == str(cluster.PIPELINE_YAML)
        return self._add_version(pipeline_id, pipeline_version_name, path)

    def _add_version(self, pipeline_id, name, path):
        spec = as_struct(yaml.safe_load(Path(path).read_text()))
        version = SimpleNamespace(
            pipeline_id=pipeline_id,
            pipeline_version_id=f"v-{len(self.versions) + 1}",
            display_name=name,
            pipeline_spec=spec,
        )
        self.versions.append(version)
        return version

    def list_pipeline_versions(self, pipeline_id, sort_by=None, page_size=None):
        assert sort_by == "created_at desc"
        mine = [v for v in self.versions if v.pipeline_id == pipeline_id][::-1]
        return SimpleNamespace(pipeline_versions=mine[:page_size] or None)

    def get_pipeline_version(self, pipeline_id, pipeline_version_id):
        (version,) = (v for v in self.versions if v.pipeline_version_id == pipeline_version_id)
        return version


def test_first_upload_creates_the_pipeline_with_one_version(capsys):
    client = FakeClient()
    assert cluster.upload(client, "20261201-000000") == ("p-0", "v-1")
    assert list(client.pipelines) == [cluster.PIPELINE_NAME]
    assert [(v.pipeline_id, v.display_name) for v in client.versions] == [("p-0", cluster.PIPELINE_NAME)]
    assert "uploaded pipeline 'kfp-tabular' (p-0) with its first version 'kfp-tabular' (v-1)" in (
        capsys.readouterr().out
    )


def test_upload_again_adds_nothing_until_the_pipeline_changes(tmp_path, monkeypatch, capsys):
    client = FakeClient()
    cluster.upload(client, "first")
    assert cluster.upload(client, "second") == ("p-0", "v-1")  # same YAML: the newest version holds it
    assert len(client.versions) == 1
    assert "already holds tabular_pipeline.yaml: nothing uploaded" in capsys.readouterr().out

    changed = tmp_path / "tabular_pipeline.yaml"
    spec = yaml.safe_load(PIPELINE_YAML.read_text())
    spec["root"]["inputDefinitions"]["parameters"]["seed"]["defaultValue"] = 7
    changed.write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(cluster, "PIPELINE_YAML", changed)
    assert cluster.upload(client, "third") == ("p-0", "v-2")
    assert [v.display_name for v in client.versions] == [cluster.PIPELINE_NAME, "third"]
    assert "uploaded version 'third' (v-2) of 'kfp-tabular'" in capsys.readouterr().out


def test_parameters_from_the_command_line():
    assert cluster.parse_sets(["max_trials=3", 'thresholds={"accuracy": 0.8}', "model_name=penguins"]) == {
        "max_trials": 3,
        "thresholds": {"accuracy": 0.8},
        "model_name": "penguins",
    }
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        cluster.parse_sets(["oops"])


class RunClient(FakeClient):
    """Enough of kfp.Client for the run command."""

    def __init__(self, host=None):
        super().__init__()
        self.pipelines, self.runs = {cluster.PIPELINE_NAME: "p-0"}, []

    def create_experiment(self, name):
        return SimpleNamespace(experiment_id=f"e-{name}")

    def list_pipeline_versions(self, pipeline_id, sort_by=None, page_size=None):
        return SimpleNamespace(pipeline_versions=[SimpleNamespace(pipeline_version_id="v-9")])

    def run_pipeline(self, **kwargs):
        self.runs.append(kwargs)
        return SimpleNamespace(run_id="r-1")


def test_run_starts_the_newest_version_as_the_runner_service_account(monkeypatch, capsys):
    import kfp

    clients = []
    monkeypatch.setattr(kfp, "Client", lambda host: clients.append(RunClient(host)) or clients[-1])
    assert cluster.main(["run", "--host", "http://kfp.invalid", "--set", "max_trials=3"]) == 0
    (run,) = clients[0].runs
    assert run["service_account"] == cluster.RUN_SERVICE_ACCOUNT == "kfp-tabular-runner"
    assert (run["pipeline_id"], run["version_id"], run["experiment_id"]) == ("p-0", "v-9", "e-kfp-tabular")
    assert run["params"] == {"deploy_target": "kserve", "model_name": "penguins-species", "max_trials": 3}
    assert "as kfp-tabular-runner" in capsys.readouterr().out

    assert cluster.main(["run", "--host", "http://kfp.invalid", "--service_account", "someone"]) == 0
    assert clients[1].runs[0]["service_account"] == "someone"


def test_predict_finds_the_service_the_inference_service_address_names(monkeypatch):
    import json
    import subprocess

    address = "http://penguins-m1a2b3c4d-predictor.kfp-tabular.svc.cluster.local"
    calls = []

    def kubectl(argv, **kwargs):
        calls.append(argv)
        isvc = {"status": {"address": {"url": address}}}
        return subprocess.CompletedProcess(argv, 0, stdout=json.dumps(isvc), stderr="")

    monkeypatch.setattr(cluster, "need", lambda tool: tool)
    monkeypatch.setattr(cluster.subprocess, "run", kubectl)
    assert cluster.predictor_service("kfp-tabular", "penguins") == "penguins-m1a2b3c4d-predictor"
    assert calls == [["kubectl", "get", "inferenceservice", "penguins", "-n", "kfp-tabular", "-o", "json"]]

    address = ""
    with pytest.raises(SystemExit, match="no address yet"):
        cluster.predictor_service("kfp-tabular", "penguins")
