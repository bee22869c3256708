"""Loop benchmark: degraded-KS event → retrain flow run created → Running, and the stack's idle RSS.

    .venv/bin/python -m bench.loop [--repeat 3] [--json out.json]

Starts the embedded stack (Prefect server + worker + deployments, MLflow, PostgreSQL) in a temporary
home on free ports, so it never touches a stack you run yourself. ``modelops up`` applies prefect.yaml,
whose ``retrain`` deployment has an event trigger on ``modelops.performance.degraded``. Each repeat
emits that event (as the ks_check flow does) and polls the Prefect API for the retrain run: the time
until it exists (the automation) and until it is Running (the worker woken by the run's Scheduled
event, or its poll; the hand-over to the engine standby, or a cold process start and the flow's
imports). The worker's first run, which finds no standby yet, is timed and reported on its own; the
repeats follow it, 5 s apart. The run then fails or skips quickly (no model is registered in this fresh
stack): that is fine for this figure. Afterwards the stack
idles a few seconds and the RSS of every component (as ``modelops status`` shows it) and of the waiting
engine standby is summed. The stack is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.report import Row, progress

MODEL = "bench-loop"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
GAP_S = 5.0  # between two events (minutes apart in operation: a KS check per schedule)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stack_environment(home: Path) -> dict[str, str]:
    """Variables that put the stack in ``home`` on free ports, and keep this process's clients on it."""
    return {
        "MODELOPS_STACK__HOME": str(home),
        "MODELOPS_STACK__PREFECT_PORT": str(free_port()),
        "MODELOPS_STACK__MLFLOW_PORT": str(free_port()),
        "MODELOPS_STACK__POSTGRES_PORT": str(free_port()),
        "MODELOPS_SERVING__PORT": str(free_port()),
    }


def busy_cpu_seconds() -> float:
    """CPU-seconds the whole machine has spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _seconds_after(moment: datetime | None, origin: float) -> float | None:
    return None if moment is None else moment.timestamp() - origin


def time_retrain(deployment_id: Any, timeout_s: float = 120.0) -> dict[str, Any]:
    """Emit one degraded event; poll until the retrain run exists, runs, and ends."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    from modelops.integrations.events import emit_model_event

    with get_client(sync_client=True) as client:
        known = {
            r.id
            for r in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
            )
        }
        emitted = time.time()
        emit_model_event("modelops.performance.degraded", MODEL, "1", ks=0.1, threshold=0.3)
        seen_created = seen_running = None
        run = None
        deadline = emitted + timeout_s
        while time.time() < deadline:
            runs = [
                r
                for r in client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
                    )
                )
                if r.id not in known
            ]
            if runs:
                run = runs[0]
                now = time.time()
                seen_created = seen_created or now
                state = run.state.type.value if run.state else ""
                if state in {"RUNNING", *TERMINAL} and seen_running is None:
                    seen_running = now
                if state in TERMINAL:
                    break
            time.sleep(0.05 if seen_running is None else 0.5)
        if run is None:
            raise RuntimeError(
                f"no retrain run within {timeout_s:.0f} s of a modelops.performance.degraded event: "
                "is the retrain-on-degraded-ks trigger in prefect.yaml applied?"
            )
        run = client.read_flow_run(run.id)
    return {
        "flow_run_id": str(run.id),
        "final_state": run.state.name if run.state else None,
        "created_s": _seconds_after(run.created, emitted),  # server timestamps: same machine clock
        "running_s": _seconds_after(run.start_time, emitted),
        "observed_created_s": None if seen_created is None else seen_created - emitted,
        "observed_running_s": None if seen_running is None else seen_running - emitted,
        "total_run_s": run.total_run_time.total_seconds() if run.total_run_time else None,
    }


def standby_rss_bytes(worker_pid: int | None) -> int:
    """The RSS of this worker's waiting engine standbys (one per environment; here one)."""
    from modelops.stack.engine_standby import standby_processes

    total = 0
    for process in standby_processes(worker_pid):
        with contextlib.suppress(Exception):  # gone meanwhile
            total += process.memory_info().rss
    return total


