"""The kfp-tabular model server: ``python -m components.serving``.

    # in a KServe InferenceService (the storage initializer puts the artifact at /mnt/models)
    python -m components.serving --model_name penguins-species --model_dir /mnt/models
    # locally: the registry's champion, followed as it moves (deployments, rollbacks)
    python -m components.serving --model_name penguins-species --model_uri models:/penguins-species@champion \
        --tracking_uri sqlite:///$PWD/mlflow/mlflow.db --host 127.0.0.1

REST (KServe V1 and V2 / Open Inference Protocol) on ``--http_port`` (8080):
``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``, ``/v2/models/<name>`` (metadata),
``/v2/models/<name>/ready``, ``/v2/health/ready``, ``/v2/health/live``.

The model's integrity (sha256) and package versions are checked before it loads; if anything is off
the server does not start (exit status 2) and says why. With ``--wait_for_model S`` it starts
at once, answers liveness, reports the model not ready, and loads it when it appears (within S s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

from components.common.errors import KfpTabularError, ModelArtifactError
from components.common.logs import get_logger
from components.common.servable import METADATA_FILE
from components.serving.app import (
    ModelVersions,
    RefusedRepository,
    TabularDataPlane,
    V2BodyType,
    install_error_handlers,
    reply,
)

log = get_logger("serving")
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
EXIT_CANNOT_SERVE = 2
# Connection timeouts (README, "Serving"): the request head (line and headers) within 10 s, the whole
# body within 30 s (16 MiB at 0.5 MiB/s), an idle keep-alive connection closed after 15 s (KServe: 65 s). A
# proxy in front (Envoy, Knative's queue-proxy) must close its idle upstream connections sooner than that.
DEFAULT_HEAD_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_KEEP_ALIVE = 15


class BodyLimits:
    """ASGI middleware: a request body is read here, whole, before the app sees it (then replayed). Over
    ``max_bytes`` (declared or streamed): 413. Not all received within ``timeout`` seconds: 408, and the
    connection is closed (a slow client cannot hold a request open; uvicorn has no body timeout)."""

    def __init__(self, app, max_bytes: int, timeout: float = DEFAULT_BODY_TIMEOUT):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send, int(declared))
        deadline = asyncio.get_running_loop().time() + self.timeout
        chunks, size = [], 0
        while True:
            try:
                async with asyncio.timeout_at(deadline):  # no task per message, unlike wait_for
                    message = await receive()
            except TimeoutError:
                return await reply(
                    send,
                    408,
                    f"the request body was not received within {self.timeout:g} s "
                    f"({size} bytes arrived); the connection is closed",
                    headers=((b"connection", b"close"),),
                )
            if message["type"] != "http.request":
                return None  # the client went away
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._too_large(send, size)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send, size: int):
        await reply(send, 413, f"request body of {size} bytes is over the limit of {self.max_bytes} bytes")


def head_timeout_protocol(seconds: float):
    """uvicorn's HTTP protocol (httptools), closing a connection whose request line and headers are not
    all received within ``seconds`` of its opening or of the request's first byte. uvicorn times out only
    idle keep-alive connections: a connection that sends nothing, or its headers a byte at a time, was
    held forever."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeadTimeoutProtocol(HttpToolsProtocol):
        _head_timer = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_head_timer()

        def on_message_begin(self):
            super().on_message_begin()
            self._arm_head_timer()

        def on_headers_complete(self):
            self._cancel_head_timer()
            super().on_headers_complete()

        def connection_lost(self, exc):
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _arm_head_timer(self):
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

        def _cancel_head_timer(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self):
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutProtocol


