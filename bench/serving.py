"""Serving benchmark: the local TF-Serving-compatible server against its floor (and MLflow's server).

    .venv/bin/python -m bench.serving [--duration 5] [--mlflow-peer] [--json out.json]

Floor = calling the SavedModel's ``serving_default`` signature in-process on the same records with
the same TensorFlow threads (the server's own :class:`SignatureRunner`, so input conversion
included, JSON and HTTP excluded). Load comes from Debian's ``wrk`` (``apt-get install -y wrk``)
with a Lua script cycling through pre-built JSON bodies; its own CPU time is reported.

Scenarios: batch-1 over 1 connection (p50/p99 vs floor), batch-1 over 16 connections with dynamic
batching on and off, batch-64 records/s vs the in-process floor, an empty endpoint (the HTTP
stack's ceiling), batch-64 over TF Serving's gRPC API (nghttp2's ``h2load``, ``apt-get install -y
nghttp2-client``, through :mod:`bench.grpc_h2load`: 1 and 4 calls in flight on one connection, same
server process; and 1 in flight from Python's grpcio client, :mod:`bench.grpc_load`), RSS per
serving process, and optionally ``mlflow models serve`` as the peer. ``--grpc-only``: the floor and
the gRPC scenarios alone.
Prints a table and writes JSON. Goals are reported, not asserted: this is not a test. Before load,
each ``modelops serve`` process is smoke-tested with :mod:`modelops.serving.rest_client` (wrk only
counts HTTP errors: a server answering malformed scores must not be benchmarked).

TensorFlow (through ``modelops.model``) and MLflow (the peer) are imported inside the functions that
need them; the floor runs in its own process (:mod:`bench.serving_floor`), which must set
TensorFlow's threads before TensorFlow loads and whose RSS is a reported figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import grpc_h2load
from modelops.config import TrainingSettings
from modelops.data.generator import generate_period, generate_training
from modelops.data.schema import HMEQ_SCHEMA
from modelops.serving import rest_client
from modelops.tls import tls_context

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL = "hmeq-risk"
SERVE = "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))"

WRK_SCRIPT = r"""
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
wrk.method = os.getenv("BENCH_METHOD") or "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  if wrk.method == "GET" then return wrk.format(nil, nil, nil, nil) end
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- model and records ----------------------------------------------------------------------------


def train_and_export(workdir: Path, rows: int) -> tuple[Path, Any]:
    """A real MLP from the project's trainer and exporter (default architecture, few epochs)."""
    from modelops.model.export import export_saved_model  # lazy: imports TensorFlow
    from modelops.model.network import fit_model  # lazy: imports TensorFlow

    progress(f"training a benchmark model on {rows} generated rows (default architecture, 3 epochs)")
    fitted = fit_model(
        generate_training(rows=rows, seed=3), HMEQ_SCHEMA, TrainingSettings(epochs=3), progress=None
    )
    return export_saved_model(fitted, workdir / "models", MODEL, 1), fitted


def benchmark_records(count: int) -> list[dict[str, Any]]:
    frame = generate_period(1, rows=count, seed=5)
    dtypes = {n: "DT_FLOAT" for n in HMEQ_SCHEMA.numeric} | {n: "DT_STRING" for n in HMEQ_SCHEMA.categorical}
    return rest_client.to_instances(frame, dtypes)  # NaN for missing numbers, "" for missing categories


def write_bodies(path: Path, records: list[dict[str, Any]], batch: int) -> Path:
    lines = []
    for start in range(0, len(records) - batch + 1, batch):
        lines.append(json.dumps({"instances": records[start : start + batch]}, allow_nan=True))
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the floor (own process: TF threads must be set before TF runs anything) ----------------------


def run_floor(model_dir: Path, records_file: Path, threads: int, seconds: float) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.serving_floor",
        str(model_dir),
        str(records_file),
        "--threads",
        str(threads),
        "--duration",
        str(seconds),
    ]
    output = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


# -- servers and load ------------------------------------------------------------------------------


