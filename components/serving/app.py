"""KServe's REST application with this server's rules: what a client may do, and what it is told.

- No client can load or unload the model: KServe's model repository extension (``/v2/repository/...``)
  is refused (403). Liveness fails once the server can no longer serve a model it has served (the
  kubelet then restarts it); server readiness is the models' readiness, as the V2 protocol defines it.
- A request the server cannot answer gets a 4xx naming the problem, and one WARNING line in the log.
  Only a server fault is a 500: its body says so without exception text, and the log has its traceback.
- V2 bodies are read as Triton reads them: JSON unless ``inference-header-content-length`` is present
  (clients such as tritonclient send JSON with no content type), the binary data extension otherwise,
  checked before KServe decodes it (``binary.py``).
- The version routes (``/v2/models/<name>/versions/<v>/...``, ``?model_version=``) answer for the
  version the model serves and 404 for others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import (
    InferenceError,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerNotLive,
    ServerNotReady,
    UnsupportedProtocol,
)
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from components.common.logs import get_logger
from components.serving.binary import check_binary_request
from components.serving.requests import RequestError

log = get_logger("serving")
SERVER_FAULT = "internal server error: the request could not be answered (the server log has the details)"


class RepositoryDisabled(Exception):
    """A client asked to load or unload a model: this server serves the one model it was started with."""

    def __str__(self) -> str:
        return (
            "the model repository extension is disabled on this server: its model cannot be loaded or "
            "unloaded over HTTP (deploy another version instead)"
        )


class RefusedRepository(ModelRepositoryExtension):
    """KServe's model repository extension, turned off: ``load`` and ``unload`` are refused (HTTP 403)."""

    async def load(self, model_name: str) -> None:
        raise RepositoryDisabled()

    async def unload(self, model_name: str) -> None:
        raise RepositoryDisabled()


class TabularDataPlane(DataPlane):
    """KServe's data plane with liveness and readiness that reflect the models, no repository extension
    advertised, the served version in the model metadata, and V2 bodies checked before KServe decodes them."""

    def __init__(self, model_registry):
        super().__init__(model_registry=model_registry)
        self.served: dict[str, object] = {}  # name -> the model object this server was started to serve

    def serve(self, model) -> None:
        self.served[model.name] = model

    async def live(self) -> dict[str, str]:  # KServe: always "alive"
        lost = [name for name, model in self.served.items() if not self._can_serve(name, model)]
        if lost:
            return {"status": f"cannot serve {', '.join(lost)}"}
        return {"status": "alive"}

    def _can_serve(self, name: str, model) -> bool:
        """Still registered, and ready unless it has never been loaded (still starting: not ready, but live)."""
        if self._model_registry.get_model(name) is not model:
            return False
        return bool(model.ready) or not getattr(model, "was_loaded", True)

    async def ready(self) -> bool:  # KServe: always True (V2: ready when all its models are ready)
        for name in self.served:
            if not await self._model_registry.is_model_ready(name):
                return False
        return await super().ready()

    def metadata(self) -> dict:
        # the binary data extension (Triton's name for it); no model repository extension
        return {**super().metadata(), "extensions": ["binary_tensor_data"]}

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        version = getattr(self.get_model_from_registry(model_name), "version", None)
        if version:
            metadata["versions"] = [version]
        return metadata

    def decode_inference_request(self, body, headers, model_name):
        if isinstance(body, bytes):
            try:
                check_binary_request(body, headers.get("inference-header-content-length"))
            except RequestError as exc:
                raise InvalidInput(str(exc)) from exc
        try:
            return super().decode_inference_request(body, headers, model_name)
        except InvalidInput:
            raise
        except Exception as exc:  # whatever else KServe's decoder trips on is the request's doing
            log.warning("KServe could not decode a V2 request: %s: %s", type(exc).__name__, exc)
            raise InvalidInput(
                f"the request is not a V2 inference request this server can read ({type(exc).__name__}: {exc})"
            ) from None


# --- errors: 4xx name the problem (one WARNING line); 5xx say nothing about the exception ---------------


