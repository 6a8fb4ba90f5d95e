"""Score a table with a model on this machine: the batch prediction pipeline through kfp.local.

    python -m pipelines.batch_run --input-uri data.csv --output-uri predictions/          # the demo's champion
    python -m pipelines.batch_run --model-uri models:/houses-price/3 --input-uri s3://bucket/new/ \
        --output-uri s3://bucket/scored/2026-12-01/ --passthrough-columns listing_id --on-bad-rows quarantine

Exit status: 0 scored (the output is complete), 1 the job stopped (the reason on the last line; no output).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from pathlib import Path

from components.batch_predict.core import DEFAULT_BATCH_ROWS, ON_BAD_ROWS
from components.common.stage import read_failure
from components.registry.tracking import local_store

STAGES = ("plan-batch", "score-shard", "commit-batch")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.batch_run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model-uri",
        default="models:/penguins-species@champion",
        help="models:/<name>@<alias>, models:/<name>/<version>, or a model folder / URI",
    )
    parser.add_argument(
        "--input-uri",
        required=True,
        help="CSV or Parquet file, or a folder/prefix of Parquet files (path, file://, http(s)://, s3://, gs://)",
    )
    parser.add_argument(
        "--output-uri", required=True, help="a folder (part files, _quarantine/, _SUCCESS) or a .parquet file"
    )
    parser.add_argument(
        "--passthrough-columns", default="", help="input columns copied to the output (ids), comma-separated"
    )
    parser.add_argument(
        "--on-bad-rows",
        choices=ON_BAD_ROWS,
        default="error",
        help="a row that cannot be converted: stop the job (error) or set it aside with its reason (quarantine)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--file-format", choices=("auto", "csv", "parquet"), default="auto")
    parser.add_argument("--delimiter", default="auto")
    parser.add_argument("--missing-values", default="", help="extra texts meaning missing, comma-separated")
    parser.add_argument(
        "--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, help="rows per record batch (memory bound)"
    )
    parser.add_argument("--max-shards", type=int, default=16, help="shards the input files are split into")
    parser.add_argument(
        "--mlflow-tracking-uri",
        default=None,
        help="the registry (default: MLFLOW_TRACKING_URI, else ./mlflow as `make run` makes it)",
    )
    parser.add_argument("--pipeline-root", default="local_outputs", help="where kfp.local writes artifacts")
    return parser.parse_args(argv)


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def run(args: argparse.Namespace) -> Path | None:
    from kfp import local

    from pipelines.batch_predict_pipeline import batch_predict_pipeline

    root = Path(args.pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    batch_predict_pipeline(
        model_uri=args.model_uri,
        input_uri=_absolute(args.input_uri),
        output_uri=_absolute(args.output_uri),
        passthrough_columns=_list(args.passthrough_columns),
        on_bad_rows=args.on_bad_rows,
        overwrite=args.overwrite,
        file_format=args.file_format,
        delimiter=args.delimiter,
        missing_values=_list(args.missing_values),
        batch_rows=args.batch_rows,
        max_shards=args.max_shards,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
    )


def _absolute(uri: str) -> str:
    """Local paths made absolute: the tasks need not run in this working directory."""
    if "://" in uri or not uri.strip():
        return uri
    return str(Path(uri).expanduser().resolve()) + ("/" if uri.endswith("/") else "")


def newest_run(root: Path, since: float) -> Path | None:
    runs = sorted(
        (p for p in root.glob("kfp-tabular-batch-predict-*") if p.is_dir() and p.stat().st_mtime >= since),
        key=lambda p: p.stat().st_mtime,
    )
    return runs[-1] if runs else None


def failure(run_dir: Path | None, message: str) -> tuple[str, str]:
    """(stage, reason) of a failed job: the failed task's note, else kfp.local's message."""
    if run_dir is not None:
        for task in sorted(run_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            note = read_failure(task)
            if note:
                return task.name, note
    named = re.search(r"task failed: '([\w-]+)'", message) or re.search(r"Task '([\w-]+)' finished", message)
    return (named.group(1) if named else "pipeline"), message.strip().splitlines()[
        -1
    ] if message.strip() else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mlflow_tracking_uri is None:
        args.mlflow_tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or local_store("mlflow")
    print(f"kfp-tabular: scoring {args.input_uri} with {args.model_uri} into {args.output_uri}", flush=True)
    started, started_at = time.perf_counter(), time.time()
    root = Path(args.pipeline_root).resolve()
    try:
        run(args)
    except Exception as exc:
        stage, reason = failure(newest_run(root, started_at), ANSI.sub("", str(exc)))
        print(
            f"\nkfp-tabular: batch prediction FAILED at '{stage}' after {time.perf_counter() - started:.0f}s: "
            f"{reason}\nkfp-tabular: nothing was written to {args.output_uri}.",
            file=sys.stderr,
        )
        return 1
    run_dir = newest_run(root, started_at)
    summary = next(run_dir.glob("commit-batch/summary"), None) if run_dir else None
    print(f"\nkfp-tabular: batch prediction finished in {time.perf_counter() - started:.0f}s")
    if summary is not None:
        print(summary.read_text().strip())
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