def run(repeat: int = 3, idle_s: float = 5.0) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="modelops-bench-stack-"))
    for name in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MODELOPS_DATABASE_URL"):
        os.environ.pop(name, None)  # the temporary stack's own endpoints, not a configured one
    os.environ.update(stack_environment(home))
    from modelops.config import load_config
    from modelops.stack import use_stack_environment

    config = load_config()
    use_stack_environment(config)  # before Prefect is imported: the stack manager imports it
    from modelops.stack.manager import down, status, up

    result: dict[str, Any] = {
        "home": str(home),
        "worker_query_seconds": config.stack.worker_query_seconds,
        "worker_wakeups": config.stack.worker_wakeups,
    }
    progress(f"loop: starting the embedded stack in {home} (Prefect :{config.stack.prefect_port})")
    started = time.perf_counter()
    busy_before = busy_cpu_seconds()
    try:
        up(config)
        result["up_s"] = time.perf_counter() - started
        result["up_busy_cpu_s"] = busy_cpu_seconds() - busy_before
        progress(f"loop: stack up in {result['up_s']:.1f} s")
        use_stack_environment(config)
        from prefect import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name("retrain/retrain")
        # No wait for the trigger: the server loads an automation as it is written
        # (tests/support/automation.py emits the event the moment `up` returns).
        # The worker's first run starts cold (no standby yet: modelops.stack.engine_standby); in operation
        # the scheduled KS check runs before any degraded event. Timed on its own, then the others.
        first = time_retrain(deployment.id)
        result["first_after_up"] = first
        progress(f"loop: first run after up (cold engine): Running after {first['running_s']:.2f} s")
        attempts = []
        for attempt in range(repeat):
            time.sleep(GAP_S)
            timing = time_retrain(deployment.id)
            attempts.append(timing)
            progress(
                f"loop {attempt + 1}/{repeat}: run created after {timing['created_s']:.2f} s, Running after "
                f"{timing['running_s'] if timing['running_s'] is not None else float('nan'):.2f} s, "
                f"ended {timing['final_state']}"
            )
        result["attempts"] = attempts
        progress(f"loop: idling {idle_s:.0f} s, then summing the stack's RSS")
        time.sleep(idle_s)
        components = status(config)
        result["rss_mb"] = {c.name: c.rss_bytes / 2**20 for c in components}
        worker_pid = next((c.pid for c in components if c.name == "worker"), None)
        result["rss_mb"]["engine-standby"] = standby_rss_bytes(worker_pid) / 2**20
        result["rss_total_mb"] = sum(result["rss_mb"].values())
        result["components_healthy"] = all(c.healthy for c in components)
    finally:
        progress("loop: stopping the stack")
        try:
            down(config)
        finally:
            remove_home(home)
    return result


def remove_home(home: Path) -> None:
    """The temporary stack home, and the PostgreSQL data kept outside it as root (``down`` keeps data)."""
    from modelops.stack.purge import relocated_data

    relocated = relocated_data(home)
    if relocated is not None:
        shutil.rmtree(relocated, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)


def rows(result: dict[str, Any], command: str) -> list[Row]:
    out = []
    attempts = result.get("attempts", [])
    poll = result["worker_query_seconds"]
    created = [a["created_s"] for a in attempts if a["created_s"] is not None]
    running = [a["running_s"] for a in attempts if a["running_s"] is not None]
    first = result.get("first_after_up")
    if first and first["running_s"] is not None:
        out.append(
            Row(
                "loop",
                "degraded event -> retrain run Running, the worker's first run (no engine standby yet)",
                first["running_s"],
                "s",
                goal="(context: cold engine)",
                met=None,
                command=command,
            )
        )
    if created:
        out.append(
            Row(
                "loop",
                f"degraded event -> retrain run created (worst of {len(created)})",
                max(created),
                "s",
                goal="(context: the automation)",
                met=None,
                command=command,
            )
        )
    if result.get("worker_wakeups"):  # the run's Scheduled event wakes the worker: no poll to wait for
        how, floor = (
            f"worker woken by the run's Scheduled event, polls every {poll:g} s as the fallback",
            None,
        )
    else:
        how, floor = f"worker poll {poll:g} s = floor", poll
    out.append(
        Row(
            "loop",
            f"degraded event -> retrain run Running (worst of {len(running)}; {how})",
            max(running) if running else None,
            "s",
            goal="<= 2 s",  # issue #15 (was <= 5 s)
            met=(max(running) <= 2.0) if running and len(running) == len(attempts) else False,
            floor=floor,
            command=command,
            note="" if len(running) == len(attempts) else "a retrain run never reached Running",
        )
    )
    if "rss_total_mb" in result:
        parts = ", ".join(f"{name} {mb:.0f}" for name, mb in result["rss_mb"].items())
        out.append(
            Row(
                "stack",
                "embedded stack RSS, idle (sum of components)",
                result["rss_total_mb"],
                "MB",
                goal="<= 2048 MB",
                met=result["rss_total_mb"] <= 2048,
                command=command,
                note=f"MB per component: {parts}",
            )
        )
    if "up_s" in result:
        out.append(
            Row(
                "stack",
                "modelops up (cold, fresh home)",
                result["up_s"],
                "s",
                goal="<= 15 s",  # issue #15
                met=result["up_s"] <= 15,
                command=command,
            )
        )
    if "up_busy_cpu_s" in result:
        available = (os.cpu_count() or 1) * result["up_s"]
        out.append(
            Row(
                "stack",
                "modelops up: the machine's busy CPU-seconds during it (floor: CPU-seconds it had)",
                result["up_busy_cpu_s"],
                "s",
                goal="(context: near 1.0 = CPU-bound)",
                met=None,
                floor=available,
                command=command,
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="degraded events to time (default 3)")
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds of idling before the RSS (default 5)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    args = parser.parse_args(argv)
    result = run(args.repeat, args.idle)
    for row in rows(result, "python -m bench.loop"):
        print(f"{row.section}/{row.figure}: {row.value} {row.unit}  goal {row.goal}: {row.met}  {row.note}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