def _client_error(status: int) -> Callable:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        message = str(exc)
        log.warning("%d %s %s: %s", status, request.method, request.url.path, message)
        return JSONResponse(status_code=status, content={"error": message})

    return handler


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 echoes the request's values back (and fails with a 500 on one it cannot encode as
    JSON, such as -Infinity): this names the fields and what is wrong with them, without the values."""
    problems = []
    for error in exc.errors()[:5]:
        loc = [str(part) for part in error.get("loc", ()) if part != "body"]
        if loc[:1] == ["bytes"]:
            continue  # the other branch of KServe's Union[InferenceRequest, bytes] body
        where = ".".join(loc).removeprefix("InferenceRequest.")
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error", "")
            problems.append(f"the request body is not valid JSON ({detail} at character {where})")
        else:
            problems.append(f"{where or 'the body'}: {error.get('msg')}")
    message = "; ".join(problems) or "the request body is not a valid request"
    if not message.startswith("the request body is not valid JSON"):
        message = f"the request body is not a valid V2 inference request: {message}"
    log.warning("400 %s %s: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=400, content={"error": message})


async def _server_fault(request: Request, exc: Exception) -> JSONResponse:
    log.error("500 %s %s: server fault", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"error": SERVER_FAULT})


def install_error_handlers(app: FastAPI) -> None:
    """Replace KServe's handlers (each logs a full traceback at ERROR, 500s carry the exception text)."""
    for exc_class, status in (
        (InvalidInput, 400),
        (RepositoryDisabled, 403),
        (ModelNotFound, 404),
        (NotImplementedError, 501),
        (UnsupportedProtocol, 501),
        (ModelNotReady, 503),
        (ServerNotReady, 503),
        (ServerNotLive, 503),
    ):
        app.add_exception_handler(exc_class, _client_error(status))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InferenceError, _server_fault)
    app.add_exception_handler(Exception, _server_fault)


# --- ASGI middlewares --------------------------------------------------------------------------------------


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value
    return None


class V2BodyType:
    """A V2 infer body is the binary data extension if ``inference-header-content-length`` is present,
    JSON otherwise, whatever its ``Content-Type`` (Triton's rule). KServe (through FastAPI) reads a body
    without a JSON content type as bytes and then asks for that header: tritonclient's JSON requests, sent
    without a content type, and curl's default ``text/plain`` failed with a 400."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer"):
            binary = _header(scope, b"inference-header-content-length") is not None
            content_type = b"application/octet-stream" if binary else b"application/json"
            headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", content_type)]}
        return await self.app(scope, receive, send)


_VERSIONED = re.compile(r"^/v2/models/(?P<name>[^/]+)/versions/(?P<version>[^/]+)(?P<rest>/ready|/infer)?$")
_UNVERSIONED = re.compile(r"^/v2/models/(?P<name>[^/]+)(?P<rest>/ready|/infer)?$")


class ModelVersions:
    """``/v2/models/<name>/versions/<v>[/ready|/infer]`` and ``?model_version=<v>``: the version the model
    serves answers as the unversioned route does; any other version is a 404 naming the one served.
    KServe 0.21 answers 501 to both. ``version_of(name)``: the version a model serves (None: unknown model
    or not loaded yet; the unversioned route then answers 404 or 503)."""

    def __init__(self, app, version_of: Callable[[str], str | None]):
        self.app, self.version_of = app, version_of

    async def __call__(self, scope, receive, send):
        if (
            scope["type"] != "http"
            or not scope["path"].startswith("/v2/models/")
            or ("/versions/" not in scope["path"] and b"model_version" not in scope.get("query_string", b""))
        ):
            return await self.app(scope, receive, send)  # the usual request: nothing to parse
        params = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        asked = {value for key, value in params if key == "model_version" and value}
        versioned = _VERSIONED.match(scope["path"])
        if versioned:
            asked.add(versioned["version"])
        elif not asked:
            return await self.app(scope, receive, send)
        match = versioned or _UNVERSIONED.match(scope["path"])
        if match is None:
            return await self.app(scope, receive, send)
        name = match["name"]
        if len(asked) > 1:
            return await reply(send, 400, f"model {name!r}: more than one version asked for: {sorted(asked)}")
        serving = self.version_of(name)
        if asked and serving is not None and asked != {serving}:
            return await reply(
                send,
                404,
                f"model {name!r} has no version {asked.pop()!r} here: it serves version {serving!r}",
            )
        target = f"/v2/models/{name}{match['rest'] or ''}"
        query = urlencode([(k, v) for k, v in params if k != "model_version"]).encode()
        scope = {**scope, "path": target, "raw_path": target.encode(), "query_string": query}
        return await self.app(scope, receive, send)


async def reply(send, status: int, message: str, headers: tuple = ()) -> None:
    """A JSON error answer ``{"error": message}`` from an ASGI middleware (client errors: one WARNING line)."""
    if status < 500:
        log.warning("%d %s", status, message)
    content = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