class Server:
    def __init__(self, command: list[str], url: str, ready: Callable[[str], bool], log: Path) -> None:
        """``ready(url)`` says whether the server answers yet."""
        self.url, self.ready, self.log = url, ready, log
        # the venv's bin first: `mlflow models serve` starts `uvicorn` by name
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                command, stdout=handle, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env
            )

    def wait_ready(self, timeout: float = 180.0) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; log {self.log}")
            if self.ready(self.url):
                return self
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout:.0f}s; log {self.log}")

    def rss_mb(self) -> float:
        process = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20

    def cpu_seconds(self) -> float:
        process = psutil.Process(self.process.pid)
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        for child in psutil.Process(self.process.pid).children(recursive=True):
            child.terminate()
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def model_available(url: str) -> bool:
    """The served model reports an AVAILABLE version (the TF Serving status API)."""
    try:
        return rest_client.served_version(rest_client.model_status(url, MODEL, timeout=2)) is not None
    except rest_client.ServingClientError:
        return False


def mlflow_ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ping", timeout=2, verify=tls_context()).status_code == 200
    except httpx.HTTPError:
        return False


def modelops_server(
    base: Path,
    workdir: Path,
    batching: bool,
    threads: int,
    timeout_ms: float,
    records: list[dict[str, Any]],
    grpc_port: int | None = None,
) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-c",
        SERVE,
        "serve",
        "--model-name",
        MODEL,
        "--model-base-path",
        str(base),
        "--port",
        str(port),
        "--batching" if batching else "--no-batching",
        "--batch-timeout-ms",
        str(timeout_ms),
        "--intra-op-threads",
        str(threads),
        "--inter-op-threads",
        str(threads),
        *(["--grpc-port", str(grpc_port)] if grpc_port else []),
    ]
    log = workdir / f"serve-{'batching' if batching else 'plain'}.log"
    server = Server(command, f"http://127.0.0.1:{port}", model_available, log).wait_ready()
    try:  # wrk counts HTTP errors only: the answers themselves must be scores
        rest_client.smoke_test(server.url, MODEL, records[:64])
    except rest_client.ServingClientError:
        server.stop()
        raise
    return server


def wrk(
    url: str,
    bodies: Path,
    connections: int,
    seconds: float,
    script: Path,
    method: str = "POST",
    server: Server | None = None,
) -> dict[str, Any]:
    threads = 1 if connections == 1 else 2
    env = dict(os.environ, BENCH_BODIES=str(bodies), BENCH_METHOD=method)
    command = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = server.cpu_seconds() if server else 0.0
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(li for li in output.splitlines() if li.startswith("BENCH "))
    result = json.loads(line[len("BENCH ") :])
    wrk_cpu = (after_children.ru_utime - before_children.ru_utime) + (
        after_children.ru_stime - before_children.ru_stime
    )
    requests = max(1, result["requests"])
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["wrk_cpu_us_per_request"] = 1e6 * wrk_cpu / requests
    if server is not None:
        result["server_cpu_us_per_request"] = 1e6 * (server.cpu_seconds() - server_cpu) / requests
    return result


def grpc_load(
    target: str,
    records_file: Path,
    batch: int,
    in_flight: int,
    seconds: float,
    server: Server | None,
    *extra: str,
) -> dict[str, Any]:
    """gRPC Predict load from :mod:`bench.grpc_load` (its own process), in wrk's result shape;
    ``server`` is the process whose CPU time is counted, ``extra`` more arguments to the generator."""
    command = _grpc_load_command(target, records_file, batch, in_flight, seconds, *extra)
    server_cpu = server.cpu_seconds() if server else 0.0
    output = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    result = json.loads(output.strip().splitlines()[-1])
    requests = max(1, result["requests"])
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    # the load generator's CPU (wrk's column), including its start-up; the server's over the run
    result["wrk_cpu_us_per_request"] = 1e6 * result["client_cpu_s"] / requests
    if server is not None:
        result["server_cpu_us_per_request"] = 1e6 * (server.cpu_seconds() - server_cpu) / requests
    return result


def _grpc_load_command(
    target: str, records_file: Path, batch: int, in_flight: int, seconds: float, *extra: str
) -> list[str]:
    return [
        sys.executable, "-m", "bench.grpc_load", target, MODEL, str(records_file),
        "--batch", str(batch), "--in-flight", str(in_flight), "--duration", str(seconds), *extra,
    ]  # fmt: skip


def save_checked_call(target: str, records_file: Path, body: Path, answer: Path) -> None:
    """One batch-64 Predict sent and its answer checked by :mod:`bench.grpc_load`; the request's bytes
    (gRPC-framed, for h2load) and the answer's (for the echo server) saved."""
    command = _grpc_load_command(
        target, records_file, 64, 1, 0, "--save-body", str(body), "--save-answer", str(answer)
    )
    subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)