class JsonResponseHeaders:
    """ASGI middleware: a V2 answer the model encoded itself gets the headers KServe's own would have.

    KServe's V2 endpoint sends the bytes a model returns as they are, with no content type (it drops the
    model's) and no length (uvicorn then uses chunked encoding). For ``/v2/models/<name>/infer``
    responses without a content type, this adds one and the length: ``application/json``, or
    ``application/octet-stream`` for a binary data extension answer (a JSON header followed by raw
    tensors, its header length in ``inference-header-content-length``).
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/infer"):
            return await self.app(scope, receive, send)
        held = None

        async def send_with_headers(message):
            nonlocal held
            if message["type"] == "http.response.start":
                if not any(key.lower() == b"content-type" for key, _ in message.get("headers") or ()):
                    held = message  # sent with the body, once its length is known
                    return None
            elif held is not None and message["type"] == "http.response.body":
                start, held = held, None
                headers = list(start.get("headers", ()))
                names = {key.lower() for key, _ in headers}
                binary = b"inference-header-content-length" in names
                headers.append(
                    (b"content-type", b"application/octet-stream" if binary else b"application/json")
                )
                if not message.get("more_body") and b"content-length" not in names:
                    headers.append((b"content-length", str(len(message.get("body", b""))).encode()))
                await send({**start, "headers": headers})
            return await send(message)

        return await self.app(scope, receive, send_with_headers)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m components.serving", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model_name", default=os.environ.get("MODEL_NAME", "model"), help="name in the URL paths"
    )
    parser.add_argument("--model_dir", default="/mnt/models", help="the model artifact directory")
    parser.add_argument(
        "--model_uri",
        help="serve a registry version instead of --model_dir: models:/<name>@champion (followed as it moves) "
        "or models:/<name>/<version>",
    )
    parser.add_argument(
        "--tracking_uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", ""),
        help="the MLflow registry of --model_uri",
    )
    parser.add_argument(
        "--follow_seconds",
        type=float,
        default=5.0,
        help="how often to look whether --model_uri moved (0: never)",
    )
    parser.add_argument(
        "--cache_dir", default="~/.cache/kfp-tabular/models", help="where registry versions are downloaded"
    )
    parser.add_argument("--http_port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (127.0.0.1 for local use)")
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument(
        "--request_head_timeout",
        type=float,
        default=DEFAULT_HEAD_TIMEOUT,
        help="seconds for a request's line and headers to arrive (then the connection is closed)",
    )
    parser.add_argument(
        "--request_body_timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        help="seconds for a request's whole body to arrive (then 408 and the connection is closed)",
    )
    parser.add_argument(
        "--timeout_keep_alive",
        "--timeout-keep-alive",
        dest="timeout_keep_alive",
        type=int,
        default=DEFAULT_KEEP_ALIVE,
        help="seconds an idle keep-alive connection is kept (KServe's flag; its default is 65)",
    )
    parser.add_argument(
        "--wait_for_model", type=float, default=0.0, help="seconds to wait for the model to appear"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="must be 1: scale with replicas (KServe's own flag)"
    )
    parser.add_argument(
        "--event_loop",
        "--event-loop",
        dest="event_loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="KServe's flag; auto (default) uses uvloop when it is installed",
    )
    args, _ = parser.parse_known_args(argv)  # KServe's own flags (e.g. --enable_grpc) pass through
    if args.workers != 1:
        # KServe's multi-process mode spawns workers and pickles the loaded model into them: the fast
        # path's kernels (closures over the fitted parameters) cannot be pickled, and the workers would
        # build a fresh app without this server's middlewares (body limit, V2 headers).
        parser.error(
            f"--workers {args.workers}: this server runs one worker process; scale out with more "
            "replicas (the InferenceService's minReplicas/maxReplicas, or more server processes)"
        )
    return args


def _model_present(args: argparse.Namespace) -> bool:
    return (Path(args.model_dir) / METADATA_FILE).is_file()


def use_event_loop(choice: str) -> str:
    """Apply KServe's ``--event_loop`` choice to the loop the server really runs on; returns its name.

    KServe 0.21 documents ``auto`` as "uvloop if available", but with one worker ``ModelServer.start``
    runs its servers with ``asyncio.run``, which ignores the choice (only uvicorn's multi-worker runner
    reads it). Setting the event loop policy makes the choice hold (the serving benchmark in
    docs/benchmarks.md compares both loops).
    """
    import asyncio

    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def make_server(
    host: str,
    http_port: int,
    head_timeout: float = DEFAULT_HEAD_TIMEOUT,
    keep_alive: int = DEFAULT_KEEP_ALIVE,
):
    """KServe's ``ModelServer`` (REST only, one worker process) bound to ``host``, its loop set-up done on
    the loop that runs, with this server's rules (``app.py``): no model repository extension, liveness
    and readiness that follow the model, its own error handlers; and connection timeouts."""
    from kserve import ModelServer
    from kserve.model_server import app

    class Server(ModelServer):
        def __init__(self):
            super().__init__(http_port=http_port, workers=1, enable_grpc=False, timeout_keep_alive=keep_alive)
            self.dataplane = TabularDataPlane(model_registry=self.registered_models)
            self.model_repository_extension = RefusedRepository(model_registry=self.registered_models)

        def register_model(self, model, name=None):
            super().register_model(model, name)
            self.dataplane.serve(model)

        def setup_event_loop(self):  # called after the REST server is built, before asyncio.run
            rest = self._rest_server
            if rest is not None:
                rest.config.host = host
                rest.config.http = head_timeout_protocol(head_timeout)
                create_application = rest.create_application

                def create_with_handlers():  # KServe registers its handlers there: ours replace them
                    create_application()
                    install_error_handlers(app)

                rest.create_application = create_with_handlers

        async def _serve(self):
            # KServe sets the exception handler and the thread pool on asyncio.get_event_loop() before
            # asyncio.run creates the loop that really runs: set them on the running loop instead.
            super().setup_event_loop()
            await super()._serve()

    return Server()


def add_middlewares(app, server, args: argparse.Namespace) -> None:
    """This server's ASGI middlewares, outermost last."""

    def version_of(name: str) -> str | None:
        return getattr(server.registered_models.get_model(name), "version", None)

    app.add_middleware(JsonResponseHeaders)
    app.add_middleware(V2BodyType)
    app.add_middleware(ModelVersions, version_of=version_of)
    app.add_middleware(BodyLimits, max_bytes=args.max_body_bytes, timeout=args.request_body_timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loop_name = use_event_loop(args.event_loop)
    from kserve.model_server import app

    from components.serving.model import TabularModel

    def load(model_dir: Path) -> TabularModel:
        model = TabularModel(args.model_name, model_dir)
        model.load()
        return model

    server = make_server(args.host, args.http_port, args.request_head_timeout, args.timeout_keep_alive)
    add_middlewares(app, server, args)
    if args.model_uri:
        return serve_registry(args, server, loop_name)
    if args.wait_for_model <= 0 or _model_present(args):
        try:
            model = load(Path(args.model_dir))
        except (KfpTabularError, OSError) as exc:
            print(f"kfp-tabular serving: cannot serve model {args.model_name!r}: {exc}", file=sys.stderr)
            return EXIT_CANNOT_SERVE
        log.info("serving %r on http://%s:%d (%s)", args.model_name, args.host, args.http_port, loop_name)
        server.start([model])
        return 0

    # Start now (liveness answers, the model reports not ready), load when the model appears.
    pending = TabularModel(args.model_name, args.model_dir)
    server.register_model(pending)

    def wait_and_load():
        deadline = time.monotonic() + args.wait_for_model
        while not _model_present(args):
            if time.monotonic() > deadline:
                log.error("no model appeared within %.0fs; stopping", args.wait_for_model)
                os._exit(EXIT_CANNOT_SERVE)
            time.sleep(0.2)
        try:
            pending.load()
        except (KfpTabularError, OSError, ModelArtifactError) as exc:
            log.error("cannot serve model %r: %s; stopping", args.model_name, exc)
            os._exit(EXIT_CANNOT_SERVE)

    threading.Thread(target=wait_and_load, name="model-loader", daemon=True).start()
    log.info(
        "waiting up to %.0fs for model %r; serving on http://%s:%d",
        args.wait_for_model,
        args.model_name,
        args.host,
        args.http_port,
    )
    server.start([])
    return 0


def serve_registry(args: argparse.Namespace, server, loop_name: str) -> int:
    """Serve ``--model_uri`` from the registry and follow it (a deployment or a rollback moves it)."""
    from components.serving.model import TabularModel, load_model_dir
    from components.serving.registry_source import RegistrySource

    source = RegistrySource(args.tracking_uri, args.model_uri, args.cache_dir)
    model = TabularModel(args.model_name, args.cache_dir)
    try:
        version = source.resolve()
        if version is None and args.wait_for_model <= 0:
            raise KfpTabularError(f"{args.model_uri} names no version yet (deploy a model first: make run)")
        if version is not None:
            model.swap(load_model_dir(source.fetch(version), version.version))
            model.ready = True
    except (KfpTabularError, OSError) as exc:
        print(f"kfp-tabular serving: cannot serve {args.model_uri}: {exc}", file=sys.stderr)
        return EXIT_CANNOT_SERVE
    if args.follow_seconds > 0:
        stop = threading.Event()
        every = args.follow_seconds if version is not None else min(args.follow_seconds, 1.0)
        threading.Thread(
            target=source.follow, args=(model, every, stop), name="registry-follower", daemon=True
        ).start()
    log.info(
        "serving %r (%s, version %s) on http://%s:%d (%s)",
        args.model_name,
        args.model_uri,
        version.version if version else "none yet",
        args.host,
        args.http_port,
        loop_name,
    )
    if model.ready:
        server.start([model])
    else:  # liveness answers meanwhile; readiness once the alias names a version
        server.register_model(model)
        server.start([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
