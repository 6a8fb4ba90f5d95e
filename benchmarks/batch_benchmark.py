"""Batch prediction benchmark: ``components.batch_predict`` against the fitted scikit-learn pipeline.

For each row count it generates a deterministic table of 20 mixed feature columns (12 numeric with missing
values, 5 categorical, a yes/no column, a date and an integer count) plus a binary target, as Parquet files
of 1M rows each (row groups of 128k rows). Two models are trained once by the product's own stages
(ingest -> validate -> transform -> train) on a 20k-row sample: logistic regression (linear) and histogram
gradient boosting (boosted). Then, each in a fresh process started by this driver:

(a) ``batch``: ``components.batch_predict.core.predict`` end to end: model load and checks, the TFDV schema
    check, reading, typing, scoring with the fast kernels and writing the output Parquet (``--batch-rows``);
(b) ``sklearn``: the same Parquet read in record batches of the same size, each typed for the model
    (``ServableModel.frame``) and scored with the fitted pipeline's ``predict_proba``; nothing written.

Peak RSS is each worker's ``VmHWM`` (``/proc/self/status``) at its end.

Reported: wall time and rows/s end to end, peak RSS, the seconds spent scoring (a: typing + kernels; b:
``predict_proba`` alone, its reading and framing excluded), and the ratio of the two.

    .venv/bin/python -m benchmarks.batch_benchmark --rows 1000000 10000000 --out docs/benchmarks.md

Work files go to ``benchmarks/out/batch/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out" / "batch"
FILE_ROWS = 1_000_000
ROW_GROUP = 131_072
TRAIN_ROWS = 20_000
MODELS = {"linear": "logistic_regression", "boosted": "hist_gradient_boosting"}
SECTION_BEGIN = "<!-- batch-benchmark:begin (written by benchmarks/batch_benchmark.py) -->"
SECTION_END = "<!-- batch-benchmark:end -->"


# ------------------------------------------------------------------------------------------ data


def chunk(rows: int, seed: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {}
    for i in range(12):
        values = rng.normal(loc=i, scale=1 + i, size=rows)
        values[rng.random(rows) < 0.02] = np.nan
        data[f"num_{i}"] = values
    pools = [4, 8, 12, 20, 30]
    for i, size in enumerate(pools):
        values = rng.choice([f"c{i}_{k}" for k in range(size)], size=rows).astype(object)
        values[rng.random(rows) < 0.01] = None
        data[f"cat_{i}"] = values
    data["member"] = rng.choice(["yes", "no"], size=rows)
    day = np.datetime64("2023-01-01") + rng.integers(0, 730, rows).astype("timedelta64[D]")
    data["signup_date"] = np.datetime_as_string(day, unit="D")
    data["visits"] = rng.poisson(3, rows)
    df = pd.DataFrame(data)
    signal = (
        0.4 * np.nan_to_num(df["num_0"])
        - 0.2 * np.nan_to_num(df["num_3"]) / 4
        + (df["cat_1"].isin(["c1_0", "c1_3"])) * 1.0
        + (df["member"] == "yes") * 0.7
        + 0.2 * df["visits"]
        + rng.normal(scale=1.0, size=rows)
    )
    df["label"] = np.where(signal > np.median(signal), "yes", "no")
    return df


def make_data(rows: int) -> Path:
    """``rows`` rows in Parquet files of FILE_ROWS (generated chunk by chunk: bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = OUT / f"data-{rows}"
    if (folder / "_DONE").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for index, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        table = pa.Table.from_pandas(chunk(n, seed=index), preserve_index=False)
        pq.write_table(table, folder / f"part-{index:03d}.parquet", row_group_size=ROW_GROUP)
    (folder / "_DONE").write_text("")
    return folder


def train_models() -> dict[str, Path]:
    """Both models by the product's stages on a TRAIN_ROWS sample (cached in benchmarks/out/batch)."""
    models = {}
    for kind, candidate in MODELS.items():
        tmp = OUT / f"model-{kind}"
        if (tmp / "model" / "metadata.json").exists():
            models[kind] = tmp / "model"
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        source = tmp / "train.parquet"
        chunk(TRAIN_ROWS, seed=999).to_parquet(source, index=False)
        from components.ingest.core import ingest
        from components.train.core import train
        from components.transform.core import fit_transform
        from components.validate.core import validate_splits

        paths = {name: str(tmp / f"{name}.parquet") for name in ("train", "eval", "test")}
        ingest(
            source_uri=str(source),
            file_format="auto",
            target="label",
            task="classification",
            drop_columns=[],
            eval_fraction=0.15,
            test_fraction=0.2,
            seed=42,
            train_path=paths["train"],
            eval_path=paths["eval"],
            test_path=paths["test"],
        )
        validate_splits(
            paths,
            target="label",
            statistics_dir=str(tmp / "statistics"),
            schema_path=str(tmp / "schema.pbtxt"),
            html_path=str(tmp / "statistics.html"),
            report_path=str(tmp / "report.md"),
        )
        fit_transform(
            train_path=paths["train"],
            eval_path=paths["eval"],
            target="label",
            task="classification",
            max_categories=30,
            transform_dir=str(tmp / "transform"),
            transformed_train_path=str(tmp / "t_train.parquet"),
            transformed_eval_path=str(tmp / "t_eval.parquet"),
        )
        train(
            transformed_train_path=str(tmp / "t_train.parquet"),
            transformed_eval_path=str(tmp / "t_eval.parquet"),
            transform_dir=str(tmp / "transform"),
            model_dir=str(tmp / "model"),
            candidates=[candidate],
            max_trials=1,
            max_seconds=120,
            cv_folds=2,
            search_sample_rows=TRAIN_ROWS,
            seed=42,
            train_stats_path=str(tmp / "statistics" / "train.pb"),
            schema_path=str(tmp / "schema.pbtxt"),
        )
        models[kind] = tmp / "model"
    return models


# ------------------------------------------------------------------------------------------ workers


def worker_batch(model: str, data: str, batch_rows: int) -> dict:
    from components.batch_predict.core import predict

    out = OUT / "scored.parquet"
    started = time.perf_counter()
    result = predict(model_dir=model, input_uri=data, output_uri=str(out), batch_rows=batch_rows)
    seconds = time.perf_counter() - started
    size = out.stat().st_size
    out.unlink()
    return {
        "rows": result.rows_scored,
        "seconds": seconds,
        "scoring_seconds": result.seconds_scoring,
        "output_mib": size / 2**20,
        "warnings": result.warnings,
    }


def worker_sklearn(model: str, data: str, batch_rows: int) -> dict:
    import numpy as np
    import pyarrow.dataset as ds

    from components.common.servable import ServableModel
    from components.common.threads import fit_threads

    servable = ServableModel.load(model)
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    rows, scoring, checksum = 0, 0.0, 0.0
    files = sorted(str(p) for p in Path(data).glob("*.parquet"))
    with threadpool_limits(fit_threads()):  # the product's thread set-up (docs/benchmarks.md, threads)
        for batch in ds.dataset(files, format="parquet").to_batches(batch_size=batch_rows):
            frame = servable.frame(batch.to_pandas())
            clock = time.perf_counter()
            proba = servable.pipeline.predict_proba(frame)
            scoring += time.perf_counter() - clock
            rows += len(frame)
            checksum += float(np.sum(proba[:, 0]))
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "scoring_seconds": scoring,
        "checksum": checksum,
    }


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM: of this program image only; ``ru_maxrss`` of a child
    would include the driver's size at the fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_worker(mode: str, model: Path, data: Path, batch_rows: int) -> dict:
    """One measurement in a fresh process (its peak RSS: VmHWM, read by the worker at its end)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.batch_benchmark",
            "--worker",
            mode,
            "--model",
            str(model),
            "--data",
            str(data),
            "--batch-rows",
            str(batch_rows),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    out = proc.stdout.read()
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} worker failed ({proc.returncode}): {out[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


# ------------------------------------------------------------------------------------------ report


def report(results: list[dict], args, started: datetime, seconds: float) -> str:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import sklearn

    lines = [
        SECTION_BEGIN,
        "## Batch prediction (issue 15)",
        "",
        "`components.batch_predict` end to end against the fitted scikit-learn pipeline's `predict_proba` on the "
        "same rows in batches of the same size, side by side in one invocation of `benchmarks/batch_benchmark.py`.",
        "",
        "### Setup",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; the last invocation took {seconds / 60:.1f} min. Invocations "
        "(each row of the table names its own): "
        + "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "") for r in results))
        + ".",
        f"- Machine: {os.cpu_count()} CPUs, {platform.platform()}; shared with other work (other worktrees' "
        "tests and builds ran meanwhile).",
        f"- Python {platform.python_version()}; scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
        f"pandas {pd.__version__}, pyarrow {pa.__version__}.",
        f"- Data: 20 feature columns (12 numeric with 2% missing, 5 categorical of 4-30 values with 1% missing, "
        f"a yes/no column, a date as text, an integer count) + a binary target; Parquet files of {FILE_ROWS:,} rows, "
        f"row groups of {ROW_GROUP:,}. Models trained by the product's stages on a {TRAIN_ROWS:,}-row sample: "
        "logistic regression (linear) and histogram gradient boosting (boosted).",
        f"- Batch size {args.batch_rows:,} rows for both. `batch`: model load and integrity check, TFDV schema "
        "check of the first 10k rows, reading, typing (as training), fast kernels, writing the output Parquet; a "
        "fresh process. `sklearn`: reading the same batches, `ServableModel.frame`, `pipeline.predict_proba` "
        "(one OpenMP thread, as the product); nothing written; a fresh process. Peak RSS: the process's "
        "`VmHWM`.",
        "- Scoring seconds: `batch` = typing + one-hot + kernels (reading and writing excluded); `sklearn` = "
        "`predict_proba` alone (reading and framing excluded). Speed-up = sklearn scoring / batch scoring.",
        "",
        "| rows | model | started | batch end to end | batch rows/s | batch peak RSS | batch scoring | sklearn end to end "
        "| sklearn peak RSS | sklearn predict_proba | speed-up (scoring) | speed-up (end to end) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        b, s = r["batch"], r["sklearn"]
        lines.append(
            f"| {r['rows']:,} | {r['model']} | {r.get('date', '')} | {b['seconds']:.1f} s | {b['rows'] / b['seconds']:,.0f} | "
            f"{b['peak_rss_mib']:,.0f} MiB | {b['scoring_seconds']:.1f} s | {s['seconds']:.1f} s | "
            f"{s['peak_rss_mib']:,.0f} MiB | {s['scoring_seconds']:.1f} s | "
            f"{s['scoring_seconds'] / b['scoring_seconds']:.2f}x | {s['seconds'] / b['seconds']:.2f}x |"
        )
    lines += ["", "Every figure is in `benchmarks/out/batch/results.json`.", SECTION_END]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if SECTION_BEGIN in text and SECTION_END in text:
        before = text.split(SECTION_BEGIN)[0]
        after = text.split(SECTION_END, 1)[1]
        text = before + section.rstrip("\n") + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--out", help="write the report section into this Markdown file")
    parser.add_argument(
        "--append", action="store_true", help="keep the other sizes/models of results.json in the report"
    )
    parser.add_argument("--worker", choices=("batch", "sklearn"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        work = worker_batch if args.worker == "batch" else worker_sklearn
        print(json.dumps({**work(args.model, args.data, args.batch_rows), "peak_rss_mib": peak_rss_mib()}))
        return 0
    started_at, started = datetime.now(UTC), time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    models = train_models()
    earlier = (
        json.loads((OUT / "results.json").read_text())
        if args.append and (OUT / "results.json").exists()
        else []
    )
    command = f"python -m benchmarks.batch_benchmark {' '.join(sys.argv[1:])}"
    results = []
    for rows in args.rows:
        data = make_data(rows)
        print(f"data: {rows:,} rows in {data}", flush=True)
        for kind in args.models:
            entry = {
                "rows": rows,
                "model": kind,
                "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
                "command": command,
            }
            for mode in ("batch", "sklearn"):
                entry[mode] = run_worker(mode, models[kind], data, args.batch_rows)
                print(f"{rows:,} {kind} {mode}: {json.dumps(entry[mode])}", flush=True)
            results.append(entry)
            kept = [
                e
                for e in earlier
                if (e["rows"], e["model"]) not in {(r["rows"], r["model"]) for r in results}
            ]
            (OUT / "results.json").write_text(json.dumps(kept + results, indent=2))
    results = sorted(kept + results, key=lambda e: (e["rows"], e["model"] != "linear"))
    section = report(results, args, started_at, time.perf_counter() - started)
    print(section)
    if args.out:
        write_section(Path(args.out), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
