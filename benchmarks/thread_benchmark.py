"""Thread set-ups for training and serving, idle and contended, side by side in one invocation.

The work that OpenMP's thread set-up decides (issue 17):

- ``hgb_cv``: a 3-fold cross-validation of ``HistGradientBoostingClassifier``, as the search runs it
  (``cross_val_score``, stratified folds, ``neg_log_loss``), on a 2,800-row, 40-feature, 9-class table;
- ``xgb_cv``: the same cross-validation of ``XGBClassifier`` (``tree_method="hist"``);
- ``serve``: the model server's threaded large-batch path (``components/serving/kernels.py``: batches
  above ``SMALL_BATCH`` rows): a histogram gradient boosting model (one OpenMP region per tree) and an
  XGBoost booster predicting 1,000-row batches, called from a worker thread as the server's thread pool
  does.

Each set-up runs in its own subprocess, because libgomp reads ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT``
once, when it is loaded; the child starts with ``OMP_DISPLAY_ENV=VERBOSE`` and the driver records the
wait policy and spin count libgomp actually took from its stderr. Two conditions: ``idle`` (nothing added
by the driver; other users of the machine are measured, not stopped) and ``contended`` (the driver starts
one CPU-burning process per CPU for the duration of the cell). Rounds interleave everything: each round
runs every set-up in both conditions (condition order alternating, set-up order rotating), so a slow
period of the shared machine hits all set-ups alike; ratios are taken within a round against ``default``
and the median over rounds is reported.

Run from the repository root::

    .venv/bin/python -m benchmarks.thread_benchmark --out docs/benchmarks.md
    .venv/bin/python -m benchmarks.thread_benchmark --rounds 1 --setups default threads1   # a quick look

Work files (data, the two serving models, ``results.json``) go to ``benchmarks/out/threads/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out" / "threads"
SECTION_BEGIN = "<!-- thread-benchmark:begin (written by benchmarks/thread_benchmark.py) -->"
SECTION_END = "<!-- thread-benchmark:end -->"
WORKLOADS = ("hgb_cv", "xgb_cv", "serve")
CONDITIONS = ("idle", "contended")
OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OMP_DISPLAY_ENV")

# The table and the models: sized so that one cell takes seconds, not minutes, on 2 cores.
ROWS, FEATURES, CLASSES, SEED = 2800, 40, 9, 0
HGB_PARAMS = {"max_iter": 30, "max_leaf_nodes": 31, "learning_rate": 0.1, "early_stopping": False}
XGB_PARAMS = {"n_estimators": 30, "max_depth": 6, "learning_rate": 0.1, "tree_method": "hist"}
SERVE_HGB_PARAMS = {**HGB_PARAMS, "max_iter": 100}  # 900 trees: 900 OpenMP regions per batch
SERVE_XGB_PARAMS = {**XGB_PARAMS, "n_estimators": 100}
SERVE_ROWS, SERVE_CALLS = 1000, 10


@dataclass(frozen=True)
class Setup:
    """A candidate: libgomp's environment, an explicit thread limit per fit (None: the libraries'
    default, all CPUs), and the folds run in parallel processes (``cross_val_score(n_jobs=...)``)."""

    env: dict[str, str]
    threads: int | None
    fold_jobs: int
    what: str
    product: bool = False  # the shipped code path (components.common.threads), whatever it chooses
    serve: bool = True


SETUPS: dict[str, Setup] = {
    "default": Setup(
        {}, None, 1, "libgomp's default wait policy (spin 300,000 pauses, then sleep), all CPUs"
    ),
    "passive": Setup(
        {"OMP_WAIT_POLICY": "PASSIVE"}, None, 1, "OMP_WAIT_POLICY=PASSIVE (sleep at once), all CPUs"
    ),
    "active": Setup(
        {"OMP_WAIT_POLICY": "ACTIVE"}, None, 1, "OMP_WAIT_POLICY=ACTIVE (spin without end), all CPUs"
    ),
    "spin10k": Setup(
        {"GOMP_SPINCOUNT": "10000"}, None, 1, "GOMP_SPINCOUNT=10000 (spin, then sleep), all CPUs"
    ),
    "spin1k": Setup({"GOMP_SPINCOUNT": "1000"}, None, 1, "GOMP_SPINCOUNT=1000, all CPUs"),
    "threads1": Setup({}, 1, 1, "one thread per fit and per prediction (threadpoolctl, XGBoost n_jobs=1)"),
    "folds2x1": Setup(
        {}, 1, 2, "folds in 2 processes (joblib/loky), one thread each; training only", serve=False
    ),
}


# ------------------------------------------------------------------------------------------------ child
def _cpu_seconds() -> float:
    """CPU seconds of this process, its reaped children and its live descendants (loky's workers)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def child(setup_name: str, workloads: list[str]) -> None:
    setup = SETUPS[setup_name] if setup_name != "product" else None
    # libgomp is loaded here, with the environment the driver gave this process.
    import numpy as np
    import sklearn.ensemble  # noqa: F401
    import xgboost  # noqa: F401

    saved = {k: os.environ.get(k) for k in OMP_VARS}
    import joblib
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from threadpoolctl import threadpool_info, threadpool_limits

    from components.serving.kernels import estimator_kernel

    for k, v in saved.items():  # importing `components` must not change what the set-up says
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    data = np.load(OUT / "table.npz")
    x, y = data["x"], data["y"]
    folds = StratifiedKFold(3, shuffle=True, random_state=SEED)
    _emit({"threadpools": [(i["prefix"], i["num_threads"]) for i in threadpool_info()]})

    def limited(threads: int | None):
        return threadpool_limits(threads) if threads else threadpool_limits(None)

    for workload in workloads:
        began_wall, began_cpu = time.perf_counter(), _cpu_seconds()
        if workload in ("hgb_cv", "xgb_cv") and setup is None:
            from components.train.core import search
            from components.train.search import CLASSIFIERS, Candidate

            name = "hist_gradient_boosting" if workload == "hgb_cv" else "xgboost"
            params = HGB_PARAMS if workload == "hgb_cv" else XGB_PARAMS
            fixed = {k: [v] for k, v in params.items() if k not in ("early_stopping", "tree_method")}
            search(
                x,
                y,
                task="classification",
                candidates=[Candidate(name, "", CLASSIFIERS[name].make, fixed)],
                max_trials=1,
                max_seconds=1e9,
                cv_folds=3,
                seed=SEED,
            )
        elif workload == "hgb_cv":
            from sklearn.ensemble import HistGradientBoostingClassifier

            est = HistGradientBoostingClassifier(random_state=SEED, **HGB_PARAMS)
            with limited(setup.threads):
                cross_val_score(est, x, y, scoring="neg_log_loss", cv=folds, n_jobs=setup.fold_jobs)
        elif workload == "xgb_cv":
            from xgboost import XGBClassifier

            est = XGBClassifier(random_state=SEED, n_jobs=setup.threads, **XGB_PARAMS)
            with limited(setup.threads):
                cross_val_score(est, x, y, scoring="neg_log_loss", cv=folds, n_jobs=setup.fold_jobs)
        elif workload == "serve":
            from concurrent.futures import ThreadPoolExecutor

            batch = x[:SERVE_ROWS]
            kernels = []
            if setup is None:
                n_threads = None  # the shipped default (components.common.threads)
            else:
                from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

                n_threads = setup.threads or _openmp_effective_n_threads()  # None: all CPUs, as scikit-learn
            for path in ("serve_hgb.joblib", "serve_xgb.joblib"):
                kernels.append(estimator_kernel(joblib.load(OUT / path), "classification", n_threads)[0])

            def predict_all(kernels: list, batch: np.ndarray) -> None:
                # in a worker thread, as the server's thread pool runs large batches
                with limited(setup.threads if setup is not None else None):
                    for _ in range(SERVE_CALLS):
                        for kernel in kernels:
                            kernel(batch)

            with ThreadPoolExecutor(1) as pool:
                pool.submit(predict_all, kernels, batch).result()
        _emit(
            {
                "workload": workload,
                "wall": time.perf_counter() - began_wall,
                "cpu": _cpu_seconds() - began_cpu,
            }
        )
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # reap loky's workers, so their CPU is counted


# ----------------------------------------------------------------------------------------------- driver
def _busy_jiffies() -> tuple[float, float]:
    """(busy, total) seconds of all CPUs from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def _proc_cpu(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (float(parts[11]) + float(parts[12])) / os.sysconf("SC_CLK_TCK")


def available_cpus() -> int:
    return len(os.sched_getaffinity(0))


@dataclass
class Burners:
    """One CPU-burning process per CPU (plain Python busy loops), started and stopped by this driver."""

    count: int
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        time.sleep(0.5)  # let them reach the loop

    def cpu(self) -> float:
        return sum(_proc_cpu(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def wait_for_quiet(max_cores: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until other processes use at most ``max_cores`` over one second."""
    began = time.perf_counter()
    while time.perf_counter() - began < max_wait:
        busy0, _ = _busy_jiffies()
        time.sleep(1.0)
        busy1, _ = _busy_jiffies()
        if busy1 - busy0 <= max_cores:
            break
    return time.perf_counter() - began


def run_cell(setup: str, condition: str, workload: str, burners: Burners, timeout: float) -> dict:
    workloads = [workload]
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS}
    if setup != "product":
        env.update(SETUPS[setup].env)
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    env["PYTHONPATH"] = str(REPO)
    if condition == "contended":
        burners.start()
    busy0, total0 = _busy_jiffies()
    burn0 = burners.cpu()
    began = time.perf_counter()
    stderr_file = OUT / "child-stderr.txt"
    with stderr_file.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.thread_benchmark",
                "--child",
                setup,
                "--workloads",
                *workloads,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,  # its own process group: a timeout kills loky's workers too
        )
    results: dict[str, Any] = {"setup": setup, "condition": condition, "workloads": {}}
    timed_out = False
    buffer = ""
    while True:
        left = timeout - (time.perf_counter() - began)
        if left <= 0:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            break
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            buffer += line
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - began
    busy1, total1 = _busy_jiffies()
    burned = burners.cpu() - burn0
    if condition == "contended":
        burners.stop()
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived its leader
    stderr = stderr_file.read_text()
    for line in buffer.splitlines():
        record = json.loads(line)
        if "workload" in record:
            results["workloads"][record["workload"]] = {"wall": record["wall"], "cpu": record["cpu"]}
        else:
            results.update(record)
    done = set(results["workloads"])
    if timed_out:
        running = next((w for w in workloads if w not in done), None)
        if running:
            results["workloads"][running] = {"censored": True}
    child_cpu = usage.ru_utime + usage.ru_stime
    results.update(
        {
            "elapsed": elapsed,
            "returncode": proc.returncode,
            "timed_out": timed_out,
            "child_cpu": child_cpu,
            "burner_cpu": burned,
            "other_cores": max(0.0, (busy1 - busy0) - child_cpu - burned) / elapsed,
            "libgomp": {
                k: v
                for k, v in re.findall(
                    r"^\s+(OMP_WAIT_POLICY|GOMP_SPINCOUNT|OMP_NUM_THREADS) = '([^']*)'", stderr, re.M
                )
            },
        }
    )
    if proc.returncode != 0 and not timed_out:
        results["error"] = stderr[-2000:]
    return results


