"""The server process: set TensorFlow threads, load the model versions, serve with uvicorn.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from modelops.serving.app import AdminHooks, ServingSettings, build_app
from modelops.serving.batching import InferenceEngine
from modelops.serving.metrics import ServingMetrics
from modelops.serving.repository import choose_versions, discover_versions, load_repository
from modelops.serving.tensorflow_import import import_tensorflow

log = logging.getLogger(__name__)


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


def listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
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
        raise OSError(
            exc.errno, f"cannot listen on {host}:{port}{hint}: {exc.strerror}; choose another port"
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
    app = build_app(repository, engine, settings, admin, metrics)

    sockets = []
    if options.admin_port is not None:
        sockets.append(listening_socket(options.host, options.admin_port, reuse_port=False))
    if not options.defer_public:
        sockets.append(listening_socket(options.host, options.port, options.reuse_port))
    config = uvicorn.Config(
        app,
        loop="auto",
        http="auto",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        backlog=2048,
        proxy_headers=False,  # nothing here reads the client address; one middleware less per request
    )
    server = _Server(config)
    if options.grpc_port:
        from modelops.serving.grpc_api import GrpcApi  # imports tensorflow_serving's protos (and TF)

        server.grpc_api = GrpcApi(repository, engine, metrics, options.max_batch_size)
        server.grpc_address = (options.host, options.grpc_port, settings.max_body_bytes)

    async def open_public() -> dict[str, Any]:
        if not server.public_open:
            await server.add_listener(listening_socket(options.host, options.port, reuse_port=True))
            server.public_open = True
            log.info("now listening on public port %s:%d", options.host, options.port)
        return {"public": f"{options.host}:{options.port}", "pid": os.getpid()}

    admin.open_public = open_public if options.defer_public else None
    server.public_open = not options.defer_public
    versions = ", ".join(str(v) for v in sorted(repository.versions))
    where = [f"{options.host}:{s.getsockname()[1]}" for s in sockets]
    if options.grpc_port:
        where.append(f"gRPC {options.host}:{options.grpc_port}")
    print(
        f"serving model {options.model_name!r} versions [{versions}] from {repository.base_path} on "
        f"{', '.join(where)} (pid {os.getpid()}, batching={'on' if options.batching else 'off'})",
        flush=True,
    )
    try:
        server.run(sockets=sockets)
    finally:
        engine.close()


class _Server(uvicorn.Server):
    """uvicorn.Server that can start listening on one more socket after startup."""

    public_open = False
    grpc_api: Any = None
    grpc_address: tuple[str, int, int] | None = None
    _grpc_server: Any = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.grpc_api is not None and self.grpc_address is not None:
            from modelops.serving.grpc_api import build_grpc_server

            host, port, max_bytes = self.grpc_address
            self._grpc_server, _ = build_grpc_server(self.grpc_api, host, port, max_bytes)
            await self._grpc_server.start()
        await super().startup(sockets=sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace=5)
        await super().shutdown(sockets=sockets)

    async def add_listener(self, sock: socket.socket) -> None:
        # the same protocol factory uvicorn builds in Server.startup (uvicorn 0.54)
        config = self.config
        loop = asyncio.get_running_loop()

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        listener = await loop.create_server(create_protocol, sock=sock, backlog=config.backlog)
        self.servers.append(listener)
