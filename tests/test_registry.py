"""Tracking and registry helpers (components/registry) against real MLflow stores: a SQLite file in a
temp folder, and a real `mlflow server` on 127.0.0.1 (the shared-server mode a cluster uses)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from components.common.errors import ConfigError, KfpTabularError, ModelArtifactError
from components.common.servable import ServableModel
from components.registry import models as registry
from components.registry.tracking import Tracker, TrackingError, local_store


@pytest.fixture
def store(tmp_path):
    return local_store(tmp_path / "mlflow")


def new_run(uri: str, name: str = "penguins-species") -> Tracker:
    return Tracker.start(
        uri, experiment=name, run_name="run", params={"seed": 42}, tags={"kfp.run": "local-1"}
    )


def other_model(model_dir: Path, tmp_path: Path, note: str) -> Path:
    """The same model with other metadata: another version's files."""
    copy = tmp_path / note
    model = ServableModel.load(model_dir)
    model.metadata["note"] = note
    model.save(copy)
    return copy


# --- tracking ------------------------------------------------------------------------------------------


def test_a_run_in_the_models_experiment_with_what_stages_log(store, tmp_path):
    tracker = new_run(store)
    tracker.log_params({"drop_columns": ["a", "b"], "thresholds": {"r2": 0.5}})
    tracker.log_metrics({"rows": 344, "drift.x": 0.01, "nan": float("nan"), "text": "x"})
    tracker.log_dataset(
        name="penguins.csv",
        digest="f204db2c",
        source="demo://penguins",
        schema={"columns": {"x": "numeric"}},
        profile={"rows": 344},
        context="training",
    )
    tracker.child_runs([("trial 1 xgboost", {"max_depth": 3}, {"cv": -0.1})])
    (tmp_path / "report").write_text("# Evaluation\n")
    tracker.log_file(tmp_path / "report", "evaluate/report.md")
    assert tracker.finish("SUCCEEDED") == "FINISHED"

    client = tracker.client
    run = client.get_run(tracker.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "penguins-species"
    assert run.info.status == "FINISHED" and run.data.tags["kfp.run"] == "local-1"
    assert run.data.params["drop_columns"] == '["a", "b"]' and run.data.params["thresholds"] == '{"r2": 0.5}'
    assert run.data.metrics == {"rows": 344.0, "drift.x": 0.01}  # not-a-number and text are not metrics
    [dataset] = run.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.dataset.digest) == ("penguins.csv", "f204db2c")
    assert json.loads(dataset.dataset.source) == {"uri": "demo://penguins"}
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{tracker.run_id}'")
    assert [c.data.params["max_depth"] for c in children] == ["3"]
    assert [a.path for a in client.list_artifacts(tracker.run_id, "evaluate")] == ["evaluate/report.md"]
    # artifacts live beside the SQLite file, in the project folder
    assert run.info.artifact_uri.startswith((tmp_path / "mlflow" / "artifacts").as_uri())


def test_a_failed_pipeline_fails_its_run(store):
    tracker = new_run(store)
    assert tracker.finish("FAILED") == "FAILED"
    assert tracker.client.get_run(tracker.run_id).info.status == "FAILED"


def test_an_unreachable_tracking_server_is_named():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match=f"the MLflow tracking server {uri} does not answer"):
        new_run(uri)
    assert time.monotonic() - started < 60


# --- registry --------------------------------------------------------------------------------------------


def test_register_promote_and_roll_back(store, penguins_model, tmp_path):
    model_dir, _ = penguins_model
    name = "penguins-species"
    assert registry.champion(store, name) is None  # no model yet

    first = registry.register(new_run(store), model_dir, name, tags={"blessed": "true"})
    assert first.version == "1" and first.uri == "models:/penguins-species/1"
    assert registry.champion(store, name) is None  # registered is not deployed
    assert registry.promote(store, name, "1", expected=None) is None
    assert registry.champion(store, name).version == "1"
    assert registry.promote(store, name, "1", expected="1") == "1"  # again: nothing changes

    second = registry.register(new_run(store), other_model(model_dir, tmp_path, "v2"), name, tags={})
    registry.set_challenger(store, name, second.version)
    assert registry.resolve(store, f"models:/{name}@challenger").version == "2"
    assert registry.promote(store, name, "2", expected="1") == "1"
    assert registry.champion(store, name).version == "2"
    with pytest.raises(Exception, match="challenger"):  # promotion ends the canary's alias
        registry.resolve(store, f"models:/{name}@challenger")
    assert registry.history(store, name) == ["1", "2"]

    # the version's files are the servable directory, checked on load
    files = registry.download(store, f"models:/{name}@champion", tmp_path / "served")
    assert ServableModel.load(files).metadata["note"] == "v2"

    assert registry.rollback(store, name) == ("2", "1")
    assert registry.champion(store, name).version == "1" and registry.history(store, name) == ["1"]
    with pytest.raises(KfpTabularError, match="no earlier champion to roll back to"):
        registry.rollback(store, name)
    assert registry.rollback(store, name, to="2") == ("1", "2")


