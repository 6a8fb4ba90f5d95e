"""The V1 answer format, shared by the model server and the deploy step's smoke test (no kserve import)."""

from __future__ import annotations

from typing import Any

import numpy as np


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