def grpc_native(
    target: str,
    body_file: Path,
    in_flight: int,
    seconds: float,
    server: Server,
    rows_url: str | None,
) -> dict[str, Any]:
    """gRPC Predict load from h2load (:mod:`bench.grpc_h2load`), in wrk's result shape; ``server`` is
    the process whose CPU time is counted. With ``rows_url`` (a ``modelops serve``'s REST URL), every
    call h2load counts must have scored its 64 rows there: the rows the server reports scoring during
    the run are compared, so a call answered with a gRPC error (an HTTP 200 to h2load) is an error."""
    grpc_h2load.warm_up(target, body_file)
    rows_before = served_rows(rows_url) if rows_url else 0
    server_cpu = server.cpu_seconds()
    result = grpc_h2load.load(target, body_file, in_flight, seconds)
    requests = max(1, result["requests"])
    result["server_cpu_us_per_request"] = 1e6 * (server.cpu_seconds() - server_cpu) / requests
    if rows_url:
        scored_calls = (served_rows(rows_url) - rows_before) // 64
        result["errors"] += max(0, result["requests"] - scored_calls)
    result["requests_per_s"] = result["requests"] / (result["duration_us"] / 1e6)
    result["wrk_cpu_us_per_request"] = 1e6 * result["client_cpu_s"] / requests
    return result


def served_rows(url: str) -> int:
    """The rows a ``modelops serve`` process has scored since it started (its ``/-/stats``)."""
    return int(httpx.get(f"{url}/-/stats", timeout=10, verify=tls_context()).json()["rows"])


def grpc_transport_alone(
    body_file: Path, answer_file: Path, workdir: Path, seconds: float
) -> list[dict[str, Any]]:
    """Batch-64 calls, 1 in flight, from h2load to :mod:`bench.grpc_echo` (each flavor): the real
    request's bytes in, the real answer's bytes out, and nothing else."""
    rows = []
    for flavor in ("own", "aio", "sync"):
        progress(f"  gRPC transport alone ({flavor} echo server), batch 64, 1 call in flight, {seconds:.0f}s")
        port = free_port()
        command = [sys.executable, "-m", "bench.grpc_echo", str(port), str(answer_file), "--flavor", flavor]
        log = workdir / f"grpc-echo-{flavor}.log"
        echo = Server(command, f"127.0.0.1:{port}", _listens, log).wait_ready()
        try:
            result = grpc_native(echo.url, body_file, 1, seconds, echo, rows_url=None)
        finally:
            echo.stop()
        rows.append(scenario(f"{GRPC_ECHO_SCENARIO} ({flavor})", 64, 1, result))
    return rows


