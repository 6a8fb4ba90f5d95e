"""Send an example request to a running model server and print the answer (``make predict``).

    python -m components.serving.example_request                      # V1 and V2, 3 demo rows
    python -m components.serving.example_request --url http://127.0.0.1:8080 --model_name penguins-species --rows 5

The rows come from the demo data (Palmer penguins), with the model's features taken from the
server's V2 metadata, so the request always matches the model being served.
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx
import pandas as pd

from components.common.io import DEMO_DATASETS


def example_rows(features: list[dict], rows: int) -> list[dict]:
    df = pd.read_csv(DEMO_DATASETS["penguins"]).sample(n=rows, random_state=7)
    missing = [f["name"] for f in features if f["name"] not in df.columns]
    if missing:
        raise SystemExit(f"the served model takes features {missing} that the demo data does not have")
    names = [f["name"] for f in features]
    return df[names].astype(object).where(df[names].notna(), None).to_dict(orient="records")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--model_name", default="penguins-species")
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args(argv)
    base = f"{args.url}/v2/models/{args.model_name}"
    try:
        meta = httpx.get(base, timeout=10)
    except httpx.TransportError as exc:
        print(f"no model server at {args.url} ({exc}); start one with `make serve`", file=sys.stderr)
        return 1
    if meta.status_code != 200:
        print(f"{base}: HTTP {meta.status_code} {meta.text}", file=sys.stderr)
        return 1
    records = example_rows(meta.json()["inputs"], args.rows)

    v1_body = {"instances": records}
    print(f"POST {args.url}/v1/models/{args.model_name}:predict\n{json.dumps(v1_body, indent=1)}")
    v1 = httpx.post(f"{args.url}/v1/models/{args.model_name}:predict", json=v1_body, timeout=30)
    print(f"-> HTTP {v1.status_code}\n{json.dumps(v1.json(), indent=1)}\n")

    inputs = [
        {
            "name": f["name"],
            "datatype": f["datatype"],
            "shape": [len(records)],
            "data": [r[f["name"]] for r in records],
        }
        for f in meta.json()["inputs"]
    ]
    print(f"POST {base}/infer (V2, one input per feature)")
    v2 = httpx.post(f"{base}/infer", json={"inputs": inputs}, timeout=30)
    print(f"-> HTTP {v2.status_code}\n{json.dumps(v2.json(), indent=1)}")
    return 0 if v1.status_code == v2.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
