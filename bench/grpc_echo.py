"""The gRPC transport's own cost on this machine: a Predict method that does nothing.

    .venv/bin/python -m bench.grpc_echo PORT ANSWER_FILE [--flavor own|aio|sync]

Answers every ``tensorflow.serving.PredictionService/Predict`` call with the bytes of ANSWER_FILE (a
real PredictResponse, saved by :mod:`bench.grpc_load` ``--save-answer``) without parsing the request:
no protobuf, no tensors, no model. The serving bench drives it with h2load (:mod:`bench.grpc_h2load`)
and the real request's bytes, so the round trip it measures is what the server side of Python gRPC
costs per call, and turns that into the ceiling of the gRPC batch-64 goal: the share of the in-process
floor that a server whose own work took no time at all would reach here.

``--flavor own`` is the server ``modelops serve`` runs (:mod:`modelops.serving.grpc_server`, HTTP/2 on
uvloop); ``aio`` is grpcio's ``grpc.aio`` server, which it ran before, and ``sync`` grpcio's thread-pool
server, for comparison.
Prints ``READY`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import uvloop

from modelops.serving.grpc_server import GrpcReply, GrpcServer
from modelops.serving.server import listening_socket

SERVICE = "tensorflow.serving.PredictionService"
OPTIONS = [("grpc.so_reuseport", 0)]


def _handlers(answer: bytes, asynchronous: bool) -> Any:
    if asynchronous:

        async def predict_async(request: bytes, context: Any) -> bytes:
            return answer

        method = grpc.unary_unary_rpc_method_handler(predict_async)
    else:

        def predict(request: bytes, context: Any) -> bytes:
            return answer

        method = grpc.unary_unary_rpc_method_handler(predict)
    return grpc.method_handlers_generic_handler(SERVICE, {"Predict": method})  # bytes in, bytes out


async def serve_aio(port: int, answer: bytes) -> None:
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((_handlers(answer, asynchronous=True),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


async def serve_own(port: int, answer: bytes) -> None:
    predict = f"/{SERVICE}/Predict"

    async def echo(path: str, message: bytes) -> GrpcReply:
        if path != predict:
            return GrpcReply(12, message=f"{path}: only {predict} is served here")
        return GrpcReply(0, answer)

    server = GrpcServer(echo, max_message_bytes=64 * 1024 * 1024)
    await server.listen(listening_socket("127.0.0.1", port, reuse_port=False, protocol="gRPC"))
    print("READY", flush=True)
    await asyncio.Event().wait()


def serve_sync(port: int, answer: bytes) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=OPTIONS)
    server.add_generic_rpc_handlers((_handlers(answer, asynchronous=False),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("READY", flush=True)
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("answer_file", type=Path)
    parser.add_argument("--flavor", choices=("own", "aio", "sync"), default="own")
    args = parser.parse_args(argv)
    answer = args.answer_file.read_bytes()
    if args.flavor == "own":
        uvloop.run(serve_own(args.port, answer))
    elif args.flavor == "aio":
        asyncio.run(serve_aio(args.port, answer))
    else:
        serve_sync(args.port, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
