"""The serving core without a server: the fast path equals the pipeline, requests are parsed strictly."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from components.common.servable import ServableModel
from components.serving.fast import FastPredictor
from components.serving.kernels import SMALL_BATCH
from components.serving.requests import RequestError, Schema
from tests.conftest import build_model, make_table

CASES = [
    ("classification", 2, "logistic_regression"),
    ("classification", 3, "logistic_regression"),
    ("classification", 2, "hist_gradient_boosting"),
    ("classification", 3, "hist_gradient_boosting"),
    ("classification", 2, "xgboost"),
    ("classification", 3, "xgboost"),
    ("regression", 0, "ridge"),
    ("regression", 0, "hist_gradient_boosting"),
    ("regression", 0, "xgboost"),
    ("classification", 2, "lightgbm"),
    ("classification", 3, "lightgbm"),
    ("regression", 0, "lightgbm"),
]


def edge_rows(test: pd.DataFrame) -> pd.DataFrame:
    """Test rows plus rows with unknown categories and every kind of missing value."""
    edges = test.head(4).copy()
    edges.iloc[0, edges.columns.get_loc("color")] = "ultraviolet"  # never seen
    edges.iloc[1, edges.columns.get_loc("size")] = None
    edges.iloc[2, edges.columns.get_loc("x2")] = np.nan
    edges.iloc[3, edges.columns.get_loc("x_one")] = np.nan
    return pd.concat([test, edges], ignore_index=True)


def reference(model: ServableModel, df: pd.DataFrame) -> np.ndarray:
    return (
        model.predict_proba(df) if model.task == "classification" else model.pipeline.predict(model.frame(df))
    )


@pytest.mark.parametrize(("task", "classes", "candidate"), CASES)
def test_fast_path_equals_the_pipeline_bit_for_bit(tmp_path, task, classes, candidate):
    make_table(300, seed=8, task=task, classes=max(classes, 2)).to_csv(tmp_path / "t.csv", index=False)
    model_dir = build_model(
        tmp_path, str(tmp_path / "t.csv"), target="y", task=task, candidates=[candidate], max_trials=1
    )
    model = ServableModel.load(model_dir)
    rows = edge_rows(pd.read_parquet(tmp_path / "test.parquet"))
    fast = FastPredictor(model)
    # the estimator's arithmetic runs in a kernel of ours, not through its own (slow) method
    assert not fast.kernel_name.startswith(type(fast.estimator).__name__), fast.kernel_name
    expected = reference(model, rows)
    assert np.array_equal(fast.predict(*fast.split_frame(rows)), expected)
    # a batch above SMALL_BATCH rows: tree ensembles predict it on several threads
    big = pd.concat([rows] * (SMALL_BATCH // len(rows) + 2), ignore_index=True)
    assert len(big) > SMALL_BATCH
    assert np.array_equal(fast.predict(*fast.split_frame(big)), reference(model, big))
    # One row at a time, as single-row requests arrive. Compared with the pipeline on the same one row:
    # linear models' float32 answers can differ in the last bit between a row alone and the same row
    # in a batch (BLAS matrix-vector vs matrix-matrix summation order), in scikit-learn itself.
    for i in range(len(rows)):
        one = rows.iloc[[i]]
        assert np.array_equal(fast.predict(*fast.split_frame(one)), reference(model, one))


def test_fast_path_with_infrequent_categories(tmp_path):
    """max_categories pools rare values: the fast path sends them (and unknowns) where sklearn does."""
    from components.train.core import train
    from components.transform.core import fit_transform
    from tests.conftest import run_ingest

    df = make_table(400, seed=9)
    rng = np.random.default_rng(0)
    df["city"] = rng.choice([f"city_{i}" for i in range(12)], size=len(df), p=np.r_[[0.5, 0.2], [0.03] * 10])
    df.to_csv(tmp_path / "t.csv", index=False)
    result, paths = run_ingest(str(tmp_path / "t.csv"), tmp_path, target="y")
    fit_transform(
        train_path=paths["train"],
        eval_path=paths["eval"],
        target="y",
        task="classification",
        max_categories=3,
        transform_dir=str(tmp_path / "tg"),
        transformed_train_path=str(tmp_path / "a.parquet"),
        transformed_eval_path=str(tmp_path / "b.parquet"),
    )
    train(
        transformed_train_path=str(tmp_path / "a.parquet"),
        transformed_eval_path=str(tmp_path / "b.parquet"),
        transform_dir=str(tmp_path / "tg"),
        candidates=["logistic_regression"],
        max_trials=1,
        max_seconds=60,
        cv_folds=3,
        search_sample_rows=1000,
        seed=1,
        model_dir=str(tmp_path / "m"),
    )
    model = ServableModel.load(tmp_path / "m")
    assert any("infrequent" in name for name in model.metadata["model_inputs"])
    rows = pd.read_parquet(paths["test"])
    rows.loc[0, "city"] = "atlantis"
    fast = FastPredictor(model)
    assert np.array_equal(fast.predict(*fast.split_frame(rows)), model.predict_proba(rows))


@pytest.fixture(scope="module")
def schema(penguins_model):
    model = ServableModel.load(penguins_model[0])
    fast = FastPredictor(model)
    return Schema(model.metadata["features"], fast.numeric_names, fast.categorical_names)


GOOD = {
    "island": "Dream",
    "bill_length_mm": 49.0,
    "bill_depth_mm": 18.5,
    "flipper_length_mm": 195,
    "body_mass_g": 3700,
    "sex": "female",
    "year": 2008,
}


def _datatype(value) -> str:
    return "BYTES" if isinstance(value, str) else "FP64"


def test_v1_records_rows_and_sanitized_names_agree(schema):
    records = schema.from_v1({"instances": [GOOD]})
    rows = schema.from_v1({"instances": [[GOOD[name] for name in schema.names]]})
    renamed = schema.from_v1(
        {
            "instances": [
                {"Bill Length (mm)": 49.0, **{k: v for k, v in GOOD.items() if k != "bill_length_mm"}}
            ]
        }
    )
    for batch in (rows, renamed):
        assert np.array_equal(batch.numeric, records.numeric) and batch.categorical == records.categorical
    missing = schema.from_v1({"instances": [{**GOOD, "sex": None, "body_mass_g": None}]})
    assert np.isnan(missing.numeric).sum() == 1 and [None] in missing.categorical


def test_v2_named_inputs_and_tensor_agree(schema):
    named = schema.from_v2(
        [(k, "BYTES" if isinstance(v, str) else "FP64", [1], [v]) for k, v in GOOD.items()]
    )
    tensor = schema.from_v2([("input-0", "BYTES", [1, 7], [GOOD[n] for n in schema.names])])
    column_shaped = schema.from_v2(
        [(k, "BYTES" if isinstance(v, str) else "FP64", [1, 1], [[v]]) for k, v in GOOD.items()]
    )
    for batch in (tensor, column_shaped):
        assert np.array_equal(batch.numeric, named.numeric) and batch.categorical == named.categorical


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": []}, "empty"),
        ({"rows": []}, '"instances"'),
        ({"instances": {"a": 1}}, "must be a list"),
        ({"instances": [{k: v for k, v in GOOD.items() if k != "sex"}]}, "missing features ['sex']"),
        ({"instances": [{**GOOD, "colour": "red"}]}, "unknown features ['colour']"),
        ({"instances": [{**GOOD, "year": "2008"}]}, "'year' takes a number"),
        ({"instances": [{**GOOD, "year": True}]}, "'year' takes a number"),
        ({"instances": [{**GOOD, "year": float("inf")}]}, "finite"),
        ({"instances": [{**GOOD, "sex": ["a"]}]}, "one category"),
        ({"instances": [[1, 2, 3]]}, "has 3 values; the model takes 7"),
        ({"instances": [GOOD, [1]]}, "not a mix"),
        (b"{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
    ],
)
def test_v1_bad_requests_are_named(schema, body, message):
    with pytest.raises(RequestError) as info:
        schema.from_v1(body)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "needs"),
        ([(k, _datatype(v), [1], [v]) for k, v in GOOD.items() if k != "year"], "missing features ['year']"),
        ([("x", "BYTES", [2, 7], [1] * 13)], "needs 14 values"),
        (
            [("island", "BYTES", [2], ["a", "b"])]
            + [(k, _datatype(v), [1], [v]) for k, v in GOOD.items() if k != "island"],
            "same number of rows",
        ),
        ([(k, "FP64", [1, 2], [[v, v]]) for k, v in GOOD.items()], "one value per row"),
        ([("island", "BYTES", [1], ["a"]), ("Island", "BYTES", [1], ["a"])], "given twice"),
    ],
)
def test_v2_bad_requests_are_named(schema, inputs, message):
    with pytest.raises(RequestError) as info:
        schema.from_v2(inputs)
    assert message in str(info.value)


def test_remembered_layouts_still_check_every_request(schema):
    """Key layouts are sanitized and checked once, then remembered: values are still checked every time,
    a refused layout is refused again, and the memory stays bounded."""
    from components.serving.requests import _MEMO_SIZE

    good = schema.from_v1({"instances": [GOOD]})
    for _ in range(2):  # the second time from the remembered layout
        assert np.array_equal(schema.from_v1({"instances": [GOOD]}).numeric, good.numeric)
        with pytest.raises(RequestError, match="'year' takes a number"):
            schema.from_v1({"instances": [{**GOOD, "year": "x"}]})
        with pytest.raises(RequestError, match="unknown features"):
            schema.from_v1({"instances": [{**GOOD, "extra": 1}]})
    for i in range(_MEMO_SIZE + 10):  # ever-new layouts (an unknown key each) do not grow it unbounded
        with pytest.raises(RequestError):
            schema.from_v1({"instances": [{**GOOD, f"k{i}": 1}]})
        with pytest.raises(RequestError, match="missing features"):  # ever-new input names too
            schema.from_v2([(f"island_{i}", "BYTES", [1], ["Dream"])])
    assert len(schema._record_layouts) <= _MEMO_SIZE and len(schema._clean_names) <= _MEMO_SIZE


def _kserve_encoding(
    name: str, request_id: str, task: str, classes: list, output: np.ndarray, requested=None
) -> bytes:
    """What KServe 0.21 sends for the ``InferResponse`` the model used to return (its V2 endpoint:
    ``to_rest``, pydantic ``InferenceResponse``, FastAPI's ``jsonable_encoder``, ``ORJSONResponse``)."""
    import json
    import warnings

    from fastapi.encoders import jsonable_encoder
    from fastapi.responses import ORJSONResponse
    from kserve import InferResponse
    from kserve.protocol.infer_type import InferOutput
    from kserve.protocol.rest.v2_datamodels import InferenceResponse

    n = output.shape[0]
    if task == "regression":
        outputs = [InferOutput("prediction", [n], "FP64", output.tolist())]
    else:
        names = [str(c) for c in classes]
        outputs = [
            InferOutput("label", [n], "BYTES", [names[i] for i in output.argmax(axis=1)]),
            InferOutput(
                "probabilities",
                [n, len(names)],
                "FP64",
                output.reshape(-1).tolist(),
                parameters={"classes": json.dumps(names)},
            ),
        ]
    response = InferResponse(
        response_id=request_id, model_name=name, infer_outputs=outputs, requested_outputs=requested
    )
    rest, _ = response.to_rest()
    with warnings.catch_warnings():  # FastAPI deprecates ORJSONResponse; KServe 0.21 still uses it
        warnings.simplefilter("ignore")
        return ORJSONResponse(jsonable_encoder(InferenceResponse.model_validate(rest))).body


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_v2_body_is_the_bytes_kserve_would_send(tmp_path, penguins_model, task):
    """The model encodes its V2 answer itself: byte for byte what KServe's encoder made of it."""
    from kserve import InferRequest
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferInput, RequestedOutput

    from components.serving.model import TabularModel

    if task == "classification":
        model_dir = penguins_model[0]
        test = pd.read_parquet(penguins_model[1])
    else:
        make_table(200, seed=3, task="regression").to_csv(tmp_path / "t.csv", index=False)
        model_dir = build_model(
            tmp_path, str(tmp_path / "t.csv"), target="y", task=task, candidates=["ridge"]
        )
        test = pd.read_parquet(tmp_path / "test.parquet")
    model = TabularModel("m", model_dir)
    model.load()
    for rows, request_id in ((slice(0, 1), None), (slice(0, 5), "req-7"), (slice(None), "")):
        frame = test.iloc[rows]
        inputs = []
        for f in model.schema.features:
            values = frame[f.name].astype(object).where(frame[f.name].notna(), None).tolist()
            datatype = "FP64" if f.kind == "numeric" else "BYTES"
            inputs.append(InferInput(f.name, [len(values)], datatype, values))
        body = model.answer(InferRequest(model_name="m", infer_inputs=inputs, request_id=request_id))
        numeric, categorical = model.predictor.split_frame(frame)
        output = model.predictor.predict(numeric, categorical)
        classes = model.servable.classes if task == "classification" else []
        assert body == _kserve_encoding("m", request_id or "", task, classes, output)
    # "outputs": [{"name": ...}] selects and orders the outputs, as KServe's to_rest does
    names = [o["name"] for o in model.get_output_types()]
    for wanted in ([names[-1]], names[::-1]):
        requested = [RequestedOutput(n) for n in wanted]
        request = InferRequest(model_name="m", infer_inputs=inputs, request_id="r", request_outputs=requested)
        expected = _kserve_encoding("m", "r", task, classes, output, [RequestedOutput(n) for n in wanted])
        assert model.answer(request) == expected
    unknown = InferRequest(model_name="m", infer_inputs=inputs, request_outputs=[RequestedOutput("logits")])
    with pytest.raises(InvalidInput, match=r"requested outputs \['logits'\] are not outputs of this model"):
        model.answer(unknown)


# --- tables with ids, dates and booleans ---------------------------------------------------------------


@pytest.fixture(scope="module")
def messy_model(tmp_path_factory):
    """A model of a table with a row id, an e-mail column, a date, a yes/no column and store codes."""
    from tests.conftest import make_messy_table

    tmp = tmp_path_factory.mktemp("messy")
    make_messy_table(500, seed=3).to_csv(tmp / "customers.csv", index=False)
    model_dir = build_model(
        tmp, str(tmp / "customers.csv"), target="Churned", task="classification", max_trials=3
    )
    return ServableModel.load(model_dir), pd.read_parquet(tmp / "test.parquet")


def test_ids_are_dropped_and_dates_and_booleans_typed_in_the_model(messy_model):
    model, _ = messy_model
    kinds = {f["name"]: f["kind"] for f in model.metadata["features"]}
    assert kinds == {
        "signup_date": "datetime",
        "member": "boolean",
        "store_id": "categorical",
        "income": "numeric",
        "visits": "numeric",
        "region": "categorical",
    }
    assert set(model.metadata["dropped_columns"]) == {"row_id", "email"}
    date = next(f for f in model.metadata["features"] if f["name"] == "signup_date")
    assert date["format"] == "ISO8601" and date["parts"] == ["year", "month", "day", "day_of_week"]
    assert "signup_date__month" in " ".join(model.metadata["model_inputs"])


@pytest.mark.parametrize(
    "candidate", ["logistic_regression", "hist_gradient_boosting", "xgboost", "lightgbm"]
)
def test_fast_path_equals_the_pipeline_with_dates_and_booleans(tmp_path, candidate):
    from tests.conftest import make_messy_table

    make_messy_table(400, seed=4).to_csv(tmp_path / "c.csv", index=False)
    model = ServableModel.load(
        build_model(
            tmp_path,
            str(tmp_path / "c.csv"),
            target="Churned",
            task="classification",
            candidates=[candidate],
            max_trials=1,
        )
    )
    rows = pd.read_parquet(tmp_path / "test.parquet")
    rows.loc[0, "signup_date"] = None
    rows.loc[1, "member"] = None
    rows.loc[2, "store_id"] = "99"  # a store the model never saw
    fast = FastPredictor(model)
    assert np.array_equal(fast.predict(*fast.split_frame(rows)), model.predict_proba(rows))
    for i in range(5):
        one = rows.iloc[[i]]
        assert np.array_equal(fast.predict(*fast.split_frame(one)), model.predict_proba(one))


def test_requests_with_dates_booleans_and_the_dropped_columns(messy_model):
    model, test = messy_model
    fast = FastPredictor(model)
    meta = model.metadata
    schema = Schema(
        meta["features"],
        fast.numeric_names,
        fast.categorical_names,
        ignored=[meta["target"], *meta["dropped_columns"]],
    )
    row = test.iloc[0]
    record = {
        "Row ID": 17,  # training dropped it: read and ignored, so clients can send whole rows
        "Email": "someone@example.com",
        "Signup Date": row["signup_date"],
        "Member": bool(row["member"] == "yes"),  # a JSON boolean for a yes/no column
        "store_id": str(row["store_id"]),
        "Income": None if pd.isna(row["income"]) else float(row["income"]),
        "Visits": float(row["visits"]),
        "Region": row["region"],
        "Churned": "yes",  # the target: ignored
    }
    batch = schema.from_v1({"instances": [record]})
    answer = fast.predict(batch.numeric, batch.categorical)
    assert np.array_equal(answer, model.predict_proba(test.iloc[[0]]))
    same = schema.from_v1({"instances": [{**record, "Member": row["member"].upper()}]})  # "YES" / "NO"
    assert np.array_equal(fast.predict(same.numeric, same.categorical), answer)
    # store ids: integer codes the model keeps as text; a JSON number (as pandas' to_json writes them) is the
    # same category, 3 and 3.0 alike; a number for a text category is refused (below)
    assert next(f for f in meta["features"] if f["name"] == "store_id").get("codes") is True
    assert not any(f.get("codes") for f in meta["features"] if f["name"] != "store_id")
    for code in (int(row["store_id"]), float(row["store_id"])):
        as_number = schema.from_v1({"instances": [{**record, "store_id": code}]})
        assert np.array_equal(fast.predict(as_number.numeric, as_number.categorical), answer)

    for bad, message in (
        ({"Signup Date": "31/12/2023"}, "feature 'signup_date': '31/12/2023' is not a date/time in ISO 8601"),
        ({"Member": "maybe"}, "feature 'member': 'maybe' is not a boolean"),
        ({"Member": 2}, "feature 'member': 2 is not a boolean"),
        ({"Referrer": "x"}, "unknown features ['referrer']"),
        ({"Region": 3}, "feature 'region' takes a category (text); row 0 has int 3"),
    ):
        with pytest.raises(RequestError, match=re.escape(message)):
            schema.from_v1({"instances": [{**record, **bad}]})
