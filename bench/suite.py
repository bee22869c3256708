"""The benchmark suite: every figure next to its floor, in one run, as one table (and JSON).

    modelops bench [--quick] [--only serving,shipping,ks,loop,stack] [--repeat 3]
                   [--out bench/results/<date>.json]
    .venv/bin/python -m bench.suite [same options]

Sections (each reproducible on its own with the command shown in its rows):

* ``serving``  — bench.serving: the local TF-Serving-compatible server (wrk load) vs calling the
  SavedModel signature in-process, batching on/off, batch 64 (REST, and gRPC from h2load:
  bench.grpc_h2load), RSS, ``mlflow models serve`` as peer;
* ``shipping`` — bench.log_shipping: spool files → PostgreSQL by the sidecar vs a raw COPY;
* ``ks``       — bench.ks_window: the ks_check flow's window read + KS vs binary COPY + NumPy KS,
  at 10 k … 1 M (10 M without ``--quick``) rows, with the EXPLAIN of the window queries;
* ``loop``     — bench.loop: degraded-KS event → retrain run created → Running on a fresh stack;
* ``stack``    — the same stack's idle RSS (sum of components, as ``modelops status``).

A section that fails becomes a row that says so; the others still run. With ``--repeat N`` the
suite runs N times and each figure is the median of its N values, with the spread (min..max) and
the number of runs that met its goal; every run's own rows stay in the JSON (``sections.runs``).
``python -m bench.readme_table RESULTS.json`` writes the README's table from that JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import drift_loop, ks_window, log_shipping, loop, serving
from bench.report import Report, Row, median_report, progress

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("serving", "shipping", "ks", "loop", "stack")
SERVER_DSN = os.environ.get("MODELOPS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True)
class Sizes:
    serving_seconds: float
    shipping_rows: int
    shipping_repeat: int
    ks_scales: tuple[int, ...]
    ks_repeat: int
    loop_repeat: int

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(3.0, 50_000, 2, (10_000, 100_000, 1_000_000), 3, 2)
        return cls(5.0, 200_000, 3, (10_000, 100_000, 1_000_000, 10_000_000), 3, 5)

    @classmethod
    def tiny(cls) -> Sizes:
        """For the smoke test of the report format: seconds, not minutes; figures meaningless."""
        return cls(1.0, 2_000, 1, (1_000, 5_000), 1, 1)


@dataclass
class Options:
    sizes: Sizes
    only: tuple[str, ...] = SECTIONS
    model_base_path: Path | None = None
    database_url: str = SERVER_DSN
    mlflow_peer: bool = True
    demo_loop: bool = False
    workdir: Path | None = None
    repeat: int = 1  # runs of the whole suite; each figure is the median


# -- sections --------------------------------------------------------------------------------------


def serving_section(options: Options, report: Report) -> list[Row]:
    seconds = options.sizes.serving_seconds
    command = f"python -m bench.serving --duration {seconds:g}" + (
        " --mlflow-peer" if options.mlflow_peer else ""
    )
    if options.model_base_path:
        command += f" --model-base-path {options.model_base_path}"
    missing = [tool for tool in ("wrk", "h2load") if shutil.which(tool) is None]
    if missing:
        return [
            Row(
                "serving",
                "serving benchmark",
                None,
                "",
                goal="wrk and h2load installed",
                met=False,
                command=command,
                note=f"not installed: {', '.join(missing)} (the load generators); run "
                "scripts/install-bench-tools.sh (apt-get install -y wrk nghttp2-client)",
            )
        ]
    workdir = Path(tempfile.mkdtemp(prefix="modelops-bench-serving-", dir=options.workdir))
    try:
        summary = serving.run(
            workdir,
            duration=seconds,
            model_base_path=options.model_base_path,
            with_mlflow_peer=options.mlflow_peer,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.sections["serving"] = summary
    return serving_rows(summary, command)


def _scenario(summary: dict[str, Any], name: str, batch: int, connections: int) -> dict[str, Any] | None:
    return next(
        (
            s
            for s in summary["scenarios"]
            if s["scenario"] == name and s["batch"] == batch and s["connections"] == connections
        ),
        None,
    )


def serving_rows(summary: dict[str, Any], command: str) -> list[Row]:
    floor = summary["floor"]
    on1 = _scenario(summary, "modelops batching on", 1, 1)
    on16 = _scenario(summary, "modelops batching on", 1, 16)
    off16 = _scenario(summary, "modelops batching off", 1, 16)
    on64 = _scenario(summary, "modelops batching on", 64, 1)
    grpc64 = _scenario(summary, serving.GRPC_SCENARIO, 64, 1)
    grpc64x4 = _scenario(summary, serving.GRPC_SCENARIO, 64, 4)
    ceiling = _scenario(summary, "HTTP ceiling: GET /-/stats (no model)", 1, 16)
    rows: list[Row] = []

    def add(figure: str, value: float | None, unit: str, goal: str, met: bool | None, **extra: Any) -> None:
        rows.append(Row("serving", figure, value, unit, goal=goal, met=met, command=command, **extra))

    if on1:
        limit = floor["batch1_p50_ms"] + serving.P50_OVER_FLOOR_MS
        add(
            "batch-1, 1 conn: p50 (floor: in-process signature call)",
            on1["p50_ms"],
            "ms",
            f"<= floor + {serving.P50_OVER_FLOOR_MS} ms ({limit:.2f})",
            on1["p50_ms"] <= limit,
            floor=floor["batch1_p50_ms"],
        )
        add("batch-1, 1 conn: p99", on1["p99_ms"], "ms", "(context)", None, floor=floor["batch1_p99_ms"])
    if on16 and off16:
        ratio = on16["records_per_s"] / off16["records_per_s"]
        add(
            "batch-1, 16 conn: rec/s batching on (floor: batching off)",
            on16["records_per_s"],
            "rec/s",
            f">= {serving.BATCHING_GAIN:g}x off and >= {serving.BATCHING_RECORDS_PER_S:,} rec/s",
            ratio >= serving.BATCHING_GAIN and on16["records_per_s"] >= serving.BATCHING_RECORDS_PER_S,
            floor=off16["records_per_s"],
        )
    if on16:
        add(
            "batch-1, 16 conn: p99, batching on",
            on16["p99_ms"],
            "ms",
            f"<= {serving.P99_16CONN_MS:g} ms",
            on16["p99_ms"] <= serving.P99_16CONN_MS,
        )
    if on64:
        add(
            "batch-64, 1 conn: rec/s (floor: in-process batch-64)",
            on64["records_per_s"],
            "rec/s",
            f">= {serving.BATCH64_SHARE:g}x floor",
            on64["records_per_s"] >= serving.BATCH64_SHARE * floor["batch64_rows_per_s"],
            floor=floor["batch64_rows_per_s"],
        )
    grpc_ceiling = serving.grpc_ceiling(floor, summary["scenarios"])
    if grpc64:
        add(
            "batch-64 over gRPC, 1 call in flight: rec/s (floor: in-process batch-64)",
            grpc64["records_per_s"],
            "rec/s",
            f">= {serving.GRPC64_SHARE:g}x floor",
            grpc64["records_per_s"] >= serving.GRPC64_SHARE * floor["batch64_rows_per_s"],
            floor=floor["batch64_rows_per_s"],
            note=f"server CPU {grpc64['server_cpu_us_per_request']:.0f} us per request",
        )
    if grpc_ceiling is not None:
        add(
            "batch-64 over gRPC: the most the transport alone allows (echo round trip + the floor's call)",
            grpc_ceiling * floor["batch64_rows_per_s"],
            "rec/s",
            "(context: the gRPC goal's ceiling here)",
            None,
            floor=floor["batch64_rows_per_s"],
            note=f"{grpc_ceiling:.2f}x the floor; bench.grpc_echo, its fastest server (own, aio, sync)",
        )
    if grpc64x4:
        add(
            "batch-64 over gRPC, 4 calls in flight on one channel: rec/s (floor: in-process batch-64)",
            grpc64x4["records_per_s"],
            "rec/s",
            "(context)",
            None,
            floor=floor["batch64_rows_per_s"],
        )
    for connections in (8, 16):
        peer = _scenario(summary, "mlflow models serve", 1, connections)
        if on16 and peer:
            add(
                f"batch-1: ours at 16 conn vs mlflow models serve at {connections} conn (floor)",
                on16["records_per_s"],
                "rec/s",
                f">= {serving.MLFLOW_GAIN:g}x peer",
                on16["records_per_s"] >= serving.MLFLOW_GAIN * peer["records_per_s"],
                floor=peer["records_per_s"],
                note=f"mlflow p99 {peer['p99_ms']:.1f} ms at {connections} conn",
            )
    if "rss_mb_modelops" in summary:
        add(
            "RSS of one serving process (floor: in-process signature benchmark)",
            summary["rss_mb_modelops"],
            "MB",
            "(context)",
            None,
            floor=floor.get("max_rss_mb"),
        )
    if "rss_mb_mlflow" in summary:
        add(
            "RSS of mlflow models serve (1 worker, process tree)",
            summary["rss_mb_mlflow"],
            "MB",
            "(context)",
            None,
        )
    if on16:
        add(
            "load generator: wrk CPU per request at 16 conn (floor: server CPU per request)",
            on16["wrk_cpu_us_per_request"],
            "us",
            "(context: wrk overhead)",
            None,
            floor=on16.get("server_cpu_us_per_request"),
        )
    if ceiling:
        add(
            "HTTP ceiling: GET /-/stats req/s at 16 conn (no model)",
            ceiling["requests_per_s"],
            "req/s",
            "(context)",
            None,
        )
    return rows


def shipping_section(options: Options, report: Report) -> list[Row]:
    sizes = options.sizes
    command = f"python -m bench.log_shipping --rows {sizes.shipping_rows} --repeat {sizes.shipping_repeat}"
    result = log_shipping.run(sizes.shipping_rows, sizes.shipping_repeat, database_url=options.database_url)
    report.sections["shipping"] = result
    shipped, raw = result["shipped_rows_per_s"], result["raw_copy_rows_per_s"]
    return [
        Row(
            "shipping",
            f"sidecar spool -> PostgreSQL, {result['rows']:,} rows (floor: raw COPY)",
            shipped,
            "rows/s",
            goal=">= 0.5x floor and >= 40,000 rows/s",
            met=shipped >= 0.5 * raw and shipped >= 40_000,
            floor=raw,
            command=command,
        ),
        Row(
            "shipping",
            f"fetch_labelled_scores of {result['fetched_rows']:,} rows",
            result["fetch_labelled_scores_s"],
            "s",
            goal="(context)",
            met=None,
            command=command,
        ),
    ]


def ks_section(options: Options, report: Report) -> list[Row]:
    sizes = options.sizes
    scales = ",".join(str(s) for s in sizes.ks_scales)
    command = f"python -m bench.ks_window --scales {scales} --repeat {sizes.ks_repeat}"
    result = ks_window.run(list(sizes.ks_scales), sizes.ks_repeat, options.database_url)
    report.sections["ks"] = result
    return ks_window.rows(result, command)


def loop_and_stack_section(options: Options, report: Report) -> list[Row]:
    """One fresh stack for both: the loop timing, then its idle RSS. Own process: its environment
    (ports, home, PREFECT_API_URL) must be set before Prefect is imported."""
    repeat = options.sizes.loop_repeat
    command = f"python -m bench.loop --repeat {repeat}"
    result = _run_module("bench.loop", "--repeat", str(repeat))
    report.sections["loop"] = result
    rows = loop.rows(result, command)
    if options.demo_loop and "loop" in options.only:
        demo = _run_module("bench.drift_loop")
        report.sections["drift_loop"] = demo
        return [r for r in rows if r.section in options.only] + drift_loop.rows(
            demo, "python -m bench.drift_loop"
        )
    rows.append(
        Row(
            "loop",
            "drift onset in replayed traffic -> challenger registered",
            None,
            "s",
            goal="<= 180 s",
            met=None,
            command="modelops demo --auto-approve",
            note="not measured (the whole demo loop, minutes of CPU): add --demo-loop, "
            "or read it from the timeline `modelops demo` prints",
        )
    )
    return [r for r in rows if r.section in options.only]


def _run_module(module: str, *arguments: str) -> dict[str, Any]:
    """Run ``python -m module ... --json F`` in its own process (a stack's environment, Prefect
    imported afresh); its output goes to the terminal; returns the JSON it wrote."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        completed = subprocess.run(
            [sys.executable, "-m", module, *arguments, "--json", str(out)],
            cwd=PROJECT_ROOT,
            env=dict(os.environ, PYTHONPATH=_pythonpath()),
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"python -m {module} {' '.join(arguments)} exited with {completed.returncode} (output above)"
            )
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return str(PROJECT_ROOT) + (os.pathsep + existing if existing else "")


