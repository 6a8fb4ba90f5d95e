"""Assertions on a finished demo pipeline run, shared by the kfp.local and the container runs."""

from __future__ import annotations

from pathlib import Path

from components.common.io import sha256_file
from components.common.servable import ServableModel
from tests.conftest import REPO

STAGES = {"ingest", "validate", "transform", "train", "evaluate", "deploy"}


def assert_demo_outputs(out: dict, repo: Path, *, trials: int = 12) -> None:
    """``out``: ``pipelines.local_run.task_outputs(run_dir)``; ``repo``: the local model repository."""
    assert set(out) == STAGES

    ingest = out["ingest"]["artifacts"]
    assert {int(ingest[f"{s}_data"]["metadata"]["rows"]) for s in ("train", "eval", "test")} == {223, 52, 69}
    assert ingest["train_data"]["metadata"]["source_sha256"] == sha256_file(
        REPO / "components/ingest/demo/penguins.csv"
    )

    validate = out["validate"]["artifacts"]
    assert validate["schema"]["metadata"]["inferred"] is True
    assert "feature {" in Path(validate["schema"]["uri"]).read_text()
    assert sorted(p.name for p in Path(validate["statistics"]["uri"]).iterdir()) == [
        "eval.pb",
        "test.pb",
        "train.pb",
        "validation.json",
    ]
    assert "<html" in Path(validate["statistics_report"]["uri"]).read_text().lower()

    model = out["train"]["artifacts"]["model"]
    assert model["metadata"]["framework"] in ("sklearn", "xgboost")
    assert model["metadata"]["sha256"] == sha256_file(Path(model["uri"]) / "model.joblib")
    assert out["train"]["artifacts"]["metrics"]["metadata"]["trials"] == trials

    evaluation = out["evaluate"]["artifacts"]
    assert out["evaluate"]["parameters"]["Output"] is True
    assert evaluation["metrics"]["metadata"]["accuracy"] >= 0.9
    cm = evaluation["classification_metrics"]["metadata"]["confusionMatrix"]
    assert [a["displayName"] for a in cm["annotationSpecs"]] == ["Adelie", "Chinstrap", "Gentoo"]
    assert sum(sum(r["row"]) for r in cm["rows"]) == 69
    assert evaluation["classification_metrics"]["metadata"]["confidenceMetrics"]
    assert "**BLESSED**" in Path(evaluation["report"]["uri"]).read_text()

    deployed = Path(out["deploy"]["parameters"]["model_uri"])
    assert out["ingest"]["parameters"]["model_name"] == "penguins-species"  # derived: <source>-<target>
    assert deployed == repo / "penguins-species" / "1"
    served = ServableModel.load(deployed)  # every file checked against its sha256
    assert served.sha256 == model["metadata"]["sha256"]
    # the model carries what the next run's drift check, batch prediction and monitoring read
    assert sorted(served.metadata["sha256"]) == ["model.joblib", "schema.pbtxt", "train_stats.pb"]
    assert (deployed / "train_stats.pb").read_bytes() == (
        Path(validate["statistics"]["uri"]) / "train.pb"
    ).read_bytes()
