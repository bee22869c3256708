"""``modelops serve``: the TF-Serving-compatible server (REST and gRPC), like ``tensorflow_model_server``.

``--standby-for FOLDER`` (used by the stack's supervisor) starts the warm standby instead
(:mod:`modelops.serving.warm_standby`): it pays for the TensorFlow import once and forks a server per
job written into ``FOLDER``, so a rollout or a restart costs one SavedModel load, not a start of
Python and TensorFlow (~12 s on a loaded machine).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from modelops import cli
from modelops.cli.errors import UserError
from modelops.config import load_config
from modelops.serving import warm_standby
from modelops.serving.repository import ModelLoadError, preload_tensorflow_internals
from modelops.serving.server import ServerOptions, configure_tensorflow, run_server


def _versions(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--versions takes comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-name", required=True, help="name in the URL: /v1/models/<name>")
    parser.add_argument(
        "--model-base-path",
        required=True,
        type=Path,
        help="folder of numbered SavedModel versions (D/1, D/3 ...)",
    )
    parser.add_argument("--host", default=None, help="listen address (default: config serving.host)")
    parser.add_argument(
        "--port", type=int, default=None, help="REST port (default: config serving.port, 8501)"
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=None,
        help="TF Serving's gRPC API port, 0 = off (default: config serving.grpc_port, 8500, when --port "
        "is not given either; with --port alone, REST only)",
    )
    parser.add_argument(
        "--model-version-policy",
        choices=["all", "latest"],
        default="all",
        help="load every numbered version (default) or only the highest; unversioned requests: highest",
    )
    parser.add_argument(
        "--versions", type=_versions, default=(), help="load exactly these versions, e.g. 2,3"
    )
    batching = parser.add_mutually_exclusive_group()
    batching.add_argument(
        "--batching",
        dest="batching",
        action="store_true",
        default=None,
        help="merge concurrent requests into one model call (default: config serving.batching)",
    )
    batching.add_argument(
        "--no-batching", dest="batching", action="store_false", help="one model call per request"
    )
    parser.add_argument(
        "--batch-timeout-ms",
        type=float,
        default=None,
        help="longest wait for concurrent requests to join a batch (default: config)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=None,
        help="largest batch per request and per model call (default: config serving.max_batch_size)",
    )
    parser.add_argument(
        "--intra-op-threads", type=int, default=1, help="TensorFlow intra-op threads (default 1)"
    )
    parser.add_argument(
        "--inter-op-threads", type=int, default=1, help="TensorFlow inter-op threads (default 1)"
    )
    parser.add_argument("--admin-port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--defer-public", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--reuse-port", action="store_true", help="listen with SO_REUSEPORT (for side-by-side swaps)"
    )
    parser.add_argument("--standby-for", type=Path, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    if args.standby_for is not None:
        return _standby(args)
    serving = load_config().serving
    max_batch_size = args.max_batch_size if args.max_batch_size is not None else serving.max_batch_size
    if max_batch_size < 1:
        raise UserError(f"--max-batch-size must be at least 1, got {max_batch_size}")
    if args.intra_op_threads < 0 or args.inter_op_threads < 0:
        raise UserError("--intra-op-threads/--inter-op-threads must be >= 0 (0 lets TensorFlow choose)")
    grpc_port = _grpc_port(args, serving.grpc_port)
    rest_port = args.port if args.port is not None else serving.port
    if grpc_port is not None and grpc_port == rest_port:
        raise UserError(f"--grpc-port {grpc_port} is the REST port too: give gRPC a port of its own")
    options = ServerOptions(
        model_name=args.model_name,
        base_path=args.model_base_path,
        host=args.host or serving.host,
        port=rest_port,
        version_policy=args.model_version_policy,
        versions=args.versions,
        batching=serving.batching if args.batching is None else args.batching,
        batch_timeout_ms=args.batch_timeout_ms
        if args.batch_timeout_ms is not None
        else serving.batch_timeout_ms,
        max_batch_size=max_batch_size,
        intra_op_threads=args.intra_op_threads,
        inter_op_threads=args.inter_op_threads,
        admin_port=args.admin_port,
        defer_public=args.defer_public,
        reuse_port=args.reuse_port or args.defer_public,
        grpc_port=grpc_port,
    )
    try:
        run_server(options)
    except ModelLoadError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(str(exc)) from None
    return 0


def _grpc_port(args: argparse.Namespace, configured: int | None) -> int | None:
    """``--grpc-port``; else the config's, but only for a server on the config's REST port too.

    A server given its own ``--port`` (a second model, a test, the benchmark, the local target's
    per-model ports and side-by-side swaps) is one of several on the machine, and the config's one
    gRPC port can belong to only one of them: it serves gRPC only when asked with ``--grpc-port``.
    """
    if args.grpc_port is not None:
        if not 0 <= args.grpc_port <= 65535:
            raise UserError(f"--grpc-port must be between 0 (off) and 65535, got {args.grpc_port}")
        return args.grpc_port or None
    if args.port is not None or args.defer_public:
        return None
    return configured or None


def _standby(args: argparse.Namespace) -> int:
    """Import TensorFlow and everything a server imports, then fork a server per job in the folder."""
    from modelops.serving.grpc_api import GrpcApi  # noqa: F401 - TF Serving's protos, as a server loads them

    configure_tensorflow(args.intra_op_threads, args.inter_op_threads)
    preload_tensorflow_internals()
    try:
        log = Path(os.readlink("/proc/self/fd/1"))  # where the supervisor pointed this process's output
    except OSError:
        log = Path(os.devnull)
    return warm_standby.serve_jobs(args.standby_for, log, _serve_forked)


def _serve_forked(argv: list[str]) -> int:
    """In a server forked by the standby: ``modelops serve <argv>``, as a new process would run it."""
    return cli.main(["serve", *argv])
