"""Run the whole pipeline on this machine with kfp.local (no cluster), then print what happened.

    python -m pipelines.local_run                       # the demo: Palmer penguins species
    python -m pipelines.local_run --config my.yaml      # another table: any TabularConfig fields
    python -m pipelines.local_run --source-uri data.csv --target price --task regression \
        --threshold r2=0.6

Exit status: 0 blessed and deployed, 3 the gate refused to bless (nothing deployed), 1 a stage failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from components.common.errors import KfpTabularError
from components.config import TabularConfig, load_config

EXIT_OK, EXIT_FAILED, EXIT_NOT_BLESSED = 0, 1, 3
STAGES = ("ingest", "validate", "transform", "train", "evaluate", "deploy")


def run_pipeline(config: TabularConfig, pipeline_root: str | Path) -> Path:
    """Run ``tabular_pipeline`` through kfp.local in this interpreter; returns the run's folder."""
    from kfp import local

    from pipelines.tabular_pipeline import tabular_pipeline

    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # The subprocess runner runs each task in this interpreter: the same locked environment the
    # pipeline image is built from, so kfp's "non-Python base image" warning does not apply here.
    warnings.filterwarnings("ignore", message="You may be attemping to run a task", category=RuntimeWarning)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    tabular_pipeline(**config.pipeline_arguments())
    return newest_run(root)


def task_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each finished task's parameters and artifacts, from the executor_output.json files kfp.local writes."""
    result = {}
    for path in sorted(run_dir.glob("*/executor_output.json")):
        data = json.loads(path.read_text())
        artifacts = {
            name: entry["artifacts"][0]
            for name, entry in data.get("artifacts", {}).items()
            if entry.get("artifacts")
        }
        result[path.parent.name] = {"parameters": data.get("parameterValues", {}), "artifacts": artifacts}
    return result


def summarize(run_dir: Path) -> tuple[list[str], bool | None]:
    out = task_outputs(run_dir)
    lines, blessed = [f"run folder: {run_dir}"], None
    if "ingest" in out:
        train = out["ingest"]["artifacts"]["train_data"]["metadata"]
        rows = {
            s: out["ingest"]["artifacts"][f"{s}_data"]["metadata"]["rows"] for s in ("train", "eval", "test")
        }
        lines.append(
            f"  ingest     {int(out['ingest']['parameters']['rows'])} rows, {len(train['columns'])} columns "
            f"-> train {int(rows['train'])} / eval {int(rows['eval'])} / test {int(rows['test'])} "
            f"(source sha256 {train['source_sha256'][:12]})"
        )
    if "validate" in out:
        schema = out["validate"]["artifacts"]["schema"]
        origin = "inferred (curate it and pass schema_uri)" if schema["metadata"].get("inferred") else "given"
        lines.append(f"  validate   no anomalies; schema {origin}: {schema['uri']}")
        lines.append(
            f"             statistics report: {out['validate']['artifacts']['statistics_report']['uri']}"
        )
    if "transform" in out:
        graph = out["transform"]["artifacts"]["transform_graph"]["metadata"]
        lines.append(
            f"  transform  {len(graph['features'])} features -> {int(graph['model_inputs'])} model inputs"
        )
    if "train" in out:
        meta = out["train"]["artifacts"]["model"]["metadata"]
        metrics = out["train"]["artifacts"]["metrics"]["metadata"]
        cv = {k: v for k, v in metrics.items() if k.startswith("cv_")}
        lines.append(
            f"  train      best {meta['estimator']} ({meta['framework']}) of {int(metrics['trials'])} trials, "
            + ", ".join(f"{k} {v:.4f}" for k, v in cv.items())
        )
    if "evaluate" in out:
        metrics = out["evaluate"]["artifacts"]["metrics"]["metadata"]
        decision = out["evaluate"]["artifacts"]["report"]["metadata"]
        blessed = bool(out["evaluate"]["parameters"]["Output"])
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "blessed")
        lines.append(f"  evaluate   test: {shown}")
        lines.append(f"  gate       {'BLESSED' if blessed else 'NOT BLESSED'}: {decision['reason']}")
        lines.append(f"             report: {out['evaluate']['artifacts']['report']['uri']}")
    if "deploy" in out:
        params = out["deploy"]["parameters"]
        lines.append(f"  deploy     version {int(params['version'])} at {params['model_uri']}")
    elif blessed is False:
        lines.append("  deploy     skipped: the model was not blessed")
    return lines, blessed


