"""Train core: candidates for every task, the search budget, determinism, and the servable artifact."""

import json

import numpy as np
import pandas as pd
import pytest

from components.common.errors import ConfigError
from components.common.servable import ServableModel
from components.train.core import search
from components.train.search import candidates_for
from tests.conftest import build_model, make_table


@pytest.mark.parametrize(
    ("task", "classes", "family"),
    [("classification", 2, "binary"), ("classification", 3, "multiclass"), ("regression", 0, "regression")],
)
def test_every_task_trains_a_servable_model(tmp_path, task, classes, family):
    df = make_table(400, seed=3, task=task, classes=max(classes, 2))
    df.to_csv(tmp_path / "t.csv", index=False)
    model_dir = build_model(tmp_path, str(tmp_path / "t.csv"), target="y", task=task, max_trials=3)
    model = ServableModel.load(model_dir)
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["task"] == task and meta["framework"] in ("sklearn", "xgboost")
    assert meta["versions"]["scikit-learn"] and meta["sha256"]["model.joblib"] == model.sha256
    assert [f["name"] for f in meta["features"]] == ["x_one", "x2", "color", "size"]
    test = pd.read_parquet(tmp_path / "test.parquet")
    predictions = model.predict(test)
    if task == "classification":
        assert len(model.classes) == classes
        proba = model.predict_proba(test)
        assert proba.shape == (len(test), classes) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
        assert (predictions == test["y"]).mean() > 0.7  # the signal is learnable
    else:
        assert np.corrcoef(predictions, test["y"])[0, 1] > 0.8


def test_search_respects_trial_budget_and_is_deterministic():
    df = make_table(300, seed=5)
    x = np.column_stack([df["x one"], df["x2"].fillna(50)]).astype(np.float32)
    y = (df["y"] == "class_1").astype(int).to_numpy()
    pool = candidates_for("classification")
    args = dict(task="classification", candidates=pool, max_trials=5, max_seconds=600, cv_folds=3, seed=1)
    first, stopped = search(x, y, **args)
    second, _ = search(x, y, **args)
    assert stopped == "max_trials" and len(first) == 5
    families = ["logistic_regression", "hist_gradient_boosting", "xgboost"]
    assert [t.candidate for t in first] == (families * 2)[:5]  # families take turns
    assert [(t.params, t.cv_score) for t in first] == [(t.params, t.cv_score) for t in second]


def test_search_stops_on_time_budget_after_each_family_ran_once():
    df = make_table(300, seed=5)
    x = np.column_stack([df["x one"], df["x2"].fillna(50)]).astype(np.float32)
    y = (df["y"] == "class_1").astype(int).to_numpy()
    trials, stopped = search(
        x,
        y,
        task="classification",
        candidates=candidates_for("classification"),
        max_trials=50,
        max_seconds=1e-6,
        cv_folds=3,
        seed=1,
    )
    assert stopped == "max_seconds" and len(trials) == 3


def test_candidates_can_be_restricted_and_unknown_ones_are_refused(tmp_path):
    make_table(300, seed=2).to_csv(tmp_path / "t.csv", index=False)
    model_dir = build_model(
        tmp_path,
        str(tmp_path / "t.csv"),
        target="y",
        task="classification",
        candidates=["xgboost"],
        max_trials=2,
    )
    assert ServableModel.load(model_dir).metadata["estimator"] == "XGBClassifier"
    with pytest.raises(ConfigError, match="not classification models"):
        build_model(
            tmp_path / "b", str(tmp_path / "t.csv"), target="y", task="classification", candidates=["ridge"]
        )


def test_same_inputs_same_model(tmp_path):
    make_table(300, seed=2).to_csv(tmp_path / "t.csv", index=False)
    a = ServableModel.load(
        build_model(tmp_path / "a", str(tmp_path / "t.csv"), target="y", task="classification")
    )
    b = ServableModel.load(
        build_model(tmp_path / "b", str(tmp_path / "t.csv"), target="y", task="classification")
    )
    assert (
        a.metadata["params"] == b.metadata["params"]
        and a.metadata["eval_metrics"] == b.metadata["eval_metrics"]
    )
    test = pd.read_parquet(tmp_path / "a" / "test.parquet")
    assert np.array_equal(a.predict_proba(test), b.predict_proba(test))
