"""Compile the pipelines to YAML for the KFP dashboard; ``--check`` fails if a committed YAML is stale.

python -m pipelines.compile            # writes pipelines/tabular_pipeline.yaml and batch_predict_pipeline.yaml
python -m pipelines.compile --check    # exit 1 when a YAML differs from the code
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
from pathlib import Path

from kfp import compiler

from pipelines.batch_predict_pipeline import batch_predict_pipeline
from pipelines.tabular_pipeline import tabular_pipeline

PIPELINE_YAML = Path(__file__).resolve().parent / "tabular_pipeline.yaml"
BATCH_PIPELINE_YAML = Path(__file__).resolve().parent / "batch_predict_pipeline.yaml"
PIPELINES = {PIPELINE_YAML: tabular_pipeline, BATCH_PIPELINE_YAML: batch_predict_pipeline}


def compile_to(path: str | Path, pipeline=tabular_pipeline) -> None:
    compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(path))
    path = Path(path)
    path.write_text(_stable_header(path.read_text()))


def _stable_header(text: str) -> str:
    """Sort the dict defaults kfp prints in the YAML's header comment.

    kfp renders them from a protobuf Struct, whose map order changes from process to process, so
    without this the same pipeline compiles to different bytes (the YAML body itself is stable).
    """

    def sort_default(match: re.Match) -> str:
        value = ast.literal_eval(match.group(2))
        return f"{match.group(1)}{dict(sorted(value.items()))!r}]"

    return re.sub(r"^(#\s+\w+: dict \[Default: )(\{.*\})\]$", sort_default, text, flags=re.MULTILINE)


def compiled_text(pipeline=tabular_pipeline) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compile_to(path, pipeline)
        return path.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    stale = 0
    for path, pipeline in PIPELINES.items():
        text = compiled_text(pipeline)
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is stale: run `make compile`", file=sys.stderr)
                stale = 1
            else:
                print(f"{path} is up to date")
            continue
        path.write_text(text)
        print(f"wrote {path}")
    return stale


if __name__ == "__main__":
    sys.exit(main())
