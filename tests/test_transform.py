"""Transform core: fitted on train only, missing values imputed, unknown categories handled."""

import numpy as np
import pandas as pd
import pytest

from components.common.errors import InputDataError
from components.transform.core import TransformSpec, fit_transform, load_matrix, load_preprocessor
from tests.conftest import make_table


@pytest.fixture
def fitted(tmp_path):
    df = make_table(300, seed=1)
    train, evaluation = df.iloc[:200].copy(), df.iloc[200:].copy()
    evaluation.loc[evaluation.index[0], "color"] = "purple"  # never seen in train
    train.to_parquet(tmp_path / "train.parquet")
    evaluation.to_parquet(tmp_path / "eval.parquet")
    spec = fit_transform(
        train_path=str(tmp_path / "train.parquet"),
        eval_path=str(tmp_path / "eval.parquet"),
        target="y",
        task="classification",
        max_categories=30,
        transform_dir=str(tmp_path / "tg"),
        transformed_train_path=str(tmp_path / "tt.parquet"),
        transformed_eval_path=str(tmp_path / "te.parquet"),
    )
    return tmp_path, spec, train, evaluation


def test_feature_kinds_and_outputs(fitted):
    tmp, spec, train, _ = fitted
    kinds = {f["name"]: f["kind"] for f in spec.features}
    assert kinds == {"x one": "numeric", "x2": "numeric", "color": "categorical", "size": "categorical"}
    assert spec.classes == ["class_0", "class_1"]
    assert TransformSpec.load(tmp / "tg") == spec
    x, y, names = load_matrix(str(tmp / "tt.parquet"))
    assert (
        x.dtype == np.float32
        and x.shape == (200, len(spec.output_features))
        and names == spec.output_features
    )
    assert not np.isnan(x).any()  # imputed
    assert set(np.unique(y)) == {0, 1}


def test_fitted_on_train_only(fitted):
    tmp, spec, train, _ = fitted
    scaler = (
        load_preprocessor(tmp / "tg")
        .named_steps["columns"]
        .named_transformers_["numeric"]
        .named_steps["scale"]
    )
    assert scaler.mean_[0] == pytest.approx(train["x one"].mean())
    assert scaler.mean_[1] == pytest.approx(train["x2"].fillna(train["x2"].median()).mean())


def test_unknown_category_and_missing_values_are_handled(fitted):
    tmp, spec, _, evaluation = fitted
    x_eval, _, names = load_matrix(str(tmp / "te.parquet"))
    color_cols = [i for i, n in enumerate(names) if n.startswith("categorical__color_")]
    assert x_eval[0, color_cols].sum() == 0  # 'purple' encodes as all zeros, no error
    assert "categorical__size___missing__" in names  # missing is its own category
    row = pd.DataFrame([{"x one": np.nan, "x2": None, "color": None, "size": "XXL"}])
    out = load_preprocessor(tmp / "tg").transform(row)
    assert out.shape == (1, len(names)) and not np.isnan(out).any()


def test_target_missing_from_train_is_an_error(tmp_path):
    make_table(50).to_parquet(tmp_path / "a.parquet")
    with pytest.raises(InputDataError, match="target column 'nope'"):
        fit_transform(
            train_path=str(tmp_path / "a.parquet"),
            eval_path=str(tmp_path / "a.parquet"),
            target="nope",
            task="classification",
            max_categories=5,
            transform_dir=str(tmp_path / "tg"),
            transformed_train_path=str(tmp_path / "x"),
            transformed_eval_path=str(tmp_path / "y"),
        )
    assert not (tmp_path / "tg").exists()


def test_dates_and_booleans_become_numbers_inside_the_fitted_preprocessing(tmp_path):
    """Ingestion's column kinds (in the split files) decide the encoding; the fitted preprocessing reads raw
    values, so whoever holds the model needs nothing else to use it."""
    from components.common.features import FeatureValueError
    from tests.conftest import make_messy_table, run_ingest

    make_messy_table(300, seed=2).to_csv(tmp_path / "c.csv", index=False)
    result, paths = run_ingest(str(tmp_path / "c.csv"), tmp_path, target="Churned")
    spec = fit_transform(
        train_path=paths["train"],
        eval_path=paths["eval"],
        target=result.target,
        task="classification",
        max_categories=30,
        transform_dir=str(tmp_path / "tg"),
        transformed_train_path=str(tmp_path / "tt.parquet"),
        transformed_eval_path=str(tmp_path / "te.parquet"),
    )
    kinds = {f["name"]: f["kind"] for f in spec.features}
    assert kinds["signup_date"] == "datetime" and kinds["member"] == "boolean"
    assert "row_id" not in kinds and spec.dropped_columns.keys() == {"row_id", "email"}
    names = spec.output_features
    for part in ("year", "month", "day", "day_of_week"):
        assert f"numeric__signup_date__{part}" in names
    assert "numeric__member" in names and not any(n.startswith("categorical__member") for n in names)

    preprocess = load_preprocessor(tmp_path / "tg")
    assert list(preprocess.named_steps) == ["derive", "columns", "float32"]
    derived = preprocess.named_steps["derive"].transform(
        pd.DataFrame(
            {
                "signup_date": ["2024-02-29", None],
                "member": ["YES", "no"],
                "store_id": ["3", "4"],
                "income": [1.0, 2.0],
                "visits": [1.0, None],
                "region": ["north", "south"],
            }
        )
    )
    assert derived["signup_date__month"].tolist()[0] == 2.0 and np.isnan(derived["signup_date__year"][1])
    assert derived["signup_date__day_of_week"][0] == 3.0  # a Thursday
    assert derived["member"].tolist() == [1.0, 0.0]
    with pytest.raises(FeatureValueError, match="feature 'member': 'maybe' is not a boolean"):
        preprocess.named_steps["derive"].transform(
            pd.DataFrame({**{c: [None] for c in kinds}, "member": ["maybe"]})
        )
