"""Evaluate core: test metrics, the gate (thresholds, baseline, no thresholds), and the report."""

import pytest

from components.common.errors import ConfigError, ModelArtifactError
from components.evaluate.core import evaluate, gate
from tests.conftest import build_model, make_table


def run(model_dir, test_path, tmp_path, **kw):
    args = dict(thresholds={"accuracy": 0.9, "f1_macro": 0.9}, champion_uri="", baseline_tolerance=0.0)
    args.update(kw)
    return evaluate(
        model_dir=str(model_dir), test_path=str(test_path), report_path=str(tmp_path / "report.md"), **args
    )


def test_demo_model_is_blessed_with_full_metrics(penguins_model, tmp_path):
    model_dir, test_path = penguins_model
    result = run(model_dir, test_path, tmp_path)
    assert result.blessed and result.reason == "all checks passed"
    assert set(result.metrics) == {"accuracy", "f1_macro", "roc_auc", "log_loss"}
    assert result.metrics["accuracy"] > 0.9
    assert result.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert sum(map(sum, result.confusion_matrix)) == result.test_rows
    curve = result.roc_curve
    assert len(curve["fpr"]) == len(curve["tpr"]) == len(curve["thresholds"]) > 2
    assert curve["fpr"][0] == 0 and curve["tpr"][-1] == 1 and max(curve["thresholds"]) <= 1
    report = (tmp_path / "report.md").read_text()
    assert "**BLESSED**" in report and "| threshold:accuracy | pass |" in report and "Gentoo" in report


def test_impossible_threshold_refuses(penguins_model, tmp_path):
    model_dir, test_path = penguins_model
    result = run(model_dir, test_path, tmp_path, thresholds={"accuracy": 1.01, "log_loss": 0.5})
    assert not result.blessed
    assert "accuracy" in result.reason and "< 1.01" in result.reason
    assert "**NOT BLESSED**" in (tmp_path / "report.md").read_text()


def test_no_thresholds_means_the_tasks_defaults_and_beating_the_trivial_model(penguins_model, tmp_path):
    model_dir, test_path = penguins_model
    result = run(model_dir, test_path, tmp_path, thresholds={})
    assert result.blessed
    assert [c.name for c in result.checks] == ["trivial:log_loss", "threshold:roc_auc"]
    assert "better than" in result.checks[0].detail and "class shares" in result.checks[0].detail


def test_a_model_no_better_than_the_trivial_one_is_refused(tmp_path):
    """Features that carry no signal: whatever the thresholds, a model must beat predicting the mean."""
    import numpy as np

    rng = np.random.default_rng(12345)  # not make_table's seed: its first column would be this very noise
    df = make_table(300, task="regression")
    df["y"] = rng.normal(size=len(df))  # unrelated to the features
    df.to_csv(tmp_path / "noise.csv", index=False)
    model = build_model(
        tmp_path,
        str(tmp_path / "noise.csv"),
        target="y",
        task="regression",
        candidates=["hist_gradient_boosting"],
    )
    result = run(model, tmp_path / "test.parquet", tmp_path, thresholds={"rmse": 100.0})
    trivial = next(c for c in result.checks if c.name == "trivial:rmse")
    assert not trivial.passed and "not better than" in trivial.detail and "train mean" in trivial.detail
    assert not result.blessed and "trivial model" in result.reason


def test_thresholds_for_the_wrong_task_are_refused(penguins_model, tmp_path):
    model_dir, test_path = penguins_model
    with pytest.raises(ConfigError, match=r"\['rmse'\] are not classification metrics"):
        run(model_dir, test_path, tmp_path, thresholds={"rmse": 1.0})
    assert not (tmp_path / "report.md").exists()


def test_baseline_no_worse(tmp_path, penguins_model):
    model_dir, test_path = penguins_model
    same = run(model_dir, test_path, tmp_path, champion_uri=str(model_dir))
    assert same.blessed and same.baseline_metrics == same.metrics
    assert any(c.name == "champion:accuracy" and c.passed for c in same.checks)