def _listens(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


# -- the run ---------------------------------------------------------------------------------------


def scenario(name: str, batch: int, connections: int, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "scenario": name,
        "batch": batch,
        "connections": connections,
        "records_per_s": result["requests_per_s"] * batch,
        "requests_per_s": result["requests_per_s"],
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "errors": result["errors"] + result["status_errors"],
        "wrk_cpu_us_per_request": result["wrk_cpu_us_per_request"],
        "server_cpu_us_per_request": result.get("server_cpu_us_per_request"),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load scenario (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="TF intra/inter-op threads, server and floor")
    parser.add_argument("--batch-timeout-ms", type=float, default=1.0)
    parser.add_argument(
        "--model-base-path", type=Path, default=None, help="serve this base path (else train one)"
    )
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--mlflow-peer", action="store_true", help="also benchmark `mlflow models serve`")
    parser.add_argument(
        "--grpc-only",
        action="store_true",
        help="only the floor and the gRPC batch-64 scenarios (no wrk, no batching-off server)",
    )
    parser.add_argument("--json", type=Path, default=None, help="where to write results (default: workdir)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if shutil.which("wrk") is None and not args.grpc_only:
        print("bench.serving: wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if not grpc_h2load.available():
        print(f"bench.serving: {grpc_h2load.INSTALL_HINT}", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelops-bench-serving-"))
    summary = run(
        workdir,
        duration=args.duration,
        threads=args.threads,
        batch_timeout_ms=args.batch_timeout_ms,
        model_base_path=args.model_base_path,
        train_rows=args.train_rows,
        with_mlflow_peer=args.mlflow_peer,
        grpc_only=args.grpc_only,
    )
    print_table(summary["floor"], summary["scenarios"], summary)
    out = args.json or workdir / "serving-bench.json"
    out.write_text(json.dumps(summary, indent=2, default=float))
    progress(f"results written to {out}")
    return 0


def run(
    workdir: Path,
    duration: float = 5.0,
    threads: int = 1,
    batch_timeout_ms: float = 1.0,
    model_base_path: Path | None = None,
    train_rows: int = 4000,
    with_mlflow_peer: bool = False,
    grpc_only: bool = False,
) -> dict[str, Any]:
    """Every serving scenario once; returns the summary (floor, scenarios, RSS, goals)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    workdir.mkdir(parents=True, exist_ok=True)
    if model_base_path:
        base = model_base_path
        versions = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
        if not versions:
            raise ValueError(
                f"--model-base-path {base} holds no numbered version folder (e.g. {base}/1/saved_model.pb): "
                "point it at the folder that holds the versions"
            )
        model_dir = base / str(max(versions))
    else:
        model_dir, _ = train_and_export(workdir, train_rows)
        base = model_dir.parent
    records = benchmark_records(2048)
    records_file = workdir / "records.json"
    records_file.write_text(json.dumps(records, allow_nan=True))
    bodies1 = write_bodies(workdir / "bodies-1.jsonl", records, 1)
    bodies64 = write_bodies(workdir / "bodies-64.jsonl", records, 64)
    script = workdir / "bench.lua"
    script.write_text(WRK_SCRIPT)
    seconds = duration

    progress(f"floor: in-process signature calls ({threads} TF thread(s)), {seconds:.0f}s per measure")
    floor_figures = run_floor(model_dir, records_file, threads, seconds)
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "floor": floor_figures,
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "model_dir": str(model_dir),
    }

    progress("modelops serve, batching on (REST and gRPC)")
    grpc_port = free_port()
    server = modelops_server(base, workdir, True, threads, batch_timeout_ms, records, grpc_port)
    try:
        predict = f"{server.url}/v1/models/{MODEL}:predict"
        if not grpc_only:
            wrk(predict, bodies1, 1, 1, script)  # warm-up
            for batch, connections, bodies in (
                (1, 1, bodies1),
                (1, 16, bodies1),
                (64, 1, bodies64),
                (64, 4, bodies64),
            ):
                progress(f"  batch {batch}, {connections} connection(s), {seconds:.0f}s")
                result = wrk(predict, bodies, connections, seconds, script, server=server)
                rows.append(scenario("modelops batching on", batch, connections, result))
            ceiling = wrk(f"{server.url}/-/stats", bodies1, 16, seconds, script, method="GET", server=server)
            rows.append(scenario("HTTP ceiling: GET /-/stats (no model)", 1, 16, ceiling))
        target = f"127.0.0.1:{grpc_port}"
        body, answer = workdir / "grpc-body.bin", workdir / "grpc-answer.bin"  # a checked call's bytes
        save_checked_call(target, records_file, body, answer)
        for in_flight in (1, 4):
            progress(
                f"  gRPC batch 64 (h2load), {in_flight} call(s) in flight on one connection, {seconds:.0f}s"
            )
            result = grpc_native(target, body, in_flight, seconds, server, rows_url=server.url)
            rows.append(scenario(GRPC_SCENARIO, 64, in_flight, result))
        progress(f"  gRPC batch 64 from Python's grpcio client, 1 call in flight, {seconds:.0f}s")
        result = grpc_load(target, records_file, 64, 1, seconds, server)
        rows.append(scenario(GRPC_PYTHON_CLIENT_SCENARIO, 64, 1, result))
        rows.extend(grpc_transport_alone(body, answer, workdir, seconds))
        summary["rss_mb_modelops"] = server.rss_mb()
    finally:
        server.stop()
    if grpc_only:
        summary["scenarios"] = rows
        summary["goals"] = goals(floor_figures, rows, summary)
        return summary

    progress("modelops serve, batching off")
    server = modelops_server(base, workdir, False, threads, batch_timeout_ms, records)
    try:
        predict = f"{server.url}/v1/models/{MODEL}:predict"
        wrk(predict, bodies1, 1, 1, script)
        for connections in (1, 16):
            progress(f"  batch 1, {connections} connection(s), {seconds:.0f}s")
            result = wrk(predict, bodies1, connections, seconds, script, server=server)
            rows.append(scenario("modelops batching off", 1, connections, result))
    finally:
        server.stop()

    if with_mlflow_peer:
        rows.extend(mlflow_peer(model_dir, workdir, records, script, seconds, summary))

    summary["scenarios"] = rows
    summary["goals"] = goals(floor_figures, rows, summary)
    return summary


def mlflow_peer(
    model_dir: Path,
    workdir: Path,
    records: list[dict[str, Any]],
    script: Path,
    seconds: float,
    summary: dict[str, Any],
) -> list[dict[str, Any]]:
    sys.path.insert(0, str(PROJECT_ROOT))
    from bench.serving_mlflow_peer import save_peer_model  # lazy: imports MLflow

    progress("MLflow peer: saving a pyfunc model around the same SavedModel")
    peer_dir = workdir / "mlflow-peer"
    shutil.rmtree(peer_dir, ignore_errors=True)
    save_peer_model(model_dir, peer_dir)
    bodies = workdir / "bodies-mlflow.jsonl"
    bodies.write_text(
        "\n".join(json.dumps({"dataframe_records": [r]}, allow_nan=True) for r in records[:1024]) + "\n"
    )
    port = free_port()
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    command = [
        mlflow_bin,
        "models",
        "serve",
        "--env-manager",
        "local",
        "-m",
        str(peer_dir),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--workers",
        "1",
    ]
    progress("MLflow peer: mlflow models serve --env-manager local --workers 1")
    server = Server(
        command, f"http://127.0.0.1:{port}", mlflow_ready, workdir / "mlflow-serve.log"
    ).wait_ready()
    rows = []
    try:
        url = f"{server.url}/invocations"
        wrk(url, bodies, 1, 1, script)
        for connections in (1, 8, 16):
            rows.append(
                scenario(
                    "mlflow models serve",
                    1,
                    connections,
                    wrk(url, bodies, connections, seconds, script, server=server),
                )
            )
        summary["rss_mb_mlflow"] = server.rss_mb()
    finally:
        server.stop()
    return rows


# h2load (bench.grpc_h2load); its connections column = calls in flight on one HTTP/2 connection
GRPC_SCENARIO = "modelops gRPC Predict, batching on"
GRPC_PYTHON_CLIENT_SCENARIO = "modelops gRPC Predict, grpcio client"  # bench.grpc_load, what `traffic` uses
GRPC_ECHO_SCENARIO = "gRPC transport alone: echo"  # + " (own)" / " (aio)" / " (sync)": bench.grpc_echo

# Issue #15's goals, the one place they are written: bench.serving's summary and bench.suite's rows read them.
P50_OVER_FLOOR_MS = 0.4  # batch-1, 1 conn: p50 <= in-process floor + this
BATCHING_GAIN = 3.0  # batch-1, 16 conn: batching on >= this x batching off
BATCHING_RECORDS_PER_S = 3500  # ... and >= this many records/s
BATCH64_SHARE = 0.6  # batch-64, 1 conn: >= this x the in-process batch-64 floor
GRPC64_SHARE = 0.8  # batch-64 over gRPC, 1 call in flight: >= this x the floor
P99_16CONN_MS = 20.0  # batch-1, 16 conn, batching on: p99 <= this
MLFLOW_GAIN = 3.0  # batch-1, 16 conn: >= this x mlflow models serve


def _find(rows: list[dict[str, Any]], name: str, batch: int, connections: int) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in rows
            if r["scenario"] == name and r["batch"] == batch and r["connections"] == connections
        ),
        None,
    )


def goals(
    floor_figures: dict[str, Any], rows: list[dict[str, Any]], summary: dict[str, Any]
) -> list[dict[str, Any]]:
    on1 = _find(rows, "modelops batching on", 1, 1)
    on16 = _find(rows, "modelops batching on", 1, 16)
    off16 = _find(rows, "modelops batching off", 1, 16)
    on64 = _find(rows, "modelops batching on", 64, 1)
    grpc64 = _find(rows, GRPC_SCENARIO, 64, 1)
    checks = []

    def check(goal: str, measured: str, met: bool) -> None:
        checks.append({"goal": goal, "measured": measured, "met": met})

    if on1:
        limit = floor_figures["batch1_p50_ms"] + P50_OVER_FLOOR_MS
        check(
            f"batch-1, 1 conn: p50 <= floor + {P50_OVER_FLOOR_MS} ms",
            f"{on1['p50_ms']:.2f} ms vs {limit:.2f} ms",
            on1["p50_ms"] <= limit,
        )
    if on16 and off16:
        ratio = on16["records_per_s"] / off16["records_per_s"]
        check(
            f"batch-1, 16 conn: batching on >= {BATCHING_GAIN:g}x off",
            f"{ratio:.2f}x",
            ratio >= BATCHING_GAIN,
        )
        check(
            f"batch-1, 16 conn: >= {BATCHING_RECORDS_PER_S:,} rec/s",
            f"{on16['records_per_s']:.0f} rec/s",
            on16["records_per_s"] >= BATCHING_RECORDS_PER_S,
        )
    if on64:
        share = on64["records_per_s"] / floor_figures["batch64_rows_per_s"]
        check(f"batch-64: >= {BATCH64_SHARE:g}x in-process floor", f"{share:.2f}x", share >= BATCH64_SHARE)
    if grpc64:
        share = grpc64["records_per_s"] / floor_figures["batch64_rows_per_s"]
        ceiling = grpc_ceiling(floor_figures, rows)
        check(
            f"batch-64 over gRPC, 1 call in flight: >= {GRPC64_SHARE:g}x in-process floor",
            f"{share:.2f}x" + (f" (the transport alone allows {ceiling:.2f}x here)" if ceiling else ""),
            share >= GRPC64_SHARE,
        )
    for connections in (8, 16):
        peer = _find(rows, "mlflow models serve", 1, connections)
        ours = _find(rows, "modelops batching on", 1, 16)
        if peer and ours:
            ratio = ours["records_per_s"] / peer["records_per_s"]
            check(
                f"vs MLflow at {connections} conn: >= {MLFLOW_GAIN:g}x throughput",
                f"{ratio:.1f}x",
                ratio >= MLFLOW_GAIN,
            )
    if on16:
        check(
            f"batch-1, 16 conn: p99 <= {P99_16CONN_MS:g} ms",
            f"{on16['p99_ms']:.2f} ms",
            on16["p99_ms"] <= P99_16CONN_MS,
        )
    return checks


def grpc_ceiling(floor_figures: dict[str, Any], rows: list[dict[str, Any]]) -> float | None:
    """The highest share of the batch-64 floor a gRPC server could reach here if its own work took no
    time: the model call (the floor's) plus the fastest echo round trip with the same bytes."""
    echoes = [r for r in rows if r["scenario"].startswith(GRPC_ECHO_SCENARIO) and r["requests_per_s"] > 0]
    if not echoes:
        return None
    model_call_s = 64 / floor_figures["batch64_rows_per_s"]
    round_trip_s = min(1 / r["requests_per_s"] for r in echoes)
    return model_call_s / (model_call_s + round_trip_s)


def print_table(floor_figures: dict[str, Any], rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print()
    print(
        f"floor (in-process signature call): batch-1 p50 {floor_figures['batch1_p50_ms']:.3f} ms, "
        f"p99 {floor_figures['batch1_p99_ms']:.3f} ms, {floor_figures['batch1_calls_per_s']:.0f} calls/s; "
        f"batch-64 {floor_figures['batch64_rows_per_s']:.0f} rows/s"
    )
    header = (
        f"{'scenario':40} {'batch':>5} {'conn':>4} {'rec/s':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'err':>4} {'srv us/req':>10} {'wrk us/req':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        server_cpu = r["server_cpu_us_per_request"]
        server_cpu = math.nan if server_cpu is None else server_cpu
        print(
            f"{r['scenario']:40} {r['batch']:>5} {r['connections']:>4} {r['records_per_s']:>9.0f} "
            f"{r['requests_per_s']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['errors']:>4} "
            f"{server_cpu:>10.0f} {r['wrk_cpu_us_per_request']:>10.0f}"
        )
    print()
    for key in ("rss_mb_modelops", "rss_mb_mlflow"):
        if key in summary:
            print(f"{key}: {summary[key]:.0f} MB")
    print(
        f"load average at start: {', '.join(f'{x:.2f}' for x in summary['machine']['loadavg_at_start'])} "
        f"on {summary['machine']['cpus']} CPUs (shared machine: figures vary)"
    )
    for item in summary["goals"]:
        print(f"  [{'met' if item['met'] else 'MISSED'}] {item['goal']}: {item['measured']}")


if __name__ == "__main__":
    sys.exit(main())
