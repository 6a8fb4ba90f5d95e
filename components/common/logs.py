"""Logging that tells a user what happened: one logger per stage, one line per decision."""

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def get_logger(stage: str) -> logging.Logger:
    """Logger ``kfp_tabular.<stage>`` writing to stderr (KFP shows it in the task's log)."""
    root = logging.getLogger("kfp_tabular")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False
    return root.getChild(stage)
