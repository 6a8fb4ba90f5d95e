"""The one-line reason a stage failed, left where the local runner finds it.

kfp.local reports a failed task only as "Task 'validate' finished with status FAILURE"; the reason is
in the task's log, above. Each component shell runs its core inside ``failure_note(output)``: if the
core raises, the error's one-line text goes to ``<task folder>/FAILURE.txt`` (beside the task's outputs,
which are never written on failure) and the error propagates as before. ``pipelines/local_run.py``
prints it. On a cluster the note stays in the task's container; the KFP UI shows the log.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

FAILURE_FILE = "FAILURE.txt"
MAX_CHARS = 800


@contextlib.contextmanager
def failure_note(output_path: str | os.PathLike) -> Iterator[None]:
    """Run the block; on an exception, write its one-line reason into the folder of ``output_path``."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            folder = Path(output_path).parent
            folder.mkdir(parents=True, exist_ok=True)
            (folder / FAILURE_FILE).write_text(describe(exc) + "\n", encoding="utf-8")
        raise


def describe(exc: BaseException) -> str:
    """The error on one line (its lines joined; errors of ours without their class name)."""
    from components.common.errors import KfpTabularError

    text = " ".join(line.strip() for line in str(exc).strip().splitlines())
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS - 1] + "…"
    if isinstance(exc, KfpTabularError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_failure(task_dir: str | os.PathLike) -> str:
    path = Path(task_dir) / FAILURE_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
