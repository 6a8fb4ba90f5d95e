"""Run the whole pipeline on this machine with kfp.local (no cluster), then print what happened.

    python -m pipelines.local_run                       # the demo: Palmer penguins species
    python -m pipelines.local_run --config my.yaml      # another table: any TabularConfig fields
    python -m pipelines.local_run --source-uri data.csv --target price --task regression \
        --drop-columns customer_id --threshold r2=0.6
    python -m pipelines.local_run --help                # every option (one per configuration field)

Exit status: 0 blessed and deployed, 3 the gate refused to bless (nothing deployed), 1 a stage failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import typing
import warnings
from pathlib import Path
from typing import Any

from components.common.errors import KfpTabularError
from components.common.stage import read_failure
from components.config import TabularConfig, load_config
from components.registry.tracking import local_store

EXIT_OK, EXIT_FAILED, EXIT_NOT_BLESSED = 0, 1, 3
STAGES = ("start-run", "ingest", "validate", "transform", "train", "evaluate", "register", "deploy")
LOCAL_STORE = "mlflow"  # the local tracking store (SQLite + artifacts), in the working directory


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
    if "start-run" in out:
        started = out["start-run"]["parameters"]
        lines.append(
            f"  tracking   MLflow run {started['run_id']} in experiment {started['model_name']!r}; "
            + (f"compared with {started['champion_uri']}" if started["champion_uri"] else "no champion yet")
        )
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
        lines += ["             " + line for line in column_lines(train)]
    if "validate" in out:
        schema = out["validate"]["artifacts"]["schema"]
        stats = out["validate"]["artifacts"]["statistics"]["metadata"]
        origin = "inferred (curate it and pass schema_uri)" if schema["metadata"].get("inferred") else "given"
        lines.append(f"  validate   no anomalies; schema {origin}: {schema['uri']}")
        if stats.get("reference_model"):
            drift = stats.get("drift") or {}
            largest = max(drift.items(), key=lambda kv: kv[1], default=None)
            lines.append(
                f"             drift against the current model's data ({stats['reference_model']}): "
                + (f"largest {largest[0]} {largest[1]:.3g}" if largest else "not measured")
                + (
                    f"; beyond bounds (drift_action warn): {', '.join(stats['drifted'])}"
                    if stats.get("drifted")
                    else ""
                )
            )
        else:
            lines.append("             no current model to check drift against (first run)")
        for warning in stats.get("warnings") or []:
            lines.append(f"             warning: {warning}")
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
        members = meta.get("params", {}).get("members") if meta["framework"] == "ensemble" else None
        chosen = (
            "an ensemble of "
            + " + ".join(f"{m['weight']:.2f} {m['candidate']} (trial {m['trial']})" for m in members)
            if members
            else f"best {meta['estimator']} ({meta['framework']})"
        )
        lines.append(
            f"  train      {chosen} of {int(metrics['trials'])} trials, "
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
    if "register" in out:
        lines.append(f"  register   {out['register']['parameters']['model_uri']}")
    if "deploy" in out:
        record = out["deploy"]["artifacts"]["deployment"]["metadata"]
        was = f"was version {record['previous']}" if record.get("previous") else "first champion"
        if record.get("status") == "unchanged":
            was = "already champion"
        lines.append(f"  deploy     {record['model_uri']} is the champion ({was}; {record['target']})")
    elif blessed is False:
        lines.append("  deploy     skipped: the model was not blessed (the champion is unchanged)")
    return lines, blessed


def column_lines(meta: dict[str, Any], shown: int = 6) -> list[str]:
    """What ingestion did to the columns and rows, for the summary."""
    by_kind: dict[str, list[str]] = {}
    for name, kind in (meta.get("column_types") or {}).items():
        by_kind.setdefault(kind, []).append(name)

    def names(items: list[str]) -> str:
        return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")

    kept = [f"{len(v)} {k} ({names(v)})" for k, v in by_kind.items() if k not in ("id", "text")]
    lines = ["columns: " + "; ".join(kept)] if kept else []
    dropped = meta.get("dropped_columns") or {}
    if dropped:
        lines.append(
            "dropped columns: " + "; ".join(f"{n} ({why.split(':')[0]})" for n, why in dropped.items())
        )
    if meta.get("dropped_rows_missing_target"):
        lines.append(
            f"dropped {int(meta['dropped_rows_missing_target'])} of {int(meta['source_rows'])} rows: "
            "the target is missing"
        )
    if meta.get("non_finite"):
        detail = ", ".join(f"{k} ({int(v)})" for k, v in meta["non_finite"].items())
        lines.append(f"infinite values made missing (non_finite: missing): {detail}")
    return lines


def failed_stage(run_dir: Path | None, message: str = "") -> str:
    """The stage that failed: the one kfp.local names ("Inner task failed: 'x'"), else the first without outputs."""
    named = re.search(r"task failed: '([\w-]+)'", message) or re.search(r"Task '([\w-]+)' finished", message)
    if named and named.group(1) in STAGES:
        return named.group(1)
    if run_dir is None:
        return "pipeline start"
    done = {p.parent.name for p in run_dir.glob("*/executor_output.json")}
    return next((s for s in STAGES if s not in done), "deploy")


# Command-line options beyond the configuration's own fields (one option per field, generated below).
EXTRA_ALIASES = {"thresholds": "--threshold", "column_types": "--column-type"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.local_run",
        description=__doc__.split("\n")[0],
        epilog="Every option but --config and --pipeline-root is a field of the configuration "
        "(components/config.py:TabularConfig); options override the --config file, which overrides the defaults. "
        "Lists are comma-separated (--drop-columns id,email); mappings are repeated KEY=VALUE "
        "(--threshold r2=0.6 --threshold rmse=10).",
    )
    parser.add_argument("--config", help="YAML file with TabularConfig fields (see pipelines/configs/)")
    parser.add_argument("--pipeline-root", default="local_outputs", help="where kfp.local writes artifacts")
    for name, field in TabularConfig.model_fields.items():
        flags = [f"--{name.replace('_', '-')}"] + ([EXTRA_ALIASES[name]] if name in EXTRA_ALIASES else [])
        help_text = (
            field.description or ""
        ) + f" (default: {field.get_default(call_default_factory=True)!r})"
        annotation, options = field.annotation, {}
        origin = typing.get_origin(annotation)
        if origin is typing.Literal:
            options = {"choices": list(typing.get_args(annotation))}
        elif origin is list:
            options = {"type": _comma_list, "metavar": "A,B"}
        elif origin is dict:
            options = {"action": "append", "metavar": "KEY=VALUE"}
        elif annotation in (int, float):
            options = {"type": annotation}
        parser.add_argument(*flags, dest=name, default=None, help=help_text.replace("%", "%%"), **options)
    return parser.parse_args(argv)


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _mapping(name: str, items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    numeric = typing.get_args(TabularConfig.model_fields[name].annotation)[1] is float
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KfpTabularError(f"--{name.replace('_', '-')} takes KEY=VALUE, not {item!r}")
        try:
            values[key.strip()] = float(value) if numeric else value.strip()
        except ValueError as exc:
            raise KfpTabularError(f"--{name.replace('_', '-')} {item!r}: {value!r} is not a number") from exc
    return values


def config_from_args(args: argparse.Namespace) -> TabularConfig:
    overrides = {}
    for name in TabularConfig.model_fields:
        value = getattr(args, name)
        if value is not None and typing.get_origin(TabularConfig.model_fields[name].annotation) is dict:
            value = _mapping(name, value)
        overrides[name] = value
    return load_config(args.config, **overrides).resolved()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
    except (KfpTabularError, ValueError) as exc:
        print(f"kfp-tabular: configuration error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if "mlflow_tracking_uri" not in config.model_fields_set:
        # nothing configured: runs and the registry in one SQLite file (+ artifacts) in ./mlflow
        config.mlflow_tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or local_store(LOCAL_STORE)
    print(
        f"kfp-tabular: running the pipeline locally on {config.source_uri} (target {config.target!r}, "
        f"{config.task}); model name {config.model_name!r}; gate {config.thresholds}; tracking "
        f"{config.mlflow_tracking_uri}",
        flush=True,
    )
    started, started_at = time.perf_counter(), time.time()
    try:
        run_dir = run_pipeline(config, args.pipeline_root)
    except (
        Exception
    ) as exc:  # kfp.local raises RuntimeError naming the failed task; the stage left its reason
        run_dir = newest_run(args.pipeline_root, since=started_at)
        stage = failed_stage(run_dir, ANSI.sub("", str(exc)))
        reason = (read_failure(run_dir / stage) if run_dir else "") or ANSI.sub("", str(exc)).strip()
        print(
            f"\nkfp-tabular: FAILED at stage '{stage}' after {time.perf_counter() - started:.0f}s: {reason}",
            file=sys.stderr,
        )
        print("kfp-tabular: the stage's log above has the details; nothing was deployed.", file=sys.stderr)
        return EXIT_FAILED
    lines, blessed = summarize(run_dir)
    print(f"\nkfp-tabular: pipeline finished in {time.perf_counter() - started:.0f}s")
    print("\n".join(lines))
    return EXIT_OK if blessed else EXIT_NOT_BLESSED


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def newest_run(pipeline_root: str | Path, since: float = 0.0) -> Path | None:
    root = Path(pipeline_root)
    runs = sorted(
        (p for p in root.glob("kfp-tabular-*") if p.is_dir() and p.stat().st_mtime >= since),
        key=lambda p: p.stat().st_mtime,
    )
    return runs[-1] if runs else None


if __name__ == "__main__":
    sys.exit(main())
