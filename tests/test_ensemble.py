"""Ensemble selection (components/common/ensemble.py) and the ensemble as the trained, served model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components.common.ensemble import WeightedEnsemble, loss, select
from components.common.servable import ServableModel
from components.serving.fast import FastPredictor
from components.train.core import Trial, choose_ensemble
from components.train.search import candidates_for, fit
from components.transform.core import load_matrix
from tests.conftest import build_model, make_table


def probabilities(y: np.ndarray, noise: np.random.Generator, scale: float) -> np.ndarray:
    """Two-class probabilities that are right on average, with independent noise."""
    p = np.clip(0.5 + (y - 0.5) * 0.6 + noise.normal(scale=scale, size=len(y)), 0.02, 0.98)
    return np.column_stack([1 - p, p])


def test_two_models_with_independent_errors_are_averaged():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=2000)
    a, b = probabilities(y, rng, 0.25), probabilities(y, rng, 0.25)
    chosen = select("classification", y, [a, b], rounds=20)
    assert set(chosen.weights) == {0, 1} and abs(chosen.weights[0] - 0.5) <= 0.2
    assert chosen.loss < chosen.best_single_loss
    assert chosen.loss == pytest.approx(
        loss("classification", y, sum(w * p for w, p in zip(chosen.weights.values(), (a, b), strict=True)))
    )


def test_a_model_that_only_adds_noise_gets_no_weight():
    rng = np.random.default_rng(1)
    y = rng.normal(size=1000)
    good, noise = y + rng.normal(scale=0.1, size=1000), rng.normal(size=1000)
    chosen = select("regression", y, [noise, good], rounds=10)
    assert chosen.weights == {1: 1.0} and chosen.loss == chosen.best_single_loss


def trial(number: int, oof: np.ndarray, score: float) -> Trial:
    return Trial(number, "x", {}, score, 0.0, "complete", oof)


def test_the_ensemble_is_used_only_when_it_beats_the_best_single_model():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=2000)
    a, b = probabilities(y, rng, 0.25), probabilities(y, rng, 0.25)
    scores = [-loss("classification", y, p) for p in (a, b)]
    members = choose_ensemble("classification", y, [trial(1, a, scores[0]), trial(2, b, scores[1])], 20)
    assert members is not None and sorted(t.number for t in members.trials) == [1, 2]
    assert members.oof_score > max(scores) and sum(members.weights) == pytest.approx(1.0)
    assert choose_ensemble("classification", y, [trial(1, a, scores[0]), trial(2, b, scores[1])], 0) is None
    pruned = Trial(3, "x", {}, 0.0, 0.0, "pruned", None)
    assert choose_ensemble("classification", y, [trial(1, a, scores[0]), pruned], 20) is None


@pytest.mark.parametrize(
    ("task", "classes"), [("classification", 2), ("classification", 3), ("regression", 0)]
)
def test_a_served_ensemble_answers_like_the_pipeline_bit_for_bit(tmp_path, task, classes):
    """Every family in one ensemble, served through the kernels: the same bits as the pipeline."""
    make_table(300, seed=8, task=task, classes=max(classes, 2)).to_csv(tmp_path / "t.csv", index=False)
    model_dir = build_model(
        tmp_path, str(tmp_path / "t.csv"), target="y", task=task, max_trials=1, ensemble_size=0
    )
    model = ServableModel.load(model_dir)
    x, y, _ = load_matrix(str(tmp_path / "t_train.parquet"))
    members = []
    for candidate in candidates_for(task):
        params = candidate.first_params()
        if candidate.rounds:
            params[candidate.rounds] = 20
        members.append(fit(candidate.make(0, **params), candidate, params, x, y))
    weights = [0.4, 0.3, 0.2, 0.1]
    model.pipeline.steps[-1] = ("model", WeightedEnsemble(members, weights, task))
    rows = pd.read_parquet(tmp_path / "test.parquet")
    fast = FastPredictor(model)
    assert fast.kernel_name.startswith("weighted ensemble")
    expected = (
        model.predict_proba(rows) if task == "classification" else model.pipeline.predict(model.frame(rows))
    )
    assert np.array_equal(fast.predict(*fast.split_frame(rows)), expected)
    for i in range(0, len(rows), 7):
        one = rows.iloc[[i]]
        reference = (
            model.predict_proba(one) if task == "classification" else model.pipeline.predict(model.frame(one))
        )
        assert np.array_equal(fast.predict(*fast.split_frame(one)), reference)


def test_training_chooses_an_ensemble_and_records_its_members(tmp_path):
    make_table(500, seed=4, task="classification", classes=3).to_csv(tmp_path / "t.csv", index=False)
    model_dir = build_model(
        tmp_path, str(tmp_path / "t.csv"), target="y", task="classification", max_trials=8
    )
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["estimator"] == "WeightedEnsemble" and meta["candidate"] == "ensemble"
    members = meta["params"]["members"]
    assert len(members) >= 2 and sum(m["weight"] for m in members) == pytest.approx(1.0)
    model = ServableModel.load(model_dir)
    assert len(model.pipeline.named_steps["model"].members) == len(members)
    test = pd.read_parquet(tmp_path / "test.parquet")
    assert (model.predict(test) == test["y"]).mean() > 0.7
    single = build_model(
        tmp_path / "single",
        str(tmp_path / "t.csv"),
        target="y",
        task="classification",
        max_trials=8,
        ensemble_size=0,
    )
    assert json.loads((single / "metadata.json").read_text())["estimator"] != "WeightedEnsemble"
