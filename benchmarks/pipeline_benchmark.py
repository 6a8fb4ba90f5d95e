"""Pipeline benchmark: the kfp-tabular pipeline through kfp.local vs the same work as one plain script.

For each row count it generates a deterministic synthetic classification table (20 mixed columns plus a
binary target, Parquet) and runs, side by side in one invocation:

(a) ``kfp``: the whole pipeline through ``pipelines.local_run.run_pipeline`` (kfp.local
    ``SubprocessRunner(use_venv=False)``: every task is a child process of the runner);
(b) ``plain``: the same six core calls (ingest -> validate_splits -> fit_transform -> train -> evaluate
    -> deploy) with the same arguments, in one process, no KFP.

Each run is a fresh Python process started by this driver, so both totals include interpreter start-up
and imports. A background thread samples the run's process tree every ``--interval`` seconds (psutil
plus ``/proc/<pid>/status``): per-stage wall time and peak RSS, the total and the overall peak (parent +
children). The plain worker also resets its kernel peak-RSS mark (``/proc/self/clear_refs``) at each
stage start and reads ``VmHWM`` at its end, so its per-stage peaks are exact. Run order alternates per
size (plain first at the 1st, 3rd, ... size; kfp first at the 2nd, ...).

Run from the repository root::

    .venv/bin/python -m benchmarks.pipeline_benchmark --rows 10000 100000 1000000 --out docs/benchmarks.md
    .venv/bin/python -m benchmarks.pipeline_benchmark --quick        # 2k-row smoke run, prints only

On a shared machine add ``--repeat 2`` (each mode runs twice per size, order flipped; the fastest run
counts); ``--env OMP_NUM_THREADS=1`` passes an environment variable to both modes' processes. A report
written with ``--out`` keeps the hand-written findings below its marker line.

Work files (data, artifacts, per-run logs, ``results.json``) go to ``benchmarks/out/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
STAGES = ("ingest", "validate", "transform", "train", "evaluate", "deploy")
MODES = ("kfp", "plain")
MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGET = "churned"

# The targets of the issue.
MAX_SECONDS_1M = 600.0
MAX_PEAK_MIB_1M = 4096.0
MAX_OVERHEAD_100K = 1.5
MAX_SCALING_EXPONENT = 1.0  # time ~ rows**k; k <= 1 is "no worse than linear"

PACKAGES = (
    "kfp",
    "tensorflow-data-validation",
    "tensorflow",
    "apache-beam",
    "scikit-learn",
    "xgboost-cpu",
    "pandas",
    "numpy",
    "pyarrow",
    "psutil",
)


# ----------------------------------------------------------------------------------------- data


def generate_table(rows: int, path: Path, seed: int = 7) -> dict[str, Any]:
    """Write a deterministic synthetic churn-like table: 12 numeric, 6 categorical, 1 bool, 1 target.

    Numeric columns have different scales (1e-3 .. 1e5) and some missing values; categorical columns
    are plain strings (cardinality 3..50, some missing); the binary target depends on several features
    through a logistic model, so a model reaches well above chance (about 0.8 accuracy).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)

    def with_missing(values, share: float):
        values = values.astype(np.float64)
        values[rng.random(rows) < share] = np.nan
        return values

    def categorical(name: str, levels: int, offset: float, missing: float):
        weights = 1.0 / (np.arange(levels) + offset)  # mildly skewed; the rarest level stays common enough
        codes = rng.choice(levels, size=rows, p=weights / weights.sum())
        dictionary = pa.array([f"{name}_{i:02d}" for i in range(levels)])
        mask = rng.random(rows) < missing if missing else None
        array = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=mask), dictionary)
        return codes, array.dictionary_decode()  # plain strings, read back by pandas as object

    age = rng.integers(18, 91, size=rows)
    income = rng.lognormal(10.5, 0.8, size=rows)
    balance = rng.normal(1e5, 5e4, size=rows)
    tenure = rng.poisson(36, size=rows)
    products = rng.integers(1, 6, size=rows)
    credit = np.clip(rng.normal(650, 80, size=rows), 300, 850)
    utilization = rng.beta(2, 5, size=rows)
    rate = rng.normal(0.003, 0.001, size=rows)
    transactions = rng.negative_binomial(5, 0.2, size=rows)
    ticket = rng.lognormal(3, 1, size=rows)
    login = rng.exponential(20, size=rows)
    sensor = rng.normal(0, 1000, size=rows)  # pure noise, large scale
    active = rng.random(rows) < 0.7

    plan_codes, plan = categorical("plan", 3, 1.0, 0.0)
    region_codes, region = categorical("region", 8, 2.0, 0.0)
    channel_codes, channel = categorical("channel", 5, 2.0, 0.04)
    _, device = categorical("device", 12, 3.0, 0.0)
    segment_codes, segment = categorical("segment", 25, 5.0, 0.02)
    _, city = categorical("city", 50, 10.0, 0.01)

    region_effect = np.linspace(-0.8, 0.8, 8)
    segment_effect = np.sin(np.arange(25)) * 0.6
    logit = (
        -0.9 * (tenure - 36) / 6
        + 1.1 * (utilization - 0.29) / 0.16
        - 0.6 * (np.log(income) - 10.5) / 0.8
        + 0.5 * (login - 20) / 20
        - 0.4 * (credit - 650) / 80
        + 0.35 * (products - 3)
        + np.array([0.6, 0.0, -0.6])[plan_codes]
        + region_effect[region_codes]
        + segment_effect[segment_codes]
        + 0.3 * (channel_codes == 0)
        - 0.7 * active
        + 0.4 * ((age - 54) / 21) * ((credit - 650) / 80)
        + 0.3
    )
    churned = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)

    columns = {
        "age": pa.array(age),
        "income": pa.array(with_missing(income, 0.05)),
        "balance": pa.array(with_missing(balance, 0.03)),
        "tenure_months": pa.array(tenure.astype(np.int64)),
        "num_products": pa.array(products),
        "credit_score": pa.array(with_missing(credit, 0.02)),
        "utilization": pa.array(with_missing(utilization, 0.10)),
        "interest_rate": pa.array(rate),
        "transactions_30d": pa.array(transactions.astype(np.int64)),
        "avg_ticket": pa.array(ticket),
        "days_since_login": pa.array(with_missing(login, 0.08)),
        "sensor_reading": pa.array(with_missing(sensor, 0.15)),
        "plan": plan,
        "region": region,
        "channel": channel,
        "device_os": device,
        "segment": segment,
        "city": city,
        "is_active": pa.array(active),
        TARGET: pa.array(churned),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return {
        "rows": rows,
        "columns": len(columns) - 1,
        "numeric": 12,
        "categorical": 6,
        "boolean": 1,
        "positive_share": float(churned.mean()),
        "bytes": path.stat().st_size,
    }


# ----------------------------------------------------------------------------------------- measuring


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process so far (its own threads), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc (0, 0 once it is gone)."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return rss, hwm


def _stage_of(cmdline: list[str]) -> str | None:
    """kfp.local runs a task as ``sh -c ... python -m kfp.dsl.executor_main ... --function_to_execute X``."""
    with contextlib.suppress(ValueError, IndexError):
        return cmdline[cmdline.index("--function_to_execute") + 1]
    return None


class TreeSampler:
    """Samples the RSS of a process and its descendants from a background thread.

    Each descendant is attributed to a stage: the ``--function_to_execute`` argument on its own command
    line or an ancestor's; processes without one (the root) count as ``None``.
    """

    def __init__(self, pid: int, interval: float) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, dict[int, int]]] = []  # (time, {pid: rss KiB})
        self.procs: dict[int, dict[str, Any]] = {}  # pid -> stage, created, last_seen, hwm_kib, ppid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _register(self, proc: psutil.Process) -> dict[str, Any] | None:
        info = self.procs.get(proc.pid)
        if info is not None:
            return info
        try:
            cmdline = proc.cmdline()
            created = proc.create_time()
            ppid = proc.ppid()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        stage = _stage_of(cmdline)
        if stage is None and ppid in self.procs:
            stage = self.procs[ppid]["stage"]
        info = {
            "stage": stage,
            "created": created,
            "first_seen": None,
            "last_seen": None,
            "hwm_kib": 0,
            "cpu_s": 0.0,
            "ppid": ppid,
        }
        self.procs[proc.pid] = info
        return info

    def sample(self) -> None:
        now = time.time()
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        rss_by_pid = {}
        for proc in tree:  # parents come before their children in psutil's order
            info = self._register(proc)
            if info is None:
                continue
            rss, hwm = _status_kib(proc.pid)
            if rss == 0:
                continue
            if info["first_seen"] is None:
                info["first_seen"] = now
            info["last_seen"] = now
            info["hwm_kib"] = max(info["hwm_kib"], hwm)
            info["cpu_s"] = max(info["cpu_s"], _cpu_seconds(proc.pid))
            rss_by_pid[proc.pid] = rss
        self.samples.append((now, rss_by_pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    # --- summaries ---
    def peak_total_mib(self, start: float = -math.inf, end: float = math.inf, pids=None) -> float:
        best = 0
        for t, rss in self.samples:
            if start <= t <= end:
                best = max(best, sum(v for p, v in rss.items() if pids is None or p in pids))
        return best / 1024

    def stage_pids(self, stage: str | None) -> set[int]:
        return {
            pid
            for pid, info in self.procs.items()
            if info["stage"] == stage and info["first_seen"] is not None
        }


def run_worker(
    mode: str, spec: dict[str, Any], run_dir: Path, interval: float, extra_env: dict[str, str]
) -> dict[str, Any]:
    """Start a fresh worker process for one run, sample its process tree, return the measurements."""
    spec_path = run_dir / "spec.json"
    result_path = run_dir / "result.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    result_path.unlink(missing_ok=True)
    log_path = run_dir / f"{mode}.log"
    command = [
        sys.executable,
        "-m",
        "benchmarks.pipeline_benchmark",
        "--worker",
        mode,
        "--spec",
        str(spec_path),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra_env}
    with open(log_path, "w") as log:
        system_before, self_before = psutil.cpu_times(), os.times()
        started = time.time()
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid, interval).start()
        # wait4: the worker's resource usage, including every descendant it waited for (the kfp tasks)
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.time()
        proc.returncode = returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
        system_after, self_after = psutil.cpu_times(), os.times()
    wall = ended - started
    run_cpu = usage.ru_utime + usage.ru_stime
    busy = _busy(system_after) - _busy(system_before)
    own = (self_after.user + self_after.system) - (self_before.user + self_before.system)
    worker = json.loads(result_path.read_text()) if result_path.exists() else {}
    measured = {
        "mode": mode,
        "returncode": returncode,
        "ok": returncode == 0 and worker.get("ok", False),
        "error": worker.get("error") or ("" if returncode == 0 else f"worker exited with {returncode}"),
        "log": str(log_path.relative_to(REPO)),
        "total_s": wall,
        "cpu_s": run_cpu,
        "max_process_rss_mib": usage.ru_maxrss / 1024,  # the largest single process of the run
        "sampler_cpu_s": own,
        # what everything else on the machine used meanwhile, in cores (the noise)
        "others_cores": max(0.0, busy - run_cpu - own) / wall if wall > 0 else 0.0,
        "stages": {},
        "outcome": worker.get("outcome", {}),
    }
    if mode == "kfp":
        measured.update(_kfp_stages(sampler, started, ended, interval))
    else:
        measured.update(_plain_stages(sampler, worker, started, ended))
    return measured


def _busy(times) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _kfp_stages(sampler: TreeSampler, started: float, ended: float, interval: float) -> dict[str, Any]:
    stages = {}
    root_pid = sampler.root.pid
    for stage in STAGES:
        pids = sampler.stage_pids(stage)
        if not pids:
            continue
        # start and exit fall between two samples: count half an interval on each side
        begin = min(sampler.procs[p]["first_seen"] for p in pids) - interval / 2
        end = max(sampler.procs[p]["last_seen"] for p in pids) + interval / 2
        sampled = sampler.peak_total_mib(pids=pids)
        # the kernel's peak RSS of the task's processes (catches spikes between samples)
        hwm = sum(sampler.procs[p]["hwm_kib"] for p in pids) / 1024
        parent = sampler.peak_total_mib(begin, end, pids={root_pid})
        stages[stage] = {
            "start": begin,
            "end": end,
            "wall_s": end - begin,
            "cpu_s": sum(sampler.procs[p]["cpu_s"] for p in pids),
            "peak_mib": max(sampled, hwm),
            "parent_mib": parent,
        }
    in_stages = sum(s["wall_s"] for s in stages.values())
    root = sampler.procs.get(root_pid, {"hwm_kib": 0})
    parent_peak = max(root["hwm_kib"] / 1024, sampler.peak_total_mib(pids={root_pid}))
    overall = max(
        [sampler.peak_total_mib()] + [s["peak_mib"] + s["parent_mib"] for s in stages.values()],
    )
    return {
        "stages": stages,
        "outside_s": (ended - started) - in_stages,
        "outside_label": "kfp.local runner process (start, imports, orchestration between tasks)",
        "outside_peak_mib": parent_peak,
        "peak_mib": overall,
    }


def _plain_stages(
    sampler: TreeSampler, worker: dict[str, Any], started: float, ended: float
) -> dict[str, Any]:
    stages = {}
    for stage, timing in worker.get("stages", {}).items():
        sampled = sampler.peak_total_mib(timing["start"], timing["end"])
        stages[stage] = {
            "start": timing["start"],
            "end": timing["end"],
            "wall_s": timing["end"] - timing["start"],
            "cpu_s": timing["cpu_s"],
            "peak_mib": max(sampled, timing["hwm_kib"] / 1024),
        }
    in_stages = sum(s["wall_s"] for s in stages.values())
    before = min((s["start"] for s in stages.values()), default=ended)
    startup_peak = sampler.peak_total_mib(started, before)
    overall = max([sampler.peak_total_mib()] + [s["peak_mib"] for s in stages.values()])
    return {
        "stages": stages,
        "outside_s": (ended - started) - in_stages,
        "outside_label": "interpreter start, imports, exit",
        "outside_peak_mib": startup_peak,
        "peak_mib": overall,
    }


# ----------------------------------------------------------------------------------------- workers


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def plain_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's work as one plain script: the six cores, in order, with the component shells' arguments."""
    from components.config import TabularConfig

    c = TabularConfig(**spec["config"])
    work = Path(spec["work_dir"])
    stages: dict[str, dict[str, float]] = {}
    outcome: dict[str, Any] = {}

    @contextlib.contextmanager
    def stage(name: str):
        _reset_peak_rss()
        began, cpu = time.time(), time.process_time()
        yield
        stages[name] = {
            "start": began,
            "end": time.time(),
            "cpu_s": time.process_time() - cpu,
            "hwm_kib": _status_kib(os.getpid())[1],
        }
        print(f"[plain] {name} done in {stages[name]['end'] - began:.2f}s", flush=True)

    def path(task: str, output: str) -> str:
        (work / task).mkdir(parents=True, exist_ok=True)
        return str(work / task / output)

    try:
        with stage("ingest"):
            from components.ingest.core import ingest

            ingested = ingest(
                source_uri=c.source_uri,
                file_format=c.file_format,
                target=c.target,
                task=c.task,
                drop_columns=c.drop_columns,
                eval_fraction=c.eval_fraction,
                test_fraction=c.test_fraction,
                seed=c.seed,
                train_path=path("ingest", "train_data"),
                eval_path=path("ingest", "eval_data"),
                test_path=path("ingest", "test_data"),
            )
        splits = {s: path("ingest", f"{s}_data") for s in ("train", "eval", "test")}
        with stage("validate"):
            from components.validate.core import validate_splits

            validate_splits(
                splits,
                target=ingested.target,
                schema_uri=c.schema_uri,
                drift_threshold=c.drift_threshold,
                drift_thresholds={str(k): float(v) for k, v in (c.drift_thresholds or {}).items()},
                statistics_dir=path("validate", "statistics"),
                schema_path=path("validate", "schema"),
                html_path=path("validate", "statistics_report"),
                report_path=path("validate", "anomalies_report"),
            )
        with stage("transform"):
            from components.transform.core import fit_transform

            fit_transform(
                train_path=splits["train"],
                eval_path=splits["eval"],
                target=ingested.target,
                task=c.task,
                max_categories=c.max_categories,
                transform_dir=path("transform", "transform_graph"),
                transformed_train_path=path("transform", "transformed_train"),
                transformed_eval_path=path("transform", "transformed_eval"),
            )
        model_dir = path("train", "model")
        with stage("train"):
            from components.train.core import train

            trained = train(
                transformed_train_path=path("transform", "transformed_train"),
                transformed_eval_path=path("transform", "transformed_eval"),
                transform_dir=path("transform", "transform_graph"),
                candidates=c.candidates,
                max_trials=c.max_trials,
                max_seconds=c.max_seconds,
                cv_folds=c.cv_folds,
                search_sample_rows=c.search_sample_rows,
                seed=c.seed,
                model_dir=model_dir,
            )
        with stage("evaluate"):
            from components.evaluate.core import evaluate

            evaluated = evaluate(
                model_dir=model_dir,
                test_path=splits["test"],
                thresholds=c.thresholds,
                baseline_model_uri=c.baseline_model_uri,
                baseline_tolerance=c.baseline_tolerance,
                report_path=path("evaluate", "report"),
            )
        outcome = {
            "blessed": evaluated.blessed,
            "test_metrics": evaluated.metrics,
            "model": trained.model_metadata["estimator"],
            "params": trained.best.params,
            "trials": len(trained.trials),
        }
        if evaluated.blessed:
            with stage("deploy"):
                from components.deploy.core import deploy

                published = deploy(
                    model_dir=model_dir,
                    deploy_target=c.deploy_target,
                    model_name=c.model_name,
                    model_repository=c.model_repository,
                    source_uri=model_dir,
                )
            outcome["deployed_version"] = published.version
    except Exception as exc:
        failed = next((s for s in STAGES if s not in stages), "?")
        return {"ok": False, "error": f"{failed}: {type(exc).__name__}: {exc}", "stages": stages}
    return {"ok": True, "stages": stages, "outcome": outcome}


def kfp_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The whole pipeline through kfp.local (each task a child process of this one)."""
    from components.config import TabularConfig
    from pipelines.local_run import failed_stage, newest_run, run_pipeline, task_outputs

    config = TabularConfig(**spec["config"])
    started = time.time()
    try:
        run_dir = run_pipeline(config, spec["pipeline_root"])
    except Exception as exc:
        stage = failed_stage(newest_run(spec["pipeline_root"], since=started))
        return {"ok": False, "error": f"{stage}: {type(exc).__name__}: {exc}"}
    out = task_outputs(run_dir)
    outcome: dict[str, Any] = {"run_dir": str(run_dir)}
    if "evaluate" in out:
        metrics = dict(out["evaluate"]["artifacts"]["metrics"]["metadata"])
        metrics.pop("blessed", None)
        outcome["blessed"] = bool(out["evaluate"]["parameters"]["Output"])
        outcome["test_metrics"] = metrics
    if "train" in out:
        model = out["train"]["artifacts"]["model"]["metadata"]
        outcome["model"] = model["estimator"]
        outcome["params"] = model["params"]
        outcome["trials"] = int(out["train"]["artifacts"]["metrics"]["metadata"]["trials"])
    if "deploy" in out:
        outcome["deployed_version"] = int(out["deploy"]["parameters"]["version"])
    return {"ok": True, "outcome": outcome}


def worker_main(mode: str, spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = kfp_worker(spec) if mode == "kfp" else plain_worker(spec)
    Path(spec["result_path"]).write_text(json.dumps(result, indent=2, default=str))
    if not result["ok"]:
        print(f"[{mode}] FAILED: {result['error']}", file=sys.stderr, flush=True)
    return 0 if result["ok"] else 1


# ----------------------------------------------------------------------------------------- driver


def run_config(source: Path, model_repository: Path, max_trials: int) -> dict[str, Any]:
    """The TabularConfig fields of every run (both modes get exactly these)."""
    return {
        "source_uri": str(source),
        "target": TARGET,
        "task": "classification",
        "thresholds": {"accuracy": 0.6},
        "max_trials": max_trials,
        "max_seconds": 3600.0,  # generous: the trial budget decides, so the search is deterministic
        "search_sample_rows": 50_000,
        "model_name": "benchmark",
        "model_repository": str(model_repository),
    }


def benchmark_size(rows: int, index: int, args: argparse.Namespace) -> dict[str, Any]:
    base = OUT / f"rows-{rows}"
    shutil.rmtree(base, ignore_errors=True)
    source = OUT / "data" / f"synthetic-{rows}.parquet"
    began = time.perf_counter()
    data = generate_table(rows, source)
    data["generate_s"] = time.perf_counter() - began
    print(
        f"\n=== {rows:,} rows: {source.relative_to(REPO)} ({data['bytes'] / MIB:.1f} MiB, "
        f"{data['positive_share']:.1%} positive), generated in {data['generate_s']:.1f}s",
        flush=True,
    )
    attempts: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    orders = []
    for repeat in range(args.repeat):
        order = ["plain", "kfp"] if (index + repeat) % 2 == 0 else ["kfp", "plain"]
        orders.append(order)
        for mode in order:
            run_dir = base / f"{mode}-{repeat + 1}"
            run_dir.mkdir(parents=True, exist_ok=True)
            spec = {
                "config": run_config(source, run_dir / "model_repository", args.max_trials),
                "work_dir": str(run_dir / "artifacts"),
                "pipeline_root": str(run_dir / "pipeline_root"),
                "result_path": str(run_dir / "result.json"),
            }
            log = (run_dir / f"{mode}.log").relative_to(REPO)
            print(f"--- {mode} #{repeat + 1}: running (log: {log})", flush=True)
            run = run_worker(mode, spec, run_dir, args.interval, dict(args.env))
            attempts[mode].append(run)
            status = "ok" if run["ok"] else f"FAILED ({run['error'][:300]})"
            print(
                f"--- {mode} #{repeat + 1}: {status}, {run['total_s']:.1f}s wall, {run['cpu_s']:.1f}s CPU, "
                f"peak {run['peak_mib']:.0f} MiB; other processes used {run['others_cores']:.2f} cores",
                flush=True,
            )
            if not args.keep:
                for folder in ("artifacts", "pipeline_root"):
                    shutil.rmtree(run_dir / folder, ignore_errors=True)
    # the fastest successful repeat of each mode (the least disturbed by the rest of the machine)
    runs = {mode: min(tries, key=lambda r: (not r["ok"], r["total_s"])) for mode, tries in attempts.items()}
    return {
        "rows": rows,
        "data": data,
        "orders": orders,
        "runs": runs,
        "repeat_totals": {mode: [round(r["total_s"], 1) for r in tries] for mode, tries in attempts.items()},
        "errors": [
            f"{mode} #{i + 1}: {r['error']}"
            for mode, tries in attempts.items()
            for i, r in enumerate(tries)
            if not r["ok"]
        ],
    }


def machine_facts() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return {
        "cpu": cpu or platform.processor(),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gib": psutil.virtual_memory().total / 1024**3,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "load_average_at_start": os.getloadavg(),
    }


# ----------------------------------------------------------------------------------------- analysis


def _exponent(t1: float, t2: float, n1: int, n2: int) -> float:
    return math.log(t2 / t1) / math.log(n2 / n1) if t1 > 0 and t2 > 0 else float("nan")


def analyse(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Overhead ratios, scaling exponents and the target verdicts."""
    ok = {r["rows"]: r for r in results if all(r["runs"][m]["ok"] for m in MODES)}
    overhead = {
        rows: r["runs"]["kfp"]["total_s"] / r["runs"]["plain"]["total_s"] for rows, r in sorted(ok.items())
    }
    sizes = sorted(ok)
    scaling: list[dict[str, Any]] = []
    for n1, n2 in zip(sizes, sizes[1:], strict=False):
        step: dict[str, Any] = {"from": n1, "to": n2, "total": {}, "stages": {}, "peak": {}}
        for mode in MODES:
            a, b = ok[n1]["runs"][mode], ok[n2]["runs"][mode]
            step["total"][mode] = _exponent(a["total_s"], b["total_s"], n1, n2)
            step["peak"][mode] = _exponent(a["peak_mib"], b["peak_mib"], n1, n2)
            step["stages"][mode] = {
                s: _exponent(a["stages"][s]["wall_s"], b["stages"][s]["wall_s"], n1, n2)
                for s in STAGES
                if s in a["stages"] and s in b["stages"]
            }
        scaling.append(step)

    verdicts = []
    failed_sizes = [f"{r['rows']:,} rows, {error}" for r in results for error in r["errors"]]
    if failed_sizes:
        verdicts.append(
            {"target": "every run completes", "verdict": "FAIL", "detail": "; ".join(failed_sizes)}
        )
    by_rows = {r["rows"]: r for r in results}
    big = by_rows.get(1_000_000)
    if big is None:
        verdicts.append({"target": "1M rows end to end < 10 min", "verdict": "NOT MEASURED", "detail": ""})
        verdicts.append({"target": "1M rows peak RSS < 4 GiB", "verdict": "NOT MEASURED", "detail": ""})
    else:
        run = big["runs"]["kfp"]
        slowest = max(run["stages"].items(), key=lambda kv: kv[1]["wall_s"], default=(None, None))
        hungriest = max(run["stages"].items(), key=lambda kv: kv[1]["peak_mib"], default=(None, None))
        plain = big["runs"]["plain"]
        detail = f"kfp {run['total_s']:.0f}s (plain {plain['total_s']:.0f}s)"
        if slowest[0]:
            detail += f"; slowest stage {slowest[0]} {slowest[1]['wall_s']:.0f}s"
        verdicts.append(
            {
                "target": "1M rows end to end < 10 min",
                "verdict": "PASS" if run["ok"] and run["total_s"] < MAX_SECONDS_1M else "FAIL",
                "detail": detail,
            }
        )
        detail = f"kfp {run['peak_mib']:.0f} MiB overall, parent + task (plain {plain['peak_mib']:.0f} MiB)"
        if hungriest[0]:
            detail += f"; largest stage {hungriest[0]} {hungriest[1]['peak_mib']:.0f} MiB"
        verdicts.append(
            {
                "target": "1M rows peak RSS < 4 GiB",
                "verdict": "PASS"
                if run["ok"] and max(run["peak_mib"], plain["peak_mib"]) < MAX_PEAK_MIB_1M
                else "FAIL",
                "detail": detail,
            }
        )
    if scaling:
        worst = max(scaling, key=lambda s: max(s["total"].values()))
        exps = ", ".join(
            f"{s['from']:,}->{s['to']:,}: kfp k={s['total']['kfp']:.2f}, plain k={s['total']['plain']:.2f}"
            for s in scaling
        )
        superlinear = sorted(
            {
                f"{mode} {stage} (k={k:.2f}, {s['from']:,}->{s['to']:,})"
                for s in scaling
                for mode in MODES
                for stage, k in s["stages"][mode].items()
                if k > MAX_SCALING_EXPONENT
            }
        )
        detail = f"end-to-end time ~ rows^k: {exps}"
        if any(k < 0 for s in scaling for k in s["total"].values()):
            detail += " (k < 0: the smaller run took longer, i.e. it was disturbed)"
        if superlinear:
            detail += "; stages growing faster than linear: " + ", ".join(superlinear)
        verdicts.append(
            {
                "target": "cost grows no worse than linearly with rows",
                "verdict": "PASS" if max(worst["total"].values()) <= MAX_SCALING_EXPONENT else "FAIL",
                "detail": detail,
            }
        )
    else:
        verdicts.append(
            {"target": "cost grows no worse than linearly", "verdict": "NOT MEASURED", "detail": ""}
        )
    if 100_000 in overhead:
        ratio = overhead[100_000]
        r = ok[100_000]["runs"]
        verdicts.append(
            {
                "target": "KFP overhead at 100k rows <= 1.5x the plain script",
                "verdict": "PASS" if ratio <= MAX_OVERHEAD_100K else "FAIL",
                "detail": f"{ratio:.2f}x ({r['kfp']['total_s']:.1f}s vs {r['plain']['total_s']:.1f}s)",
            }
        )
    else:
        verdicts.append(
            {"target": "KFP overhead at 100k rows <= 1.5x", "verdict": "NOT MEASURED", "detail": ""}
        )
    return {"overhead": overhead, "scaling": scaling, "verdicts": verdicts}


# ----------------------------------------------------------------------------------------- reporting


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def stage_table(result: dict[str, Any]) -> list[str]:
    kfp, plain = result["runs"]["kfp"], result["runs"]["plain"]
    lines = [
        "| stage | kfp wall s | plain wall s | kfp / plain | kfp CPU s | plain CPU s "
        "| kfp peak RSS MiB | plain peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        a, b = kfp["stages"].get(stage), plain["stages"].get(stage)
        if not a and not b:
            continue
        ratio = a["wall_s"] / b["wall_s"] if a and b and b["wall_s"] > 0 else None
        lines.append(
            f"| {stage} | {_f(a and a['wall_s'])} | {_f(b and b['wall_s'])} | {_f(ratio, 2)} | "
            f"{_f(a and a['cpu_s'])} | {_f(b and b['cpu_s'])} | "
            f"{_f(a and a['peak_mib'], 0)} | {_f(b and b['peak_mib'], 0)} |"
        )

    def outside_cpu(run: dict[str, Any]) -> float:
        return run["cpu_s"] - sum(st["cpu_s"] for st in run["stages"].values())

    lines.append(
        f"| outside stages¹ | {_f(kfp.get('outside_s'))} | {_f(plain.get('outside_s'))} | | "
        f"{_f(outside_cpu(kfp))} | {_f(outside_cpu(plain))} | "
        f"{_f(kfp.get('outside_peak_mib'), 0)} | {_f(plain.get('outside_peak_mib'), 0)} |"
    )
    ratio = kfp["total_s"] / plain["total_s"] if plain["total_s"] else None
    lines.append(
        f"| **total** | **{_f(kfp['total_s'])}** | **{_f(plain['total_s'])}** | **{_f(ratio, 2)}** | "
        f"**{_f(kfp['cpu_s'])}** | **{_f(plain['cpu_s'])}** | "
        f"**{_f(kfp.get('peak_mib'), 0)}**² | **{_f(plain.get('peak_mib'), 0)}** |"
    )
    return lines


def noise_line(result: dict[str, Any]) -> str:
    runs = result["runs"]
    orders = ", ".join(" then ".join(o) for o in result["orders"])
    repeats = "; ".join(f"{m} {', '.join(map(str, result['repeat_totals'][m]))}" for m in MODES)
    return (
        f"Order: {orders}. Totals of every repeat (s), the fastest is shown: {repeats}. Other "
        f"processes on the machine used {runs['kfp']['others_cores']:.2f} cores on average during the kfp "
        f"run shown and {runs['plain']['others_cores']:.2f} during the plain run shown."
    )


def outcome_line(result: dict[str, Any]) -> str:
    parts = []
    for mode in MODES:
        run = result["runs"][mode]
        if not run["ok"]:
            parts.append(f"{mode}: FAILED ({run['error'][:400]})")
            continue
        o = run["outcome"]
        metrics = o.get("test_metrics", {})
        parts.append(
            f"{mode}: {o.get('model', '?')} after {o.get('trials', '?')} trials, test accuracy "
            f"{metrics.get('accuracy', float('nan')):.4f}, roc_auc {metrics.get('roc_auc', float('nan')):.4f}, "
            f"{'blessed, deployed version ' + str(o.get('deployed_version')) if o.get('blessed') else 'NOT blessed'}"
        )
    return "; ".join(parts) + f"; {same_model(result)}."


def same_model(result: dict[str, Any]) -> str:
    """Both modes must choose the same model and score it the same.

    (The model.joblib bytes differ between processes - pickle memoizes by object identity, e.g. of
    interned strings - so the artifacts' sha256 cannot be compared.)
    """
    outcomes = [result["runs"][m]["outcome"] for m in MODES if result["runs"][m]["ok"]]
    if len(outcomes) < 2:
        return "the models cannot be compared"
    keys = ("model", "params", "test_metrics")
    first = {k: json.dumps(outcomes[0].get(k), sort_keys=True) for k in keys}
    if all(json.dumps(o.get(k), sort_keys=True) == first[k] for o in outcomes for k in keys):
        return "both chose the same model and hyperparameters and score identically on the test split"
    return "the two modes produced DIFFERENT models or test metrics"


FINDINGS_MARK = "<!-- hand-written findings below: kept when the benchmark rewrites this file -->"


def render_markdown(
    results: list[dict[str, Any]], analysis: dict[str, Any], facts: dict[str, Any], meta: dict[str, Any]
) -> str:
    pk = facts["packages"]
    positive = ", ".join(f"{r['data']['positive_share']:.1%}" for r in results)
    out = [
        "# Pipeline benchmark",
        "",
        "The kfp-tabular pipeline (ingest -> validate (TFDV) -> transform -> train -> evaluate -> deploy) run "
        "through kfp.local (`SubprocessRunner(use_venv=False)`, every task a child process) versus the "
        "same six core calls as one plain Python script, on generated data. Produced by "
        "`benchmarks/pipeline_benchmark.py` (see `benchmarks/README.md`); the tables below are from one "
        "invocation on the machine described.",
        "",
        "## Setup",
        "",
        f"- Date: {meta['date']} UTC; the whole invocation took {meta['elapsed_min']:.1f} min.",
        f"- Command: `{meta['command']}`",
        f"- Machine: {facts['cpu']}, {facts['usable_cores']} usable cores ({facts['logical_cores']} logical), "
        f"{facts['ram_gib']:.1f} GiB RAM, {facts['platform']}. Shared with other work (load average at "
        f"start {', '.join(f'{x:.2f}' for x in facts['load_average_at_start'])}); each size section says "
        "how many cores other processes used during the runs shown.",
        f"- Python {facts['python']}; kfp {pk['kfp']}, tensorflow-data-validation "
        f"{pk['tensorflow-data-validation']} (tensorflow {pk['tensorflow']}, apache-beam {pk['apache-beam']}), "
        f"scikit-learn {pk['scikit-learn']}, xgboost-cpu {pk['xgboost-cpu']}, pandas {pk['pandas']}, "
        f"numpy {pk['numpy']}, pyarrow {pk['pyarrow']}, psutil {pk['psutil']}.",
        "- Data: a deterministic synthetic churn table (seeded numpy, Parquet): 12 numeric columns (scales "
        "1e-3..1e5, 5 with 2-15% missing values), 6 string categoricals (cardinality 3, 5, 8, 12, 25, 50; "
        "3 with 1-4% missing), 1 boolean, and a binary target `churned` drawn from a logistic model of "
        "9 features (one interaction); positive share per size: " + positive + ".",
        f"- Configuration (identical for both modes): task classification, thresholds `{{accuracy: 0.6}}`, "
        f"max_trials {meta['max_trials']}, max_seconds 3600 (so the trial budget decides and the search "
        "is deterministic), cv_folds 3, search_sample_rows 50000, all three candidate families (logistic "
        "regression, histogram gradient boosting, XGBoost), every other field at its default "
        "(eval_fraction 0.15, test_fraction 0.2, seed 42, inferred TFDV schema, drift bound 0.3, "
        "max_categories 30); a fresh local model repository per run."
        + (
            " Extra environment for both modes: "
            + ", ".join(f"`{k}={v}`" for k, v in meta["env"].items())
            + "."
            if meta["env"]
            else " No extra environment variables (library thread defaults)."
        ),
        "- (a) **kfp**: `pipelines.local_run.run_pipeline` in a fresh process. (b) **plain**: a fresh "
        "process calling `ingest`, `validate_splits`, `fit_transform`, `train`, `evaluate`, `deploy` "
        "with the arguments the component shells pass; each core is imported inside its stage, as the "
        "shells do. Totals are wall time from process launch to exit; CPU is user + system time of the "
        "process and its children (`wait4`).",
        f"- Order and repeats: {meta['repeat']} repeat(s) per mode and size, the order alternating (plain "
        "first at the 1st and 3rd size, kfp first at the 2nd; flipped on each repeat); the fastest "
        "repeat of each mode is shown.",
        f"- Measurement: the process tree is sampled every {meta['interval'] * 1000:.0f} ms (psutil + "
        "`/proc/<pid>/status`). A kfp stage is the task's processes, recognised by the "
        "`--function_to_execute <stage>` argument of the task's command line: wall from first to last "
        "sighting (± half an interval), peak = max(sampled RSS, kernel VmHWM) of the task's processes. "
        "A plain stage is timed around its core call; its peak is the process's VmHWM after resetting it "
        "(`/proc/self/clear_refs`) at stage start, so it includes whatever the process still holds from "
        "earlier stages (TensorFlow once imported, heap kept by the allocator).",
        "",
        "¹ kfp: the kfp.local runner process outside the tasks (interpreter start, importing kfp and the "
        "pipeline, compiling and orchestrating, gaps between tasks); its peak RSS is the runner's own. "
        "plain: interpreter start, initial imports and exit.",
        "",
        "² kfp total peak = max over samples of runner + task RSS, and at least a task's VmHWM plus the "
        "runner's RSS during that task.",
        "",
        "## Summary",
        "",
        "| rows | kfp total s | plain total s | overhead kfp / plain | kfp peak MiB | plain peak MiB | "
        "kfp µs per row | test accuracy (kfp / plain) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        a, b = r["runs"]["kfp"], r["runs"]["plain"]
        acc = " / ".join(
            _f(r["runs"][m]["outcome"].get("test_metrics", {}).get("accuracy"), 4)
            if r["runs"][m]["ok"]
            else "failed"
            for m in MODES
        )
        ratio = a["total_s"] / b["total_s"] if b["total_s"] else None
        out.append(
            f"| {r['rows']:,} | {_f(a['total_s'])} | {_f(b['total_s'])} | {_f(ratio, 2)} | "
            f"{_f(a.get('peak_mib'), 0)} | {_f(b.get('peak_mib'), 0)} | "
            f"{_f(1000 * a['total_s'] / (r['rows'] / 1000), 1)} | {acc} |"
        )
    out += ["", "## Targets", "", "| target | verdict | measured |", "|---|---|---|"]
    for v in analysis["verdicts"]:
        out.append(f"| {v['target']} | **{v['verdict']}** | {v['detail']} |")
    for r in results:
        out += ["", f"## {r['rows']:,} rows", ""]
        out += stage_table(r)
        out += ["", outcome_line(r), "", noise_line(r)]
    if analysis["scaling"]:
        out += [
            "",
            "## Scaling",
            "",
            "Exponent k of wall time ~ rows^k between consecutive sizes (1 = linear; < 1 = sub-linear, "
            "mostly fixed start-up costs; > 1 = worse than linear).",
            "",
            "| step | mode | total | " + " | ".join(STAGES) + " | peak RSS |",
            "|---|---|---:|" + "---:|" * len(STAGES) + "---:|",
        ]
        for s in analysis["scaling"]:
            for mode in MODES:
                cells = " | ".join(_f(s["stages"][mode].get(stage), 2) for stage in STAGES)
                out.append(
                    f"| {s['from']:,} -> {s['to']:,} | {mode} | {_f(s['total'][mode], 2)} | {cells} | "
                    f"{_f(s['peak'][mode], 2)} |"
                )
    return "\n".join(out) + "\n"


def write_report(path: Path, text: str) -> None:
    """Write the report, keeping any hand-written findings after ``FINDINGS_MARK`` in the old file."""
    kept = ""
    if path.exists():
        old = path.read_text()
        if FINDINGS_MARK in old:
            kept = old.split(FINDINGS_MARK, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n" + FINDINGS_MARK + (kept or "\n"))


def print_summary(results: list[dict[str, Any]], analysis: dict[str, Any]) -> None:
    for r in results:
        print(f"\n{r['rows']:,} rows")
        for line in stage_table(r):
            print("  " + line.replace("**", ""))
        print("  " + outcome_line(r))
        print("  " + noise_line(r))
    if analysis["scaling"]:
        print("\nscaling exponents k (time ~ rows^k):")
        for s in analysis["scaling"]:
            for mode in MODES:
                stages = ", ".join(f"{k} {v:.2f}" for k, v in s["stages"][mode].items())
                print(f"  {s['from']:,}->{s['to']:,} {mode}: total {s['total'][mode]:.2f} ({stages})")
    print("\ntargets:")
    for v in analysis["verdicts"]:
        print(f"  {v['verdict']:<12} {v['target']}: {v['detail']}")


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pipeline_benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 rows only")
    parser.add_argument("--out", help="write the Markdown report here (e.g. docs/benchmarks.md)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per mode and size; the fastest counts")
    parser.add_argument("--max-trials", type=int, default=6, help="search budget (default 6)")
    parser.add_argument("--interval", type=float, default=0.05, help="RSS sampling interval, s")
    parser.add_argument("--keep", action="store_true", help="keep the artifacts of every run")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=_env_pair,
        metavar="NAME=VALUE",
        help="environment variable for both modes' processes, e.g. OMP_NUM_THREADS=1 (repeatable)",
    )
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.spec)
    rows = [2_000] if args.quick else args.rows
    command = ".venv/bin/python -m benchmarks.pipeline_benchmark " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    facts = machine_facts()
    print(
        f"pipeline benchmark: rows {rows}, {facts['usable_cores']} cores, {facts['ram_gib']:.1f} GiB RAM, "
        f"load {facts['load_average_at_start'][0]:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    OUT.mkdir(parents=True, exist_ok=True)
    results = [benchmark_size(n, i, args) for i, n in enumerate(rows)]
    analysis = analyse(results)
    meta = {
        "date": date,
        "command": command,
        "elapsed_min": (time.perf_counter() - started) / 60,
        "interval": args.interval,
        "max_trials": args.max_trials,
        "repeat": args.repeat,
        "env": dict(args.env),
    }
    (OUT / "results.json").write_text(
        json.dumps({"meta": meta, "facts": facts, "results": results, "analysis": analysis}, indent=2)
    )
    print_summary(results, analysis)
    if args.out:
        write_report(Path(args.out), render_markdown(results, analysis, facts, meta))
        print(f"\nreport written to {args.out}")
    failed = any(r["errors"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
