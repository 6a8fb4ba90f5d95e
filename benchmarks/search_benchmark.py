"""The model search on real tables: its time against its budget, and its test score against a default
histogram gradient boosting model fitted on the same rows, side by side in one invocation.

Tables: the ones that ship inside scikit-learn (iris, wine, breast cancer, digits: classification;
diabetes: regression) and the project's demo (Palmer penguins). Each goes through the product's own
ingest, transform and train cores (components/), as the pipeline runs them, with:

- ``default``: the configuration's defaults (12 trials; the trials budget decides);
- ``budget B``: ``max_seconds=B`` with an unbounded trials budget, so the time limit decides: the
  search's wall time over B is the figure (the issue's target: within 10%);
- ``hgb``: ``HistGradientBoosting*`` with scikit-learn's defaults on the same train rows, the reference.

Test metric: log loss (classification) or RMSE (regression) on the same test split; lower is better.

    .venv/bin/python -m benchmarks.search_benchmark                       # every table, budget 10 s
    .venv/bin/python -m benchmarks.search_benchmark --budgets 10 30 --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from components.common.io import DEMO_DATASETS
from components.config import TabularConfig

SECTION = "## Model search on real tables"


def tables() -> dict[str, tuple[pd.DataFrame, str, str]]:
    """name -> (table, target, task)."""
    from sklearn import datasets

    found = {}
    for name, loader, task in (
        ("iris", datasets.load_iris, "classification"),
        ("wine", datasets.load_wine, "classification"),
        ("breast_cancer", datasets.load_breast_cancer, "classification"),
        ("digits", datasets.load_digits, "classification"),
        ("diabetes", datasets.load_diabetes, "regression"),
    ):
        frame = loader(as_frame=True).frame
        target = frame.columns[-1]
        if task == "classification":
            frame[target] = "class_" + frame[target].astype(str)
        found[name] = (frame, target, task)
    found["penguins"] = (pd.read_csv(DEMO_DATASETS["penguins"]), "species", "classification")
    return found


def prepare(folder: Path, frame: pd.DataFrame, target: str, task: str) -> dict[str, str]:
    from components.ingest.core import ingest
    from components.transform.core import fit_transform

    defaults = TabularConfig(target=target, task=task)
    frame.to_csv(folder / "table.csv", index=False)
    paths = {k: str(folder / f"{k}.parquet") for k in ("train", "eval", "test", "t_train", "t_eval")}
    ingested = ingest(
        source_uri=str(folder / "table.csv"),
        file_format="auto",
        target=target,
        task=task,
        drop_columns=[],
        eval_fraction=defaults.eval_fraction,
        test_fraction=defaults.test_fraction,
        seed=defaults.seed,
        train_path=paths["train"],
        eval_path=paths["eval"],
        test_path=paths["test"],
    )
    fit_transform(
        train_path=paths["train"],
        eval_path=paths["eval"],
        target=ingested.target,
        task=task,
        max_categories=defaults.max_categories,
        transform_dir=str(folder / "transform"),
        transformed_train_path=paths["t_train"],
        transformed_eval_path=paths["t_eval"],
    )
    return {**paths, "transform": str(folder / "transform"), "target": ingested.target}


def test_loss(model_dir: str, paths: dict[str, str], task: str) -> float:
    from components.common.ensemble import loss
    from components.common.servable import ServableModel

    model = ServableModel.load(model_dir)
    test = pd.read_parquet(paths["test"])
    y = test[paths["target"]]
    if task == "classification":
        codes = np.array([list(model.classes).index(v) for v in y])
        return loss(task, codes, np.asarray(model.predict_proba(test), dtype=np.float64))
    return loss(task, y.to_numpy(dtype=np.float64), np.asarray(model.predict(test), dtype=np.float64))


def search(paths: dict[str, str], folder: Path, task: str, **budget) -> dict:
    from components.train.core import train

    defaults = TabularConfig(target="y", task=task)
    model_dir = folder / f"model-{len(list(folder.glob('model-*')))}"
    began = time.perf_counter()
    result = train(
        transformed_train_path=paths["t_train"],
        transformed_eval_path=paths["t_eval"],
        transform_dir=paths["transform"],
        candidates=[],
        max_trials=budget.get("max_trials", defaults.max_trials),
        max_seconds=budget.get("max_seconds", defaults.max_seconds),
        cv_folds=defaults.cv_folds,
        search_sample_rows=defaults.search_sample_rows,
        seed=defaults.seed,
        model_dir=str(model_dir),
    )
    return {
        "seconds": time.perf_counter() - began,
        "search_seconds": result.search_seconds,
        "trials": len(result.trials),
        "chosen": "ensemble" if result.ensemble else result.best.candidate,
        "test_loss": test_loss(str(model_dir), paths, task),
    }


def reference(paths: dict[str, str], folder: Path, task: str) -> dict:
    """Default HistGradientBoosting on the same transformed train rows, behind the same preprocessing."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline

    from components.common.servable import ServableModel
    from components.transform.core import TransformSpec, load_matrix, load_preprocessor

    spec = TransformSpec.load(paths["transform"])
    x, y, _ = load_matrix(paths["t_train"])
    began = time.perf_counter()
    estimator = (
        HistGradientBoostingClassifier if task == "classification" else HistGradientBoostingRegressor
    )(random_state=0).fit(x, y)
    seconds = time.perf_counter() - began
    pipeline = Pipeline([("preprocess", load_preprocessor(paths["transform"])), ("model", estimator)])
    model_dir = folder / "reference"
    ServableModel(
        pipeline=pipeline,
        metadata={
            "task": task,
            "target": spec.target,
            "features": spec.features,
            "classes": spec.classes,
            "model_inputs": spec.output_features,
        },
    ).save(model_dir)
    return {"seconds": seconds, "test_loss": test_loss(str(model_dir), paths, task)}