def prepare() -> None:
    """The table and the two serving models, made once (one thread) and shared by every cell."""
    import joblib
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits
    from xgboost import XGBClassifier

    OUT.mkdir(parents=True, exist_ok=True)
    x, y = make_classification(
        n_samples=ROWS,
        n_features=FEATURES,
        n_informative=20,
        n_classes=CLASSES,
        n_clusters_per_class=1,
        random_state=SEED,
    )
    x = x.astype(np.float32)
    np.savez(OUT / "table.npz", x=x, y=y)
    with threadpool_limits(1):
        hgb = HistGradientBoostingClassifier(random_state=SEED, **SERVE_HGB_PARAMS).fit(x, y)
        xgb = XGBClassifier(random_state=SEED, n_jobs=1, **SERVE_XGB_PARAMS).fit(x, y)
    joblib.dump(hgb, OUT / "serve_hgb.joblib")
    joblib.dump(xgb, OUT / "serve_xgb.joblib")


# ----------------------------------------------------------------------------------------------- report
def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(cells: list[dict], setups: list[str], workloads: list[str]) -> dict:
    """Per (setup, condition, workload): median wall, CPU/wall, and the median over rounds of the ratio
    to ``default`` in the same round and condition (censored cells count as their time bound)."""
    by = {(c["round"], c["setup"], c["condition"], w): c for c in cells for w in c["workloads"]}
    rounds = sorted({c["round"] for c in cells})
    out: dict[str, Any] = {}
    for setup in setups:
        for condition in CONDITIONS:
            for w in workloads:
                walls, cpus, ratios, censored = [], [], [], 0
                for r in rounds:
                    cell = by.get((r, setup, condition, w))
                    if not cell or w not in cell["workloads"]:
                        continue
                    m = cell["workloads"][w]
                    wall = m.get("wall", cell["elapsed"])
                    censored += bool(m.get("censored"))
                    walls.append(wall)
                    if "cpu" in m:
                        cpus.append(m["cpu"] / m["wall"])
                    ref = by.get((r, "default", condition, w))
                    if ref and w in ref["workloads"]:
                        rm = ref["workloads"][w]
                        ratios.append(wall / rm.get("wall", ref["elapsed"]))
                if walls:
                    out[f"{setup}/{condition}/{w}"] = {
                        "wall_median": _median(walls),
                        "wall_min": min(walls),
                        "wall_max": max(walls),
                        "cores_used": _median(cpus),
                        "ratio_to_default": _median(ratios),
                        "ratios": ratios,
                        "censored": censored,
                        "n": len(walls),
                    }
    return out


