"""The serving benchmark's gRPC load generator: PredictionService/Predict with N calls in flight.

    .venv/bin/python -m bench.grpc_load TARGET MODEL RECORDS_JSON --batch 64 --in-flight 1 --duration 5

``wrk`` speaks HTTP/1.1 only, so gRPC load comes from this process (run by :mod:`bench.serving` on
its own, so its CPU time is its own figure, as wrk's is). The PredictRequests (``tensor_content``
numbers, ``string_val`` strings, built by :mod:`modelops.serving.grpc_client`) are serialized once
before the run and sent as bytes over one channel (one HTTP/2 connection), ``--in-flight`` calls at a
time (one: the blocking stub; more: ``grpc.aio``); the answers are checked once (every record
scored) before the run and counted during it. Prints one JSON line shaped like wrk's summary in
:mod:`bench.serving`.

``--save-answer FILE`` keeps that checked answer's bytes (what :mod:`bench.grpc_echo` answers) and
``--save-body FILE`` the checked request as it goes on the wire (gRPC-framed, what
:mod:`bench.grpc_h2load` sends); ``--duration 0`` sends no load after that check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.grpc_h2load import frame
from modelops.serving.grpc_client import GrpcServingClient, predict_request, read_prediction

PREDICT = "/tensorflow.serving.PredictionService/Predict"
WARM_UP_CALLS = 20  # at most: each body once, before the clock starts


def build_bodies(
    target: str, model: str, records: list[dict[str, Any]], batch: int
) -> tuple[list[bytes], bytes]:
    """The serialized PredictRequests, and the serialized answer to the first (checked)."""
    with GrpcServingClient(target, timeout=30) as client:
        inputs = client.signature_inputs(model)
        requests = [
            predict_request(model, records[start : start + batch], inputs)
            for start in range(0, len(records) - batch + 1, batch)
        ]
        check = client.prediction.Predict(requests[0], timeout=30)  # a real answer before any load
        read_prediction(check, batch, f"Predict grpc://{target}")
    return [r.SerializeToString() for r in requests], check.SerializeToString()


def load(target: str, bodies: list[bytes], in_flight: int, seconds: float) -> dict[str, Any]:
    """``in_flight`` calls at a time for ``seconds``; latencies and errors in wrk's summary shape.

    One call in flight uses the blocking stub: gRPC's core waits for the answer in this thread, so
    the generator adds no event-loop hop of its own (``grpc.aio`` took 20-50 % more client CPU per
    call in a side-by-side probe on a loaded 2-core machine); more calls in flight share one
    ``grpc.aio`` channel.
    """
    if in_flight == 1:
        latencies, errors, elapsed = _load_blocking(target, bodies, seconds)
    else:
        latencies, errors, elapsed = asyncio.run(_load_async(target, bodies, in_flight, seconds))
    return _summary(latencies, errors, elapsed)


def _load_blocking(target: str, bodies: list[bytes], seconds: float) -> tuple[list[float], int, float]:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(PREDICT)  # bytes in, bytes out: no client-side protobuf work
        for body in bodies[:WARM_UP_CALLS]:
            call(body, timeout=30)
        latencies: list[float] = []
        errors = 0
        i = 0
        started = time.perf_counter()
        deadline = started + seconds
        while (now := time.perf_counter()) < deadline:
            try:
                call(bodies[i % len(bodies)], timeout=10)
                latencies.append(time.perf_counter() - now)
            except grpc.RpcError:
                errors += 1
            i += 1
        return latencies, errors, time.perf_counter() - started


async def _load_async(
    target: str, bodies: list[bytes], in_flight: int, seconds: float
) -> tuple[list[float], int, float]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(PREDICT)
        for body in bodies[:WARM_UP_CALLS]:
            await call(body, timeout=30)
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await call(bodies[i % len(bodies)], timeout=10)
                    latencies.append(time.perf_counter() - started)
                except grpc.RpcError:
                    errors += 1
                i += in_flight

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(in_flight)))
        return latencies, errors, time.perf_counter() - started


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    latencies.sort()
    count = max(1, len(latencies))

    def pct(p: float) -> float:
        return 1e6 * latencies[min(count - 1, int(count * p / 100))] if latencies else 0.0

    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "errors": errors,
        "status_errors": 0,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "max_us": 1e6 * latencies[-1] if latencies else 0.0,
        "mean_us": 1e6 * sum(latencies) / count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="host:port of the gRPC API")
    parser.add_argument("model")
    parser.add_argument("records_json", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--save-answer", type=Path, help="write the checked answer's bytes here")
    parser.add_argument("--save-body", type=Path, help="write the checked request, gRPC-framed, here")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    records = json.loads(args.records_json.read_text())
    bodies, answer = build_bodies(args.target, args.model, records, args.batch)
    if args.save_answer:
        args.save_answer.write_bytes(answer)
    if args.save_body:
        args.save_body.write_bytes(frame(bodies[0]))
    if args.duration <= 0:
        return 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    summary = load(args.target, bodies, args.in_flight, args.duration)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary["client_cpu_s"] = cpu
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
