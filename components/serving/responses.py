"""The V1 answer format, shared by the model server and the deploy step's smoke test (no kserve import)."""

from __future__ import annotations

from typing import Any

import numpy as np


def v1_predictions(task: str, classes: list[Any], output: np.ndarray) -> list:
    """Classification: ``[{"label", "probabilities": {class: p}}]``; regression: ``[value]``."""
    if task == "regression":
        return output.astype(np.float64).tolist()
    labels = np.asarray(classes, dtype=object)[output.argmax(axis=1)].tolist()
    return [
        {"label": label, "probabilities": dict(zip(map(str, classes), row, strict=True))}
        for label, row in zip(labels, output.astype(np.float64).tolist(), strict=True)
    ]
