"""The TF Serving REST API over a loaded :class:`ModelRepository`, as one HTTP request handler.

Routes (as in TensorFlow Serving)::

    GET  /v1/models/{m}[/versions/{v}]            version status
    GET  /v1/models/{m}[/versions/{v}]/metadata   signature_def map
    POST /v1/models/{m}[/versions/{v}]:predict    {"instances": [...]} or {"inputs": {...}}
    GET  /openapi.json                            OpenAPI 3 description of the above
    GET  /monitoring/prometheus/metrics           Prometheus metrics (see modelops.serving.metrics)

Every client mistake is answered ``{"error": "..."}`` with a 4xx status and the server keeps going.
``/-/stats`` reports the engine's batching counters; ``POST /-/open-public`` (only on the private
admin port) makes the process start listening on its public port, used by the ``local`` target.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from modelops.serving.batching import InferenceEngine
from modelops.serving.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge, ServingError
from modelops.serving.http_server import JSON, HttpRequest, HttpResponse
from modelops.serving.metrics import CONTENT_TYPE, METRICS_PATH, ServingMetrics
from modelops.serving.openapi import openapi_document
from modelops.serving.predict_request import decode_predict_request
from modelops.serving.repository import ModelRepository, ModelVersion

log = logging.getLogger(__name__)

MODELS_PREFIX = "/v1/models/"
SIGNATURE_DEF_MAP_TYPE = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


@dataclass
class ServingSettings:
    max_batch_size: int = 1024
    max_body_bytes: int = 32 * 1024 * 1024
    # a request must arrive whole within this time of being seen incomplete (else 408, connection closed)
    request_timeout_s: float = 60.0


@dataclass
class AdminHooks:
    """What the private admin port may do; set by the server process, absent in plain ``serve``."""

    admin_port: int | None = None
    open_public: Callable[[], Awaitable[dict[str, Any]]] | None = None


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    try:
        body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        body = orjson.dumps(_plain(content))
    return HttpResponse(status, body, JSON, tuple((headers or {}).items()))


def error_response(error: ServingError) -> HttpResponse:
    headers = {"Allow": ", ".join(error.allowed)} if isinstance(error, MethodNotAllowed) else None
    return json_response({"error": error.message}, error.status, headers)


_API_OF_VERB = {"predict": "predict"}


class _Call:
    """What a /v1/models request turned out to address, for its metric labels."""

    __slots__ = ("api", "version")

    def __init__(self) -> None:
        self.api = "other"
        self.version = ""


class ServingApi:
    """Every route of the serving process, as one handler of :class:`HttpRequest` (see
    :mod:`modelops.serving.http_server`). Unknown paths and methods get JSON 404/405 answers."""

    def __init__(
        self,
        repository: ModelRepository,
        engine: InferenceEngine,
        settings: ServingSettings | None = None,
        admin: AdminHooks | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.engine = engine
        self.settings = settings or ServingSettings()
        self.admin = admin or AdminHooks()
        self.metrics = metrics or ServingMetrics(repository)
        self._openapi_body = orjson.dumps(openapi_document(repository, self.settings.max_batch_size))
        # path -> (methods, handler); GET routes answer HEAD too
        self._routes: dict[str, tuple[tuple[str, ...], Callable[[HttpRequest], Awaitable[HttpResponse]]]] = {
            "/openapi.json": (("GET", "HEAD"), self._openapi),
            METRICS_PATH: (("GET", "HEAD"), self._prometheus),
            "/-/stats": (("GET", "HEAD"), self._stats),
            "/-/open-public": (("POST",), self._open_public),
        }

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(MODELS_PREFIX):
            return await self._models(request)
        route = self._routes.get(request.path)
        if route is None:
            return json_response(
                {"error": f"no route for {request.path}: the API lives under /v1/models/{{model_name}}"}, 404
            )
        methods, handler = route
        if request.method not in methods:
            return json_response(
                {"error": f"method {request.method} not allowed on {request.path}"},
                405,
                {"Allow": ", ".join(methods)},
            )
        return await handler(request)

    def unexpected(self, request: HttpRequest, exc: BaseException) -> HttpResponse:
        """The answer to a request whose handling raised what no route expected."""
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
        return json_response({"error": f"internal server error: {type(exc).__name__}: {exc}"}, 500)

    async def _models(self, request: HttpRequest) -> HttpResponse:
        """The TF Serving API: the hot path, so no per-request objects beyond the call's own."""
        started = time.perf_counter()
        call = _Call()
        try:
            response = await _dispatch(request, self.repository, self.engine, self.settings, call)
        except ServingError as error:
            response = error_response(error)
        except Exception as exc:
            response = self.unexpected(request, exc)
        self.metrics.observe_request(call.version, call.api, response.status, time.perf_counter() - started)
        return response

    async def _prometheus(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, self.metrics.exposition(), CONTENT_TYPE)

    async def _openapi(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, self._openapi_body)

    async def _stats(self, request: HttpRequest) -> HttpResponse:
        engine = self.engine
        return json_response(
            {
                "batches": engine.batches,
                "rows": engine.batched_rows,
                "batching": engine.batching,
                "max_batch_size": engine.max_batch_size,
                "versions": sorted(self.repository.versions),
            }
        )

    async def _open_public(self, request: HttpRequest) -> HttpResponse:
        admin = self.admin
        if admin.open_public is None or request.local_port != admin.admin_port:
            return error_response(NotFound(f"no route for {request.path}"))
        try:
            return json_response(await admin.open_public())
        except OSError as exc:  # the public port is held by a process that did not opt into SO_REUSEPORT
            return json_response({"error": str(exc)}, 409)


