"""Local deploy target and the servable artifact's integrity checks."""

import json
import shutil

import pytest

from components.common.errors import ConfigError, ModelArtifactError
from components.common.servable import ServableModel
from components.deploy.core import deploy
from components.deploy.local import latest_version_dir, publish_local


def test_publish_versions_latest_and_idempotence(penguins_model, tmp_path):
    model_dir, _ = penguins_model
    repo = tmp_path / "repo"
    first = deploy(
        model_dir=str(model_dir), deploy_target="local", model_name="penguins", model_repository=str(repo)
    )
    assert (first.version, first.status, first.target) == (1, "published", "local")
    assert latest_version_dir(repo, "penguins") == repo / "penguins" / "1"
    record = json.loads((repo / "penguins" / "1" / "deployment.json").read_text())
    assert record["target"] == "local" and record["published_at"]
    again = publish_local(model_dir=str(model_dir), repository=str(repo), model_name="penguins")
    assert (again.version, again.new) == (1, False)

    other = tmp_path / "other"  # a different model: other weights and other metadata
    model = ServableModel.load(model_dir)
    columns = model.pipeline.named_steps["preprocess"].named_steps["columns"]
    columns.named_transformers_["numeric"].named_steps["scale"].mean_ += 0.01
    model.metadata["note"] = "retrained"
    model.save(other)
    second = publish_local(model_dir=str(other), repository=str(repo), model_name="penguins")
    assert second.version == 2 and second.sha256 != ServableModel.load(model_dir).sha256
    assert latest_version_dir(repo, "penguins").name == "2"
    assert ServableModel.load(latest_version_dir(repo, "penguins")).metadata["note"] == "retrained"
    assert sorted(p.name for p in (repo / "penguins").iterdir()) == ["1", "2", "LATEST"]  # no staging left


def test_tampered_artifact_is_not_published(penguins_model, tmp_path):
    model_dir, _ = penguins_model
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    with open(bad / "model.joblib", "ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ModelArtifactError, match="integrity check"):
        publish_local(model_dir=str(bad), repository=str(tmp_path / "repo"), model_name="penguins")
    assert not (tmp_path / "repo" / "penguins" / "LATEST").exists()
    assert not list((tmp_path / "repo" / "penguins").glob("[0-9]*"))


def test_artifact_checks(penguins_model, tmp_path):
    model_dir, _ = penguins_model
    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
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
    with pytest.raises(ModelArtifactError, match="no model 'penguins' has been deployed"):
        latest_version_dir(tmp_path / "empty", "penguins")


def test_unknown_target_is_refused(penguins_model, tmp_path):
    with pytest.raises(ConfigError, match="unknown deploy_target 'ftp'"):
        deploy(
            model_dir=str(penguins_model[0]),
            deploy_target="ftp",
            model_name="p",
            model_repository=str(tmp_path),
        )


def test_kserve_target_needs_the_model_in_object_storage(penguins_model):
    model_dir, test_path = penguins_model
    with pytest.raises(ConfigError, match="needs the model in object storage"):
        deploy(
            model_dir=str(model_dir),
            deploy_target="kserve",
            model_name="p",
            source_uri=str(model_dir),
            test_path=str(test_path),
        )


@pytest.mark.parametrize(
    ("artifact", "storage"),
    [
        ("minio://mlpipeline/v2/artifacts/run/train/model", "s3://mlpipeline/v2/artifacts/run/train/model"),
        ("s3://b/m", "s3://b/m"),
        ("gs://b/m", "gs://b/m"),
    ],
)
def test_storage_uri_for_kfp_artifacts(artifact, storage):
    from components.deploy.core import storage_uri_for

    assert storage_uri_for(artifact) == storage


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


def test_same_weights_with_new_metadata_is_a_new_version(penguins_model, tmp_path):
    """Deployment identity is the artifact's files: new evaluation facts on the same weights publish anew."""
    model_dir, _ = penguins_model
    repo = tmp_path / "repo"
    assert publish_local(model_dir=str(model_dir), repository=str(repo), model_name="penguins").version == 1
    relabelled = tmp_path / "relabelled"
    shutil.copytree(model_dir, relabelled)
    meta = json.loads((relabelled / "metadata.json").read_text())
    meta["eval_metrics"] = {"accuracy": 0.5}
    (relabelled / "metadata.json").write_text(json.dumps(meta))
    again = publish_local(model_dir=str(relabelled), repository=str(repo), model_name="penguins")
    assert (again.version, again.new) == (2, True)
