"""A no-op KServe model: the ceiling KServe itself sets, for the serving benchmark.

    python -m benchmarks.noop_model --model_name penguins --model_dir model_repository/penguins/1 \
        --host 127.0.0.1 --http_port 8080

``NoopModel`` answers V1 and V2 requests with a precomputed answer of the same shape as the kfp-tabular
server's (a label and the class probabilities per row, the classes read from the artifact's
``metadata.json``) without computing anything: only the row count is read from the request. Its
``predict`` is a plain function, so KServe runs it on the event loop (no thread-pool hop). Everything
else - routing, body reading and JSON decoding, V2 request validation (pydantic), response encoding,
KServe's per-request logging - is KServe's own, with its defaults, exactly as for the real server, and it
runs on the same server set-up (``components.serving.server.make_server``, ``--event_loop`` as there).

With ``--v2_json`` (a benchmark experiment) its V2 answer is the encoded JSON body, as the kfp-tabular
server returns it (``TabularModel._v2_response``), sent with the same ``JsonResponseHeaders`` middleware:
the ceiling for a model that skips KServe's V2 response encoding.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kserve import InferRequest, InferResponse, Model
from kserve.protocol.infer_type import InferOutput

from components.serving.responses import v2_body, v2_output
from components.serving.server import JsonResponseHeaders, make_server, use_event_loop


class NoopModel(Model):
    def __init__(self, name: str, classes: list[str], v2_json: bool = False):
        super().__init__(name)
        self.v2_json = v2_json
        self.classes = [str(c) for c in classes]
        one = [1.0] + [0.0] * (len(self.classes) - 1)
        self._v1_row = {"label": self.classes[0], "probabilities": dict(zip(self.classes, one, strict=True))}
        self._one = one
        self._parameters = {"classes": json.dumps(self.classes)}
        self._v1: dict[int, dict] = {}
        self._v2: dict[int, tuple[list, list]] = {}
        self.ready = True

    def load(self) -> bool:
        self.ready = True
        return True

    def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None, *_: Any):
        if isinstance(payload, InferRequest):
            n = int(payload.inputs[0].shape[0])
            cached = self._v2.get(n)
            if cached is None:
                cached = self._v2[n] = ([self.classes[0]] * n, self._one * n)
            labels, probabilities = cached
            if self.v2_json:
                outputs = [
                    v2_output("label", [n], "BYTES", labels),
                    v2_output(
                        "probabilities", [n, len(self.classes)], "FP64", probabilities, self._parameters
                    ),
                ]
                return v2_body(self.name, payload.id or "", outputs)
            outputs = [
                InferOutput("label", [n], "BYTES", list(labels)),
                InferOutput(
                    "probabilities",
                    [n, len(self.classes)],
                    "FP64",
                    list(probabilities),
                    parameters=self._parameters,
                ),
            ]
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)
        if isinstance(payload, bytes | str):  # no JSON content type: count the rows anyway
            payload = json.loads(payload)
        n = len(payload.get("instances") or payload.get("inputs") or [])
        cached = self._v1.get(n)
        if cached is None:
            cached = self._v1[n] = {"predictions": [self._v1_row] * n}
        return cached


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model_name", default="model")
    parser.add_argument(
        "--model_dir", required=True, help="a kfp-tabular artifact (only its classes are read)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--event_loop", "--event-loop", dest="event_loop", default="auto")
    parser.add_argument("--v2_json", action="store_true", help="answer V2 with an encoded JSON body")
    args, _ = parser.parse_known_args(argv)  # KServe's own flags (e.g. --enable_latency_logging) pass through
    classes = json.loads((Path(args.model_dir) / "metadata.json").read_text())["classes"]

    use_event_loop(args.event_loop)
    if args.v2_json:
        from kserve.model_server import app

        app.add_middleware(JsonResponseHeaders)
    make_server(args.host, args.http_port).start([NoopModel(args.model_name, classes, args.v2_json)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
