"""The server process: set TensorFlow threads, load the model versions, serve REST (and gRPC).

Plain use (``modelops serve``) listens on ``host:port``. The ``local`` serving target adds a
private admin port and ``defer_public``: the process first answers only on the admin port, the
target health-checks and smoke-tests it there, then ``POST /-/open-public`` makes it listen on the
public port with ``SO_REUSEPORT`` beside the previous process, which is then stopped. Clients keep
one URL throughout.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from modelops.serving.app import AdminHooks, ServingApi, ServingSettings
from modelops.serving.batching import InferenceEngine
from modelops.serving.grpc_server import GrpcServer
from modelops.serving.http_server import HttpServer, install_signal_handlers
from modelops.serving.metrics import ServingMetrics
from modelops.serving.repository import choose_versions, discover_versions, load_repository
from modelops.serving.tensorflow_import import import_tensorflow

log = logging.getLogger(__name__)

GRACEFUL_STOP_S = 10.0  # how long a stopping server keeps answering what it had received


@dataclass(frozen=True)
class ServerOptions:
    model_name: str
    base_path: Path
    host: str = "127.0.0.1"
    port: int = 8501
    version_policy: str = "all"
    versions: tuple[int, ...] = ()
    batching: bool = True
    batch_timeout_ms: float = 1.0
    max_batch_size: int = 1024
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    admin_port: int | None = None
    defer_public: bool = False
    reuse_port: bool = False
    grpc_port: int | None = None  # TF Serving's gRPC API on host:grpc_port; None/0: REST only


def configure_tensorflow(intra_op_threads: int, inter_op_threads: int) -> None:
    """Must run before the first TF op; explicit thread counts keep latency stable on small machines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)


def listening_socket(host: str, port: int, reuse_port: bool, protocol: str = "") -> socket.socket:
    """A bound, listening, non-blocking socket; ``protocol`` ("gRPC") names what it is for in the error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = " (another process without SO_REUSEPORT holds it)" if reuse_port else ""
        what, option = (f" for {protocol}", f"--{protocol.lower()}-port") if protocol else ("", "port")
        raise OSError(
            exc.errno, f"cannot listen{what} on {host}:{port}{hint}: {exc.strerror}; choose another {option}"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run_server(options: ServerOptions) -> None:
    # fail on a wrong path before paying seconds for the TensorFlow import
    choose_versions(discover_versions(options.base_path), options.version_policy, options.versions)
    configure_tensorflow(options.intra_op_threads, options.inter_op_threads)
    repository = load_repository(
        options.model_name, options.base_path, options.version_policy, options.versions
    )
    # The loaded graphs are hundreds of thousands of long-lived objects: left in the collector's
    # generations, every full collection walks them and stalls all requests for 50-800 ms
    # (bench/profiles/README.md). Freezing moves them out of the collector's reach.
    gc.collect()
    gc.freeze()
    metrics = ServingMetrics(repository)
    engine = InferenceEngine(
        batching=options.batching,
        max_batch_size=options.max_batch_size,
        batch_timeout_s=options.batch_timeout_ms / 1000.0,
        batch_observer=metrics.observe_batch,
    )
    admin = AdminHooks(admin_port=options.admin_port)
    settings = ServingSettings(max_batch_size=options.max_batch_size)
    api = ServingApi(repository, engine, settings, admin, metrics)
    http = HttpServer(
        api,
        settings.max_body_bytes,
        request_timeout_s=settings.request_timeout_s,
        on_unexpected=api.unexpected,
    )

    sockets = []
    if options.admin_port is not None:
        sockets.append(listening_socket(options.host, options.admin_port, reuse_port=False))
    if not options.defer_public:
        sockets.append(listening_socket(options.host, options.port, options.reuse_port))
    public_open = not options.defer_public

    async def open_public() -> dict[str, Any]:
        nonlocal public_open
        if not public_open:
            await http.listen(listening_socket(options.host, options.port, reuse_port=True))
            public_open = True
            log.info("now listening on public port %s:%d", options.host, options.port)
        return {"public": f"{options.host}:{options.port}", "pid": os.getpid()}

    admin.open_public = open_public if options.defer_public else None
    versions = ", ".join(str(v) for v in sorted(repository.versions))
    where = [f"{options.host}:{s.getsockname()[1]}" for s in sockets]
    if options.grpc_port:
        where.append(f"gRPC {options.host}:{options.grpc_port}")
    banner = (
        f"serving model {options.model_name!r} versions [{versions}] from {repository.base_path} on "
        f"{', '.join(where)} (pid {os.getpid()}, batching={'on' if options.batching else 'off'})"
    )

    async def start_grpc() -> GrpcServer:
        from modelops.serving.grpc_api import GrpcApi  # tensorflow_serving's protos

        grpc_api = GrpcApi(repository, engine, metrics, options.max_batch_size)
        port = options.grpc_port or 0  # only started when a gRPC port is set
        grpc_server = GrpcServer(grpc_api.call, settings.max_body_bytes)
        await grpc_server.listen(listening_socket(options.host, port, reuse_port=False, protocol="gRPC"))
        return grpc_server

    try:
        uvloop.run(_serve(http, sockets, banner, start_grpc if options.grpc_port else None))
    finally:
        engine.close()


async def _serve(
    http: HttpServer,
    sockets: list[socket.socket],
    banner: str,
    start_grpc: Callable[[], Awaitable[GrpcServer]] | None,
) -> None:
    """Listen until SIGTERM/SIGINT, then stop gracefully: what was received is answered."""
    stop = asyncio.Event()
    install_signal_handlers(stop.set)
    grpc_server = await start_grpc() if start_grpc is not None else None
    for sock in sockets:
        await http.listen(sock)
    print(banner, flush=True)
    await stop.wait()
    log.info("stopping: answering the requests already received")
    if grpc_server is not None:
        await asyncio.gather(grpc_server.shutdown(GRACEFUL_STOP_S), http.shutdown(GRACEFUL_STOP_S))
    else:
        await http.shutdown(GRACEFUL_STOP_S)
