"""The serving benchmark's floor: the SavedModel's signature called in-process, no JSON, no HTTP.

    .venv/bin/python -m bench.serving_floor MODEL_DIR RECORDS_JSON [--threads 1] [--duration 5]

Run by :mod:`bench.serving` in its own process, for two reasons: TensorFlow's thread counts must be
set before TensorFlow runs anything, and the process's peak RSS is reported as the floor of the
serving process's RSS, so it imports only what the server's own inference path imports. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from modelops.serving.predict_request import parse_predict_request
from modelops.serving.repository import load_version
from modelops.serving.server import configure_tensorflow


def floor(model_dir: Path, records_file: Path, threads: int, seconds: float) -> dict[str, Any]:
    configure_tensorflow(threads, threads)
    version = load_version(model_dir, 1)
    runner = version.signatures["serving_default"]
    records = json.loads(records_file.read_text())
    specs = version.inputs_by_signature

    def columns(batch: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        return parse_predict_request({"instances": batch}, specs, 4096).columns

    singles = [columns([r]) for r in records[:256]]
    for cols in singles[:50]:
        runner(cols)
    latencies = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        runner(singles[i % len(singles)])
        latencies.append(time.perf_counter() - started)
        i += 1
    batches = [columns(records[s : s + 64]) for s in range(0, len(records) - 63, 64)]
    rows, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        runner(batches[rows // 64 % len(batches)])
        rows += 64
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "batch1_p50_ms": 1000 * latencies[len(latencies) // 2],
        "batch1_p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "batch1_calls_per_s": len(latencies) / sum(latencies),
        "batch64_rows_per_s": rows / elapsed,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("records_json", type=Path)
    parser.add_argument("--threads", type=int, default=1, help="TF intra/inter-op threads")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measure")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(floor(args.model_dir, args.records_json, args.threads, args.duration)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