SECTION_RUNNERS: dict[str, Callable[[Options, Report], list[Row]]] = {
    "serving": serving_section,
    "shipping": shipping_section,
    "ks": ks_section,
    "loop+stack": loop_and_stack_section,
}


def run_suite(options: Options) -> Report:
    report = Report()
    progress(
        f"benchmark suite: {', '.join(options.only)} on {report.machine['cpus']} CPUs "
        f"(load average {', '.join(str(x) for x in report.machine['loadavg_at_start'])})"
    )
    for name, runner in SECTION_RUNNERS.items():
        if not any(part in options.only for part in name.split("+")):
            continue
        started = time.perf_counter()
        progress(f"== {name}")
        try:
            report.add(runner(options, report))
        except Exception as exc:  # one broken section must not hide the others' figures
            traceback.print_exc()
            report.sections.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            report.add(
                [
                    Row(
                        name.split("+")[0],
                        f"{name} section",
                        None,
                        "",
                        goal="runs",
                        met=False,
                        note=f"failed: {type(exc).__name__}: {exc}",
                    )
                ]
            )
        progress(f"== {name} done in {time.perf_counter() - started:.0f} s")
    return report


def default_out() -> Path:
    return PROJECT_ROOT / "bench" / "results" / f"{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%SZ')}.json"


