"""gRPC load from nghttp2's ``h2load`` (``apt-get install -y nghttp2-client``): a native client, as wrk is
for REST, so the figures are the server's and not a Python client's.

A gRPC unary call is an HTTP/2 POST to ``/<service>/<method>`` with ``content-type: application/grpc``
and ``te: trailers`` whose body is one length-prefixed message (:func:`frame`). ``h2load`` sends the
same framed ``PredictRequest`` (written by :mod:`bench.grpc_load` ``--save-body``) over one HTTP/2
connection, ``in_flight`` streams at a time, and logs every answer's latency.

``h2load`` sees HTTP statuses only, and a gRPC error is an HTTP 200 whose trailers carry
``grpc-status``: the caller checks the answers another way (:mod:`bench.serving` compares the rows the
server says it scored with the calls h2load counted; the echo server answers nothing but the real
answer's bytes).
"""

from __future__ import annotations

import resource
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
INSTALL_HINT = "h2load is not installed: apt-get install -y nghttp2-client"
WARM_UP_CALLS = 20


def frame(message: bytes) -> bytes:
    """One gRPC message on the wire: not compressed (0), its length (4 bytes, big-endian), the bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def available() -> bool:
    return shutil.which("h2load") is not None


def warm_up(target: str, body_file: Path) -> None:
    """:data:`WARM_UP_CALLS` calls, one at a time, in a run of their own (not counted by :func:`load`)."""
    _h2load(target, body_file, 1, ["-n", str(WARM_UP_CALLS)], None)


def load(target: str, body_file: Path, in_flight: int, seconds: float) -> dict[str, Any]:
    """``in_flight`` Predict calls at a time on one connection for ``seconds``, in wrk's summary shape
    plus ``client_cpu_s`` (h2load's CPU). Every call the summary counts was sent in this run."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as scratch:
        log = Path(scratch) / "requests.tsv"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        output = _h2load(target, body_file, in_flight, ["-D", f"{seconds:g}"], log)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # one line per answer: start (us since the epoch), HTTP status, microseconds until its end
        answers = [line.split("\t") for line in log.read_text().splitlines() if line]
    summary = summarize(output, [(int(status), float(us)) for _, status, us in answers])
    summary["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summary


def _h2load(target: str, body_file: Path, in_flight: int, run: list[str], log: Path | None) -> str:
    if not available():
        raise RuntimeError(INSTALL_HINT)
    command = [
        "h2load",
        "-c", "1",
        "-t", "1",
        "-m", str(in_flight),
        *run,
        "-d", str(body_file),
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        *(["--log-file", str(log)] if log else []),
        f"http://{target}{PREDICT_PATH}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"h2load failed ({result.returncode}): {(result.stderr or result.stdout)[-2000:]}")
    return result.stdout


def summarize(output: str, answers: list[tuple[int, float]]) -> dict[str, Any]:
    """wrk's summary shape from h2load's report (duration, failures) and its per-answer log."""
    duration_s = _finished_in(output)
    latencies = sorted(us for status, us in answers if status == 200)
    failed = _failures(output)
    count = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(count - 1, int(count * p / 100))] if latencies else 0.0

    return {
        "requests": count,
        "duration_us": int(duration_s * 1e6),
        "errors": failed,
        "status_errors": len(answers) - count,
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "max_us": latencies[-1] if latencies else 0.0,
        "mean_us": sum(latencies) / max(1, count),
    }


def _finished_in(output: str) -> float:
    """``finished in 5.00s, 496.40 req/s, ...`` -> 5.0 (h2load prints ms or s)."""
    for line in output.splitlines():
        if line.startswith("finished in "):
            value = line[len("finished in ") :].split(",")[0].strip()
            if value.endswith("ms"):
                return float(value[:-2]) / 1000
            if value.endswith("s"):
                return float(value[:-1])
    raise RuntimeError(f"h2load printed no 'finished in' line:\n{output[-2000:]}")


def _failures(output: str) -> int:
    """``requests: N total, N started, N done, N succeeded, F failed, E errored, T timeout`` -> F+E+T."""
    for line in output.splitlines():
        if line.startswith("requests:"):
            parts = dict(
                (words[1], int(words[0]))
                for words in (item.split() for item in line[len("requests:") :].split(","))
            )
            return parts.get("failed", 0) + parts.get("errored", 0) + parts.get("timeout", 0)
    raise RuntimeError(f"h2load printed no 'requests:' line:\n{output[-2000:]}")