def test_a_champion_moved_by_another_run_is_not_replaced(store, penguins_model, tmp_path):
    model_dir, _ = penguins_model
    name = "m"
    for note in ("a", "b", "c"):
        registry.register(new_run(store, name), other_model(model_dir, tmp_path, note), name, tags={})
    registry.promote(store, name, "1", expected=None)
    registry.promote(store, name, "2", expected="1")  # run B deployed while run C was evaluating against 1
    with pytest.raises(registry.ChampionChangedError, match="is version 2, not 1"):
        registry.promote(store, name, "3", expected="1")
    assert registry.champion(store, name).version == "2"


def test_racing_runs_cannot_both_become_champion(store, penguins_model, tmp_path):
    """Ten runs compared with the same champion promote at once: exactly one wins."""
    model_dir, _ = penguins_model
    name = "race"
    versions = [
        registry.register(
            new_run(store, name), other_model(model_dir, tmp_path, f"r{i}"), name, tags={}
        ).version
        for i in range(6)
    ]
    registry.promote(store, name, versions[0], expected=None)
    outcomes: list[str] = []

    def attempt(version):
        try:
            registry.promote(store, name, version, expected=versions[0])
            outcomes.append(f"won {version}")
        except registry.ChampionChangedError:
            outcomes.append("lost")

    threads = [threading.Thread(target=attempt, args=(v,)) for v in versions[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 4
    assert registry.champion(store, name).version == winners[0].split()[1]


def test_a_tampered_model_is_not_registered(store, penguins_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(penguins_model[0], bad)
    with open(bad / "model.joblib", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelArtifactError, match="integrity check"):
        registry.register(new_run(store), bad, "penguins-species", tags={})
    assert new_run(store).client.search_registered_models() == []


@pytest.mark.parametrize(
    ("source", "destination", "storage"),
    [
        ("mlflow-artifacts:/1/abc/artifacts/model", "s3://mlflow", "s3://mlflow/1/abc/artifacts/model"),
        ("mlflow-artifacts:/1/abc/artifacts/model", "s3://mlflow/", "s3://mlflow/1/abc/artifacts/model"),
        ("s3://bucket/1/abc/artifacts/model", "", "s3://bucket/1/abc/artifacts/model"),
    ],
)
def test_storage_uri_of_a_version(source, destination, storage):
    assert registry.storage_uri(source, destination) == storage


def test_a_proxied_source_needs_the_artifacts_destination():
    with pytest.raises(KfpTabularError, match="set mlflow_artifacts_destination"):
        registry.storage_uri("mlflow-artifacts:/1/abc/artifacts/model")


# --- deployment through the registry ---------------------------------------------------------------------


def test_local_deployment_moves_the_champion(store, penguins_model, tmp_path):
    from components.deploy.core import deploy

    model_dir, test_path = penguins_model
    version = registry.register(new_run(store), model_dir, "p", tags={})
    args = dict(
        model_dir=str(model_dir),
        deploy_target="local",
        model_name="p",
        version=version.version,
        source=version.source,
        tracking_uri=store,
        test_path=str(test_path),
    )
    first = deploy(**args, expected_champion="")
    assert (first.status, first.version, first.previous, first.model_uri) == (
        "promoted",
        "1",
        "",
        "models:/p/1",
    )
    assert deploy(**args, expected_champion="").status == "unchanged"
    second = registry.register(new_run(store), other_model(model_dir, tmp_path, "two"), "p", tags={})
    with pytest.raises(registry.ChampionChangedError):  # this run compared with no champion; 1 serves now
        deploy(**{**args, "version": second.version, "source": second.source}, expected_champion="")
    assert registry.champion(store, "p").version == "1"
    with pytest.raises(ConfigError, match="unknown deploy_target 'ftp'"):
        deploy(**{**args, "deploy_target": "ftp"}, expected_champion="1")
    with pytest.raises(ConfigError, match="needs the model in object storage"):
        deploy(**{**args, "deploy_target": "kserve"}, expected_champion="1")


def test_smoke_inputs_are_the_models_own_answers(penguins_model):
    import numpy as np
    import pandas as pd

    from components.deploy.core import SMOKE_ROWS, smoke_inputs

    model_dir, test_path = penguins_model
    model = ServableModel.load(model_dir)
    rows, expected = smoke_inputs(model, str(test_path))
    assert len(rows) == len(expected) == SMOKE_ROWS and set(rows[0]) == set(model.feature_names)
    test = pd.read_parquet(test_path).head(SMOKE_ROWS)
    assert [e["label"] for e in expected] == list(model.predict(test))
    probabilities = np.array([[e["probabilities"][c] for c in model.classes] for e in expected])
    assert np.array_equal(probabilities, model.predict_proba(test).astype(np.float64))


def test_artifact_checks(penguins_model, tmp_path):
    model_dir, _ = penguins_model
    broken = tmp_path / "m"
    (tmp_path / "stats.pb").write_bytes(b"statistics")
    ServableModel.load(model_dir).save(broken, files={"train_stats.pb": tmp_path / "stats.pb"})
    assert sorted(ServableModel.load(broken).metadata["sha256"]) == ["model.joblib", "train_stats.pb"]
    (broken / "train_stats.pb").write_bytes(b"other statistics")  # every file the model carries is checked
    with pytest.raises(ModelArtifactError, match="train_stats.pb has sha256"):
        ServableModel.load(broken)
    (broken / "train_stats.pb").unlink()
    with pytest.raises(ModelArtifactError, match="has no train_stats.pb"):
        ServableModel.load(broken)
    (broken / "train_stats.pb").write_bytes(b"statistics")
    meta = json.loads((broken / "metadata.json").read_text())
    meta["versions"]["scikit-learn"] = "0.0.1"
    (broken / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelArtifactError, match="scikit-learn trained with 0.0.1"):
        ServableModel.load(broken)
    (broken / "metadata.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="not valid JSON"):
        ServableModel.load(broken)
    (broken / "metadata.json").unlink()
    with pytest.raises(ModelArtifactError, match="has no metadata.json"):
        ServableModel.load(broken)


# --- a real tracking server (the cluster's mode) ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with proxied artifacts, as manifests/ runs it on a cluster."""
    from tests.conftest import start_mlflow_server

    with start_mlflow_server(tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.mark.slow
def test_the_registry_flow_against_a_tracking_server(tracking_server, penguins_model, tmp_path):
    uri, destination = tracking_server
    model_dir, _ = penguins_model
    tracker = new_run(uri, "served")
    version = registry.register(tracker, model_dir, "served", tags={})
    assert version.source.startswith("mlflow-artifacts:/")  # the pods need no storage credentials
    registry.promote(uri, "served", version.version, expected=None)
    files = registry.download(uri, "models:/served@champion", tmp_path / "dl")
    assert ServableModel.load(files).sha256 == ServableModel.load(model_dir).sha256
    # KServe reads the files where the server stored them: the mapping names that very place
    stored = registry.storage_uri(version.source, destination)
    assert (
        ServableModel.load(Path(stored.removeprefix("file://"))).sha256
        == ServableModel.load(model_dir).sha256
    )
    assert tracker.finish("SUCCEEDED") == "FINISHED"


def test_the_registry_command_line(store, penguins_model, tmp_path, capsys):
    """`make versions` and `make rollback` (python -m components.registry)."""
    from components.registry.__main__ import main

    model_dir, _ = penguins_model
    for i, note in enumerate(("a", "b")):
        version = registry.register(
            new_run(store, "cli"), other_model(model_dir, tmp_path, note), "cli", tags={}
        )
        registry.promote(store, "cli", version.version, expected=None if i == 0 else "1")
    assert main(["versions", "--model-name", "cli", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    assert (
        "version 2 " in out and "<- champion" in out.splitlines()[1] and "champion history: ['1', '2']" in out
    )
    assert main(["rollback", "--model-name", "cli", "--tracking-uri", store]) == 0
    assert "cli: champion version 2 -> 1" in capsys.readouterr().out
    assert registry.champion(store, "cli").version == "1"
    assert main(["rollback", "--model-name", "cli", "--tracking-uri", store]) == 1
    assert "no earlier champion to roll back to" in capsys.readouterr().err
    assert main(["rollback", "--model-name", "cli", "--tracking-uri", store, "--to", "7"]) == 1
    assert "'cli' has no version 7" in capsys.readouterr().err


@pytest.mark.slow
def test_kserve_deployment_moves_the_champion_only_once_it_serves(
    tracking_server, penguins_model, tmp_path, monkeypatch
):
    """deploy_target kserve through the registry, against the fake Kubernetes API on 127.0.0.1 of
    tests/test_deploy_kserve.py: the InferenceService gets the version's files in object storage (the
    tracking server's proxied source, mapped to its artifacts destination); `challenger` marks a canary;
    `champion` moves after the rollout, and stays when a rollout fails."""
    import requests
    from kubernetes import client as k8s
    from kubernetes import config

    from components.deploy.core import deploy, smoke_inputs
    from components.deploy.kserve import DeployError, KServeSettings
    from tests.test_deploy_kserve import NAME as ISVC
    from tests.test_deploy_kserve import FakeCluster

    uri, destination = tracking_server
    model_dir, test_path = penguins_model
    model = ServableModel.load(model_dir)
    _, answers = smoke_inputs(model, str(test_path))
    versions = []
    for note in ("one", "two", "three"):
        version = registry.register(new_run(uri, ISVC), other_model(model_dir, tmp_path, note), ISVC, tags={})
        versions.append(
            (version, registry.storage_uri(version.source, destination.replace("file://", "s3://")))
        )
    storage = [s for _, s in versions]
    assert all(s.startswith("s3://") for s in storage)
    cluster = FakeCluster(answers={s: answers for s in storage}, broken=(storage[2],))
    try:

        def use_fake_cluster(*_, **__):
            configuration = k8s.Configuration()
            configuration.host = cluster.url
            k8s.Configuration.set_default(configuration)

        monkeypatch.setattr(
            config, "load_incluster_config", lambda: (_ for _ in ()).throw(config.ConfigException())
        )
        monkeypatch.setattr(config, "load_kube_config", use_fake_cluster)
        monkeypatch.setattr(requests, "post", lambda url, json, timeout: cluster.post(url, json))

        def deploy_version(i: int, expected: str, **kserve):
            version, _ = versions[i]
            return deploy(
                model_dir=str(model_dir),
                deploy_target="kserve",
                model_name=ISVC,
                version=version.version,
                source=version.source,
                expected_champion=expected,
                tracking_uri=uri,
                artifacts_destination=destination.replace("file://", "s3://"),
                test_path=str(test_path),
                kserve=KServeSettings(timeout_seconds=5.0, poll_seconds=0.01, **kserve),
            )

        first = deploy_version(0, "")
        assert (first.status, first.storage_uri, first.previous) == ("created", storage[0], "")
        assert cluster.storage_uri() == storage[0] and registry.champion(uri, ISVC).version == "1"
        second = deploy_version(1, "1", canary_traffic_percent=10)  # a canary: challenger meanwhile
        assert (second.status, second.previous) == ("updated", "1") and cluster.storage_uri() == storage[1]
        assert registry.champion(uri, ISVC).version == "2"
        assert any(body.get("spec", {}).get("canary") for body in cluster.patches())
        with pytest.raises(DeployError):  # version 3's pods never become available
            deploy_version(2, "2", canary_traffic_percent=10)
        assert registry.champion(uri, ISVC).version == "2" and cluster.storage_uri() == storage[1]
        with pytest.raises(Exception, match="challenger"):  # the failed canary's alias is gone too
            registry.resolve(uri, f"models:/{ISVC}@challenger")
    finally:
        cluster.close()