def render(meta: dict, summary: dict, cells: list[dict], setups: list[str], workloads: list[str]) -> str:
    def fmt(key: str) -> str:
        s = summary.get(key)
        if not s:
            return "—"
        more = ">" if s["censored"] else ""
        ratio = f"{s['ratio_to_default']:.2f}x" if s["ratio_to_default"] is not None else "—"
        return f"{more}{s['wall_median']:.1f} s ({ratio})"

    lines = [
        SECTION_BEGIN,
        "## Thread set-ups (OpenMP) for training and serving",
        "",
        "How the OpenMP thread set-up changes the work it drives, idle and under contention, side by side in "
        "one invocation of `benchmarks/thread_benchmark.py` (issue 17).",
        "",
        "### Setup",
        "",
        f"- Date: {meta['date']} UTC; the invocation took {meta['elapsed_min']:.1f} min; command "
        f"`{meta['command']}`.",
        f"- Machine: {meta['cpus']} CPUs available to the process, {meta['platform']}; shared with other "
        f"work: CPU used by processes other than this benchmark's during the cells: median "
        f"{meta['other_cores_median']:.2f}, max {meta['other_cores_max']:.2f} cores (of {meta['cpus']}).",
        f"- Python {meta['python']}; scikit-learn {meta['packages']['scikit-learn']}, xgboost "
        f"{meta['packages']['xgboost-cpu']}, threadpoolctl {meta['packages']['threadpoolctl']}, joblib "
        f"{meta['packages']['joblib']}; libgomp as bundled in the scikit-learn and XGBoost wheels.",
        f"- Data: a synthetic {ROWS:,}-row, {FEATURES}-feature, {CLASSES}-class table (make_classification, "
        "float32). `hgb_cv`: 3-fold `cross_val_score` (stratified, `neg_log_loss`) of "
        f"HistGradientBoostingClassifier {HGB_PARAMS}; `xgb_cv`: the same of XGBClassifier {XGB_PARAMS}; "
        f"`serve`: {SERVE_CALLS} x (histogram gradient boosting, {SERVE_HGB_PARAMS['max_iter']} iterations = "
        f"{SERVE_HGB_PARAMS['max_iter'] * CLASSES} trees; XGBoost, {SERVE_XGB_PARAMS['n_estimators']} rounds) "
        f"through `components/serving/kernels.py` on a {SERVE_ROWS:,}-row batch, from a worker thread.",
        f"- Conditions: **idle** (nothing added; the other users above still ran) and **contended** "
        f"({meta['burners']} busy-loop processes started by the benchmark, one per CPU, for each cell).",
        f"- {meta['rounds']} rounds; each round runs every set-up in both conditions (condition order "
        "alternating, set-up order rotating), each set-up a fresh subprocess (libgomp reads its "
        f"environment when loaded; the spin count it took is checked from `OMP_DISPLAY_ENV`). A cell is "
        f"killed after {meta['cell_timeout']:.0f} s (shown as `>`).",
        "- Each entry: median wall time over rounds, and in brackets the median over rounds of the ratio "
        "to `default` in the same round and condition (below 1 is faster).",
        "",
        "| set-up | what | libgomp spin count | "
        + " | ".join(f"{w} idle" for w in workloads)
        + " | "
        + " | ".join(f"{w} contended" for w in workloads)
        + " |",
        "|---|---|---:|" + "---:|" * (2 * len(workloads)),
    ]
    for setup in setups:
        what = SETUPS[setup].what if setup in SETUPS else meta.get("product_what", "the shipped code path")
        spins = sorted({c["libgomp"].get("GOMP_SPINCOUNT", "?") for c in cells if c["setup"] == setup})
        row = [f"`{setup}`", what, "/".join(spins)]
        row += [fmt(f"{setup}/idle/{w}") for w in workloads]
        row += [fmt(f"{setup}/contended/{w}") for w in workloads]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Cores used (CPU seconds / wall seconds of the work, loky workers included), median over rounds:",
        "",
        "| set-up | " + " | ".join(f"{w} {c}" for c in CONDITIONS for w in workloads) + " |",
        "|---|" + "---:|" * (2 * len(workloads)),
    ]
    for setup in setups:
        vals = []
        for c in CONDITIONS:
            for w in workloads:
                s = summary.get(f"{setup}/{c}/{w}")
                vals.append(f"{s['cores_used']:.2f}" if s and s["cores_used"] is not None else "—")
        lines.append(f"| `{setup}` | " + " | ".join(vals) + " |")
    lines += [
        "",
        "Every ratio and time of every round is in `benchmarks/out/threads/results.json`.",
        SECTION_END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if SECTION_BEGIN in text and SECTION_END in text:
        head, rest = text.split(SECTION_BEGIN, 1)
        tail = rest.split(SECTION_END, 1)[1]
        path.write_text(head + section.rstrip("\n") + tail)
        return
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "\n" + section)