async def _dispatch(
    request: HttpRequest,
    repository: ModelRepository,
    engine: InferenceEngine,
    settings: ServingSettings,
    call: _Call,
) -> HttpResponse:
    path = request.path
    tail = path[len(MODELS_PREFIX) :]
    verb = None
    if ":" in tail:
        tail, _, verb = tail.rpartition(":")
    parts = tail.split("/")
    metadata = len(parts) > 1 and parts[-1] == "metadata"
    if metadata:
        parts = parts[:-1]
    call.api = "metadata" if metadata else "status" if verb is None else _API_OF_VERB.get(verb, "other")
    if not parts or not parts[0]:
        raise NotFound("no model name in the path: use /v1/models/{model_name}")
    name = parts[0]
    if name != repository.model_name:
        raise NotFound(f"model {name!r} is not served here; this server serves {repository.model_name!r}")
    version = _version(repository, parts[1:], path)
    call.version = str((version or repository.default_version).version)
    if verb is not None:
        if metadata:
            raise NotFound(f"no route for {path}: ':{verb}' goes after the model or version, not /metadata")
        if verb in {"classify", "regress"}:
            raise BadRequest(f"':{verb}' is not supported by this server: use ':predict'")
        if verb != "predict":
            raise NotFound(f"unknown method ':{verb}' in {path}: use ':predict'")
        if request.method != "POST":
            raise MethodNotAllowed(f"':predict' takes POST, got {request.method}", ("POST",))
        return await _predict(request, repository, version, engine, settings)
    if request.method != "GET":
        raise MethodNotAllowed(f"{path} takes GET, got {request.method}", ("GET",))
    if metadata:
        return json_response(_metadata(repository, version))
    return json_response({"model_version_status": _status(repository, version)})


def _version(repository: ModelRepository, parts: list[str], path: str) -> ModelVersion | None:
    if not parts:
        return None
    if len(parts) != 2 or parts[0] not in {"versions", "labels"}:
        raise NotFound(f"no route for {path}: use /v1/models/{{m}}[/versions/{{v}}][/metadata|:predict]")
    if parts[0] == "labels":
        raise NotFound(
            f"version label {parts[1]!r} is not defined: address a version by number (/versions/N)"
        )
    if not parts[1].isdigit():
        raise NotFound(f"version {parts[1]!r} is not a number: use /versions/N with N an integer")
    number = int(parts[1])
    loaded = repository.versions.get(number)
    if loaded is None:
        raise NotFound(
            f"model {repository.model_name!r} has no version {number} loaded; loaded versions: "
            f"{sorted(repository.versions, reverse=True)}"
        )
    return loaded


def _status(repository: ModelRepository, version: ModelVersion | None) -> list[dict[str, Any]]:
    versions = (
        [version] if version else [repository.versions[v] for v in sorted(repository.versions, reverse=True)]
    )
    return [
        {"version": str(v.version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        for v in versions
    ]


def _metadata(repository: ModelRepository, version: ModelVersion | None) -> dict[str, Any]:
    served = version or repository.default_version
    return {
        "model_spec": {"name": repository.model_name, "signature_name": "", "version": str(served.version)},
        "metadata": {
            "signature_def": {"signature_def": served.signature_def, "@type": SIGNATURE_DEF_MAP_TYPE}
        },
    }


async def _predict(
    request: HttpRequest,
    repository: ModelRepository,
    version: ModelVersion | None,
    engine: InferenceEngine,
    settings: ServingSettings,
) -> HttpResponse:
    engine.arrivals.count += 1
    handed_over = False
    try:
        body = request.body  # the HTTP server refuses bodies above its own limit before reading them
        if len(body) > settings.max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {len(body)} bytes exceeds {settings.max_body_bytes} bytes"
            )
        served = version or repository.default_version
        parsed = decode_predict_request(body, served.inputs_by_signature, settings.max_batch_size)
        runner = served.signatures[parsed.signature_name]
        engine.arrivals.count -= 1
        handed_over = True
        try:
            outputs = await engine.predict(runner, parsed.columns, parsed.rows)
        except Exception as exc:
            if (
                type(exc).__name__ == "InvalidArgumentError"
            ):  # the model refused these values: TF Serving says 400
                raise BadRequest(f"the model rejected the input: {getattr(exc, 'message', exc)}") from None
            raise
    finally:
        if not handed_over:
            engine.arrivals.count -= 1
    outputs = {k: _jsonable(v) for k, v in outputs.items()}
    if len(outputs) == 1:
        (only,) = outputs.values()
        return json_response({"outputs" if parsed.columnar else "predictions": only})
    if parsed.columnar:
        return json_response({"outputs": outputs})
    columns = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in outputs.items()}
    rows = [{k: columns[k][i] for k in columns} for i in range(parsed.rows)]
    return json_response({"predictions": rows})


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.tolist()]
    return array


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
