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
    assert run["params"] == {"deploy_target": "kserve", "model_name": "penguins", "max_trials": 3}
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
