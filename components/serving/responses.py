"""Answer formats: V1 (shared by the model server and the deploy step's smoke test) and the V2 body as
KServe encodes it. No kserve import."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson


def labels_and_rows(classes: list[Any], output: np.ndarray) -> tuple[list[Any], list[list[float]]]:
    """Each row's label (the first class of highest probability, as ``argmax``) and its probabilities
    as Python floats (``tolist`` widens float32 exactly)."""
    rows = output.tolist()
    return [classes[row.index(max(row))] for row in rows], rows


def v1_predictions(task: str, classes: list[Any], output: np.ndarray) -> list:
    """Classification: ``[{"label", "probabilities": {class: p}}]``; regression: ``[value]``."""
    if task == "regression":
        return output.tolist()
    names = [str(c) for c in classes]
    labels, rows = labels_and_rows(classes, output)
    return [
        {"label": label, "probabilities": dict(zip(names, row, strict=True))}
        for label, row in zip(labels, rows, strict=True)
    ]


def v2_output(name: str, shape: list[int], datatype: str, data: list, parameters: dict | None = None) -> dict:
    """One V2 output in KServe's wire form (the field order of its ``ResponseOutput``)."""
    return {"name": name, "shape": shape, "datatype": datatype, "parameters": parameters, "data": data}


def v2_body(model_name: str, request_id: str, outputs: list[dict]) -> bytes:
    """A V2 response body as KServe encodes its ``InferenceResponse`` (fields in its order, nulls kept)."""
    return orjson.dumps(
        {
            "model_name": model_name,
            "model_version": None,
            "id": request_id,
            "parameters": None,
            "outputs": outputs,
        }
    )