def render(rows: list[dict], budgets: list[float]) -> str:
    lines = [
        SECTION,
        "",
        f"`python -m benchmarks.search_benchmark --budgets {' '.join(f'{b:g}' for b in budgets)}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; this 2-core machine, shared). Test loss: log loss "
        "(classification) or RMSE (regression) on the same test split, lower is better; `hgb`: "
        "HistGradientBoosting with scikit-learn's defaults on the same train rows.",
        "",
        "| table | rows | default: s | default: trials | default: chosen | default: test loss | "
        + " | ".join(f"budget {b:g} s: wall/budget | budget {b:g} s: test loss" for b in budgets)
        + " | hgb: test loss |",
        "|---|---:|---:|---:|---|---:|" + "---:|---:|" * len(budgets) + "---:|",
    ]
    for row in rows:
        d = row["default"]
        cells = [
            row["table"],
            str(row["rows"]),
            f"{d['seconds']:.1f}",
            str(d["trials"]),
            d["chosen"],
            f"{d['test_loss']:.4f}",
        ]
        for b in budgets:
            r = row[f"budget {b:g}"]
            cells += [f"{r['search_seconds'] / b:.2f}", f"{r['test_loss']:.4f}"]
        cells.append(f"{row['hgb']['test_loss']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace the section (up to the next '## ' heading) or append it."""
    old = path.read_text() if path.exists() else ""
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        tail = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        path.write_text(head + text + ("\n" + tail if tail else ""))
    else:
        path.write_text(old.rstrip("\n") + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[10.0])
    parser.add_argument("--tables", nargs="*", help="a subset of the tables")
    parser.add_argument("--out", type=Path, help="write the table into this Markdown file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for name, (frame, target, task) in tables().items():
        if args.tables and name not in args.tables:
            continue
        folder = Path(tempfile.mkdtemp(prefix=f"search-{name}-"))
        try:
            paths = prepare(folder, frame, target, task)
            row = {"table": name, "rows": len(frame), "default": search(paths, folder, task)}
            for b in args.budgets:
                row[f"budget {b:g}"] = search(paths, folder, task, max_trials=100_000, max_seconds=b)
            row["hgb"] = reference(paths, folder, task)
            rows.append(row)
            print(json.dumps(row), flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    text = render(rows, args.budgets)
    print(text)
    if args.out:
        write_section(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
