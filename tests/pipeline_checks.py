"""Assertions on a finished demo pipeline run, shared by the kfp.local and the container runs."""

from __future__ import annotations

import tempfile
from pathlib import Path

from components.common.io import sha256_file
from components.common.servable import ServableModel
from components.registry import models as registry
from tests.conftest import REPO

STAGES = {
    "start-run",
    "ingest",
    "validate",
    "transform",
    "train",
    "evaluate",
    "register",
    "deploy",
    "end-run",
}


def assert_demo_outputs(out: dict, store: str, *, trials: int = 12) -> None:
    """``out``: ``pipelines.local_run.task_outputs(run_dir)``; ``store``: the MLflow tracking URI."""
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
    assert model["metadata"]["framework"] in ("sklearn", "xgboost", "lightgbm", "ensemble")
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

    # registered and made champion; the version's files are the model, with what the next run reads
    assert out["start-run"]["parameters"]["model_name"] == "penguins-species"  # derived: <source>-<target>
    assert out["deploy"]["parameters"]["model_uri"] == "models:/penguins-species/1"
    assert registry.history(store, "penguins-species")[0] == "1"  # it became champion (later runs may follow)
    with tempfile.TemporaryDirectory() as tmp:
        served = ServableModel.load(registry.download(store, "models:/penguins-species/1", Path(tmp) / "m"))
        assert served.sha256 == model["metadata"]["sha256"]  # every file checked against its sha256
        assert sorted(served.metadata["sha256"]) == ["model.joblib", "schema.pbtxt", "train_stats.pb"]
        assert (Path(tmp) / "m" / "train_stats.pb").read_bytes() == (
            Path(validate["statistics"]["uri"]) / "train.pb"
        ).read_bytes()