def parse_only(text: str | None) -> tuple[str, ...]:
    if not text:
        return SECTIONS
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in SECTIONS]
    if unknown:
        raise ValueError(
            f"--only {text!r}: unknown section(s) {', '.join(unknown)}; choose from {','.join(SECTIONS)}"
        )
    return chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and shorter runs (no 10 M-row KS)"
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="SECTIONS",
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the suite N times; each figure is the median, with the spread (default 1)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results file (default bench/results/<UTC date-time>.json)",
    )
    parser.add_argument(
        "--model-base-path",
        type=Path,
        default=None,
        help="serving: a TF Serving base path (numbered versions) instead of training a model",
    )
    parser.add_argument(
        "--database-url",
        default=SERVER_DSN,
        help="shipping/ks: a PostgreSQL server DSN; a scratch database is made and dropped",
    )
    parser.add_argument(
        "--no-mlflow-peer", action="store_true", help="serving: skip the mlflow models serve peer"
    )
    parser.add_argument(
        "--demo-loop",
        action="store_true",
        help="loop: also run `modelops demo` on a fresh stack for drift onset -> challenger (minutes)",
    )


def options_from(args: argparse.Namespace) -> Options:
    if args.repeat < 1:
        raise ValueError(f"--repeat {args.repeat}: run the suite at least once")
    return Options(
        repeat=args.repeat,
        sizes=Sizes.for_run(args.quick),
        only=parse_only(args.only),
        model_base_path=args.model_base_path,
        database_url=args.database_url,
        mlflow_peer=not args.no_mlflow_peer,
        demo_loop=args.demo_loop,
    )


def run_and_write(options: Options, out: Path | None) -> Report:
    reports = []
    for attempt in range(options.repeat):
        if options.repeat > 1:
            progress(f"==== run {attempt + 1} of {options.repeat}")
        reports.append(run_suite(options))
    report = reports[0] if options.repeat == 1 else median_report(reports)
    path = report.write(out or default_out())
    print()
    print(report.table())
    print(f"\nresults written to {path}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        options = options_from(args)
    except ValueError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    run_and_write(options, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
