"""The gRPC transport's own cost on this machine: a Predict method that does nothing.

    .venv/bin/python -m bench.grpc_echo PORT ANSWER_FILE [--flavor aio|sync]

Answers every ``tensorflow.serving.PredictionService/Predict`` call with the bytes of ANSWER_FILE (a
real PredictResponse, saved by :mod:`bench.grpc_load` ``--save-answer``) without parsing the request:
no protobuf, no tensors, no model. The serving bench drives it with h2load (:mod:`bench.grpc_h2load`)
and the real request's bytes, so the round trip it measures is what the server side of Python gRPC
costs per call, and turns that into the ceiling of the gRPC batch-64 goal: the share of the in-process
floor that a server whose own work took no time at all would reach here.

``--flavor aio`` is the server the project runs (``grpc.aio``, as in
:func:`modelops.serving.grpc_api.build_grpc_server`); ``sync`` is grpcio's thread-pool server.
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
    parser.add_argument("--flavor", choices=("aio", "sync"), default="aio")
    args = parser.parse_args(argv)
    answer = args.answer_file.read_bytes()
    if args.flavor == "aio":
        asyncio.run(serve_aio(args.port, answer))
    else:
        serve_sync(args.port, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