def failed_stage(run_dir: Path | None) -> str:
    if run_dir is None:
        return "pipeline start"
    done = {p.parent.name for p in run_dir.glob("*/executor_output.json")}
    return next((s for s in STAGES if s not in done), "deploy")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.local_run", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML file with TabularConfig fields (see pipelines/configs/)")
    parser.add_argument("--source-uri", help="CSV/Parquet path or URI (default: the penguins demo)")
    parser.add_argument("--target", help="target column")
    parser.add_argument("--task", choices=["classification", "regression"])
    parser.add_argument("--max-trials", type=int, help="hyperparameter search budget in trials")
    parser.add_argument("--max-seconds", type=float, help="hyperparameter search budget in seconds")
    parser.add_argument(
        "--threshold", action="append", metavar="METRIC=VALUE", help="gate threshold (repeatable)"
    )
    parser.add_argument("--model-name", help="name of the deployed model")
    parser.add_argument("--model-repository", help="local model repository (default: ./model_repository)")
    parser.add_argument("--pipeline-root", default="local_outputs", help="where kfp.local writes artifacts")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        thresholds = None
        if args.threshold:
            thresholds = {}
            for item in args.threshold:
                name, sep, value = item.partition("=")
                if not sep:
                    raise KfpTabularError(f"--threshold takes METRIC=VALUE, not {item!r}")
                thresholds[name.strip()] = float(value)
        config = load_config(
            args.config,
            source_uri=args.source_uri,
            target=args.target,
            task=args.task,
            max_trials=args.max_trials,
            max_seconds=args.max_seconds,
            thresholds=thresholds,
            model_name=args.model_name,
            model_repository=args.model_repository,
        )
    except (KfpTabularError, ValueError) as exc:
        print(f"kfp-tabular: configuration error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # The model repository is resolved here so the summary and `make serve` agree on one absolute path.
    config.model_repository = str(Path(config.model_repository).expanduser().resolve())
    print(
        f"kfp-tabular: running the pipeline locally on {config.source_uri} (target {config.target!r}, "
        f"{config.task})",
        flush=True,
    )
    started, started_at = time.perf_counter(), time.time()
    try:
        run_dir = run_pipeline(config, args.pipeline_root)
    except Exception as exc:  # kfp.local raises RuntimeError naming the failed task; the log above has why
        stage = failed_stage(newest_run(args.pipeline_root, since=started_at))
        print(
            f"\nkfp-tabular: FAILED at stage '{stage}' after {time.perf_counter() - started:.0f}s: {exc}",
            file=sys.stderr,
        )
        print("kfp-tabular: the stage's log above says what is wrong; nothing was deployed.", file=sys.stderr)
        return EXIT_FAILED
    lines, blessed = summarize(run_dir)
    print(f"\nkfp-tabular: pipeline finished in {time.perf_counter() - started:.0f}s")
    print("\n".join(lines))
    return EXIT_OK if blessed else EXIT_NOT_BLESSED


def newest_run(pipeline_root: str | Path, since: float = 0.0) -> Path | None:
    root = Path(pipeline_root)
    runs = sorted(
        (p for p in root.glob("kfp-tabular-*") if p.is_dir() and p.stat().st_mtime >= since),
        key=lambda p: p.stat().st_mtime,
    )
    return runs[-1] if runs else None


if __name__ == "__main__":
    sys.exit(main())
