"""Train core: candidates for every task, the search budget, determinism, and the servable artifact."""

import json
import time

import numpy as np
import pandas as pd
import pytest

from components.common.errors import ConfigError
from components.common.servable import ServableModel
from components.train.core import search
from components.train.search import HGB_CHUNK, MAX_ROUNDS, Candidate, candidates_for, fit
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
    assert meta["task"] == task and meta["framework"] in ("sklearn", "xgboost", "lightgbm", "ensemble")
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


def small_problem(rows=300, seed=5):
    df = make_table(rows, seed=seed)
    x = np.column_stack([df["x one"], df["x2"].fillna(50)]).astype(np.float32)
    return x, (df["y"] == "class_1").astype(int).to_numpy()


def test_search_respects_trial_budget_and_is_deterministic():
    x, y = small_problem()
    pool = candidates_for("classification")
    args = dict(task="classification", candidates=pool, max_trials=6, max_seconds=600, cv_folds=3, seed=1)
    first, stopped = search(x, y, **args)
    second, _ = search(x, y, **args)
    assert stopped == "max_trials" and len(first) == 6
    # every family is first tried with its library's defaults, in the order given; then the sampler
    families = ["logistic_regression", "hist_gradient_boosting", "xgboost", "lightgbm"]
    assert [t.candidate for t in first[:4]] == families
    assert first[0].params == {"C": 1.0, "class_weight": None}
    assert first[2].params["learning_rate"] == 0.3 and first[2].params["max_depth"] == 6
    assert [(t.candidate, t.params, t.cv_score, t.state) for t in first] == [
        (t.candidate, t.params, t.cv_score, t.state) for t in second
    ]
    assert len({json.dumps(t.params, sort_keys=True) for t in first}) == 6  # no trial repeated


def test_boosting_rounds_are_chosen_by_early_stopping_and_kept_for_the_refit(tmp_path):
    x, y = small_problem(600)
    trials, _ = search(
        x,
        y,
        task="classification",
        candidates=candidates_for("classification", ["hist_gradient_boosting", "xgboost", "lightgbm"]),
        max_trials=3,
        max_seconds=600,
        cv_folds=3,
        seed=0,
    )
    hgb, xgb, lgbm = trials
    # an easy two-feature problem: the best round comes long before the cap
    assert 1 <= hgb.params["max_iter"] < MAX_ROUNDS and 1 <= xgb.params["n_estimators"] < MAX_ROUNDS
    assert 1 <= lgbm.params["n_estimators"] < MAX_ROUNDS
    make_table(400, seed=3).to_csv(tmp_path / "t.csv", index=False)
    model_dir = build_model(
        tmp_path,
        str(tmp_path / "t.csv"),
        target="y",
        task="classification",
        candidates=["xgboost"],
        max_trials=2,
    )
    model = ServableModel.load(model_dir)
    estimator = model.pipeline.named_steps["model"]
    assert estimator.n_estimators == model.metadata["params"]["n_estimators"] < MAX_ROUNDS


def test_growing_histogram_boosting_in_chunks_gives_the_same_model_as_one_fit():
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = small_problem(500)
    one = HistGradientBoostingClassifier(max_iter=3 * HGB_CHUNK, early_stopping=False, random_state=0).fit(
        x, y
    )
    grown = HistGradientBoostingClassifier(
        max_iter=HGB_CHUNK, early_stopping=False, random_state=0, warm_start=True
    )
    for _ in range(3):
        grown.fit(x, y)
        grown.set_params(max_iter=grown.max_iter + HGB_CHUNK)
    assert np.array_equal(one.predict_proba(x), grown.predict_proba(x))


def test_the_time_budget_stops_the_search_and_the_first_trial_always_runs():
    x, y = small_problem()
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
    assert stopped == "max_seconds" and [t.candidate for t in trials] == ["logistic_regression"]


def test_a_slow_trial_is_cut_at_the_deadline_not_run_to_its_end():
    """XGBoost at a tiny learning rate on 20,000 rows would grow ~500 rounds x 3 folds (a minute or more
    here); with a 2 s budget the trial is cut within a round and the search stops soon after."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 40)).astype(np.float32)
    y = (x[:, :10].sum(axis=1) + rng.normal(size=20_000) > 0).astype(int)
    slow = candidates_for("classification", ["xgboost"])[0]
    slow = Candidate(
        slow.name, slow.framework, slow.make, {"learning_rate": [0.001], "max_depth": [8]}, rounds=slow.rounds
    )
    linear = candidates_for("classification", ["logistic_regression"])[0]
    began = time.perf_counter()
    trials, stopped = search(
        x,
        y,
        task="classification",
        candidates=[linear, slow],
        max_trials=5,
        max_seconds=2,
        cv_folds=3,
        seed=0,
    )
    elapsed = time.perf_counter() - began
    assert stopped == "max_seconds" and [t.candidate for t in trials] == ["logistic_regression"]
    assert elapsed < 30, f"the search took {elapsed:.0f}s with a 2s budget"


def test_class_weights_reach_every_family():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=1.0, size=600) > 1.6).astype(int)  # ~10% positives
    for name in ("logistic_regression", "hist_gradient_boosting", "xgboost", "lightgbm"):
        (candidate,) = candidates_for("classification", [name])
        assert candidate.space["class_weight"] == [None, "balanced"]
        shares = []
        for weights in (None, "balanced"):
            params = {**candidate.first_params(), "class_weight": weights}
            if candidate.rounds:
                params[candidate.rounds] = 30
            estimator = fit(candidate.make(0, **params), candidate, params, x, y)
            shares.append(estimator.predict(x).mean())
        assert shares[1] > shares[0], name  # balanced weights predict the rare class more often


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
