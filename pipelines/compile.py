"""Compile the pipeline to YAML for the KFP dashboard; ``--check`` fails if the committed YAML is stale.

python -m pipelines.compile            # writes pipelines/tabular_pipeline.yaml
python -m pipelines.compile --check    # exit 1 when the YAML differs from the code
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tempfile
from pathlib import Path

from kfp import compiler

from pipelines.tabular_pipeline import tabular_pipeline

PIPELINE_YAML = Path(__file__).resolve().parent / "tabular_pipeline.yaml"


def compile_to(path: str | Path) -> None:
    compiler.Compiler().compile(pipeline_func=tabular_pipeline, package_path=str(path))
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


def compiled_text() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compile_to(path)
        return path.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    text = compiled_text()
    if args.check:
        if not PIPELINE_YAML.exists() or PIPELINE_YAML.read_text() != text:
            print(f"{PIPELINE_YAML} is stale: run `make compile`", file=sys.stderr)
            return 1
        print(f"{PIPELINE_YAML} is up to date")
        return 0
    PIPELINE_YAML.write_text(text)
    print(f"wrote {PIPELINE_YAML}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