def test_worse_than_baseline_is_refused(tmp_path):
    """A model trained on noise-only features is worse than one trained on the signal."""
    df = make_table(400, seed=11)
    df.to_csv(tmp_path / "good.csv", index=False)
    noise = df.copy()
    noise["x one"] = noise["x one"].sample(frac=1, random_state=0).to_numpy()
    noise["x2"] = noise["x2"].sample(frac=1, random_state=1).to_numpy()
    noise.to_csv(tmp_path / "noise.csv", index=False)
    good = build_model(tmp_path / "good", str(tmp_path / "good.csv"), target="y", task="classification")
    weak = build_model(tmp_path / "weak", str(tmp_path / "noise.csv"), target="y", task="classification")
    test_path = tmp_path / "good" / "test.parquet"
    thresholds = {"accuracy": 0.5}
    result = run(weak, test_path, tmp_path, thresholds=thresholds, champion_uri=str(good))
    assert not result.blessed and "worse: accuracy" in result.reason
    tolerant = run(
        weak, test_path, tmp_path, thresholds=thresholds, champion_uri=str(good), baseline_tolerance=1.0
    )
    assert tolerant.blessed


def test_a_champion_that_cannot_be_compared_is_a_clear_failure(penguins_model, tmp_path):
    import json
    import shutil

    model_dir, test_path = penguins_model
    with pytest.raises(ModelArtifactError, match="does not exist"):
        run(model_dir, test_path, tmp_path, champion_uri=str(tmp_path / "nothing"))
    tampered = tmp_path / "tampered"
    shutil.copytree(model_dir, tampered)
    with open(tampered / "model.joblib", "ab") as handle:
        handle.write(b"!")
    with pytest.raises(ModelArtifactError, match="cannot be compared with: .* integrity check"):
        run(model_dir, test_path, tmp_path, champion_uri=str(tampered))
    other = tmp_path / "other-versions"
    shutil.copytree(model_dir, other)
    meta = json.loads((other / "metadata.json").read_text())
    meta["versions"]["scikit-learn"] = "1.5.2"
    (other / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(
        ModelArtifactError, match="cannot be compared with: .*scikit-learn trained with 1.5.2"
    ):
        run(model_dir, test_path, tmp_path, champion_uri=str(other))
    assert not (tmp_path / "report.md").exists()


def test_a_champion_whose_features_the_data_lacks_says_how_to_go_on(tmp_path):
    """The champion used a column this run's data no longer has: no silent pass, and the way out."""
    df = make_table(300, seed=5)
    df.assign(extra=df["x2"] * 2).to_csv(tmp_path / "with.csv", index=False)
    df.to_csv(tmp_path / "without.csv", index=False)
    champion = build_model(
        tmp_path / "a", str(tmp_path / "with.csv"), target="y", task="classification", max_trials=1
    )
    model = build_model(
        tmp_path / "b", str(tmp_path / "without.csv"), target="y", task="classification", max_trials=1
    )
    with pytest.raises(ModelArtifactError, match=r"takes features \['extra'\].*baseline_model_uri: none"):
        run(model, tmp_path / "b" / "test.parquet", tmp_path, champion_uri=str(champion))


def test_regression_metrics_and_gate(tmp_path):
    make_table(400, seed=4, task="regression").to_csv(tmp_path / "r.csv", index=False)
    model = build_model(tmp_path, str(tmp_path / "r.csv"), target="y", task="regression")
    result = run(model, tmp_path / "test.parquet", tmp_path, thresholds={"r2": 0.5, "rmse": 10.0})
    assert set(result.metrics) == {"rmse", "mae", "r2"} and result.blessed
    assert result.confusion_matrix == [] and result.roc_curve == {}
    assert not run(model, tmp_path / "test.parquet", tmp_path, thresholds={"rmse": 1e-9}).blessed


def test_gate_directions():
    checks = gate("regression", {"rmse": 2.0, "r2": 0.8, "mae": 1.0}, {"rmse": 1.0, "r2": 0.5}, None, 0.0)
    assert {c.name: c.passed for c in checks} == {"threshold:r2": True, "threshold:rmse": False}
    nan = gate("classification", {"roc_auc": float("nan")}, {"roc_auc": 0.5}, None, 0.0)
    assert not nan[0].passed  # an undefined metric never passes