def _packages() -> dict[str, str]:
    names = ("scikit-learn", "xgboost-cpu", "threadpoolctl", "joblib", "numpy")
    return {n: importlib_metadata.version(n) for n in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--setups", nargs="+", default=[*SETUPS, "product"], choices=[*SETUPS, "product"])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--cell-timeout", type=float, default=150.0, help="seconds before a cell is killed")
    parser.add_argument(
        "--quiet-cores", type=float, default=0.5, help="start a cell once others use at most this"
    )
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="seconds to wait for that, at most")
    parser.add_argument(
        "--out", type=Path, help="write the section into this Markdown file (e.g. docs/benchmarks.md)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.workloads)
        return 0
    if "default" not in args.setups:
        args.setups.insert(0, "default")  # the reference of every ratio
    started = time.time()
    prepare()
    burners = Burners(available_cpus())
    cells: list[dict] = []
    for r in range(args.rounds):
        conditions = args.conditions if r % 2 == 0 else list(reversed(args.conditions))
        k = r % len(args.setups)
        order = args.setups[k:] + args.setups[:k]
        for condition in conditions:
            for setup in order:
                for workload in args.workloads:
                    if workload == "serve" and setup != "product" and not SETUPS[setup].serve:
                        continue
                    waited = wait_for_quiet(args.quiet_cores, args.quiet_wait)
                    cell = run_cell(setup, condition, workload, burners, args.cell_timeout)
                    cell.update(round=r, waited=waited)
                    cells.append(cell)
                    m = cell["workloads"].get(workload, {})
                    shown = (
                        "killed"
                        if m.get("censored")
                        else f"{m.get('wall', float('nan')):.1f}s "
                        + (f"{m['cpu'] / m['wall']:.2f} cores" if "cpu" in m else "")
                    )
                    print(
                        f"round {r + 1} {condition:9} {setup:9} {workload:6} "
                        f"spin={cell['libgomp'].get('GOMP_SPINCOUNT', '?'):>11} {shown:22} "
                        f"(others {cell['other_cores']:.2f} cores, waited {waited:.0f}s)"
                        + (" ERROR" if "error" in cell else ""),
                        flush=True,
                    )
                    if "error" in cell:
                        print(cell["error"], file=sys.stderr)
    others = [c["other_cores"] for c in cells]
    meta = {
        "date": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M"),
        "elapsed_min": (time.time() - started) / 60,
        "command": "python -m benchmarks.thread_benchmark "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "cpus": available_cpus(),
        "burners": burners.count,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": _packages(),
        "rounds": args.rounds,
        "cell_timeout": args.cell_timeout,
        "other_cores_median": statistics.median(others),
        "other_cores_max": max(others),
    }
    if "product" in args.setups:
        from components.common import threads

        meta["product_what"] = threads.DESCRIPTION
    summary = summarize(cells, args.setups, args.workloads)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "cells": cells}, indent=1)
    )
    section = render(meta, summary, cells, args.setups, args.workloads)
    print(section)
    if args.out:
        write_section(args.out, section)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
