"""The retrain automation checked on a fresh stack: a ``degraded`` event sent the moment ``modelops up``
returns must launch the retrain deployment's run, through the process pool's command.

Prefect's server loads an automation asynchronously to the API call that writes it (on PostgreSQL, by
NOTIFY to its trigger service; on SQLite, after the commit), so ``up``'s deployment step ends by
probing that the server acts on events for its automations (:mod:`modelops.stack.automations_ready`).
:func:`check_retrain_launched_right_after_up` holds ``up`` to that. When no run comes, the failure shows
what the server stored: the event, and the automations' own events (a failed action says why).

The run's process is the process pool's command that ``up`` sets (``modelops.stack.engine_standby``),
never Prefect's workspace supervisor, which would import Prefect once more before the run is Running:
the first run on the worker becomes ``python -m prefect.engine`` (cold), the next one is handed to the
standby that the first one started, and ends the same way.

The stack needs the project's ``prefect.yaml`` (the retrain deployment and its trigger), no scheduled
ks-check (``NO_SCHEDULED_CHECK``) and ``MODELOPS_ENGINE_STANDBY_DIR`` set to a folder of its own.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from support import http_client
from support.stack import wait_for

LAUNCHER = [sys.executable, "-m", "modelops.stack.engine_standby"]  # the process pool's command
ENGINE = [sys.executable, "-m", "prefect.engine"]
EMIT = (
    "import sys\n"
    "from modelops.integrations.events import emit_model_event\n"
    "emit_model_event('modelops.performance.degraded', sys.argv[1], '3', ks=0.12, threshold=0.3)\n"
)
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def check_retrain_launched_right_after_up(env: dict[str, str], standby_dir: Path) -> None:
    """Call right after ``up`` returned: the event's retrain runs cold, the next one on the standby."""
    api = f"http://127.0.0.1:{env['MODELOPS_STACK__PREFECT_PORT']}/api"
    model = f"auto-{uuid.uuid4().hex[:8]}"
    emit_degraded(env, api, model)
    run = wait_for_retrain(api, model, "the retrain run the event launches")
    assert run["parameters"]["triggered_version"] == "3"
    assert float(run["parameters"]["ks"]) == pytest.approx(0.12)

    # The first run on this worker starts cold: the pool's command (the launcher) execs the engine.
    commands, first_state = flow_run_processes(api, run["id"], timeout_s=120)
    assert ENGINE in commands, commands
    assert not [c for c in commands if "prefect.runner._workspace_supervisor" in c], commands

    # The next one goes to the standby it started (Prefect and the flows imported already).
    wait_for(lambda: any(standby_dir.glob("*.sock")), 120, "a warm standby for the worker")
    second_model = f"{model}-2"
    emit_degraded(env, api, second_model)
    second = wait_for_retrain(api, second_model, "the second retrain run")
    commands, second_state = flow_run_processes(api, second["id"], timeout_s=120)
    assert commands == [LAUNCHER], commands  # the launcher never became the engine itself
    assert second_state == first_state
    worker_log = (Path(env["MODELOPS_STACK__HOME"]) / "logs" / "worker.log").read_text()
    assert f"runs flow run {second['id']}" in worker_log


def assert_no_standby_left(standby_dir: Path) -> None:
    """After ``down``: no standby process (the one that forked the second run still waited), no file."""
    commands = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [c for c in commands if str(standby_dir) in c]
    assert not list(standby_dir.iterdir())


def emit_degraded(env: dict[str, str], api: str, model: str) -> None:
    emitted = subprocess.run(
        [sys.executable, "-c", EMIT, model],
        env={**env, "PREFECT_API_URL": api},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert emitted.returncode == 0, emitted.stderr


def wait_for_retrain(api: str, model: str, what: str) -> dict:
    """The retrain run for ``model``; when none comes, the failure says what the server saw: whether the
    event arrived, and each automation event since (an action that failed carries its reason)."""
    try:
        return wait_for(lambda: retrain_run(api, model), 120, what, interval=0.5)
    except AssertionError as missing:
        raise AssertionError(f"{missing}\n{server_view(api, model)}") from None


def server_view(api: str, model: str) -> str:
    lines = []
    for name, prefix in (
        ("the degraded event", "modelops.performance."),
        ("automation events", "prefect.automation."),
    ):
        body = {"filter": {"event": {"prefix": [prefix]}, "order": "ASC"}, "limit": 50}
        try:
            events = http_client.post(f"{api}/events/filter", json=body, timeout=30).json()["events"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            lines.append(f"{name}: could not read ({exc!r})")
            continue
        lines.append(f"{name} (stored, {len(events)}):")
        lines += [
            f"  {e['occurred']} {e['event']} {e['resource'].get('prefect.resource.name')} {e.get('payload')}"
            for e in events
            if prefix != "modelops.performance." or e["resource"].get("prefect.resource.name") == model
        ]
    return "\n".join(lines)


def retrain_run(api: str, model: str) -> dict | None:
    body = {"deployments": {"name": {"any_": ["retrain"]}}, "limit": 10}
    runs = http_client.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
    return next((r for r in runs if r["parameters"].get("model_name") == model), None)


def flow_run_processes(api: str, flow_run_id: str, timeout_s: float) -> tuple[list[list[str]], str]:
    """Every command line seen, until the run ends, of the processes the worker started for this flow
    run, and the state it ended in.

    A process belongs to the run when its environment holds ``PREFECT__FLOW_RUN_ID=<id>`` (the worker
    sets it) and its parent's does not: the run's own children inherit the variable (Python's
    ``platform.processor()`` runs ``uname -p``, for one) but were not started by the worker. Sampled
    every 50 ms, so a process that execs another command is seen as both.
    """
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    seen: list[list[str]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in psutil.process_iter():
            try:
                if not _carries(process.pid, marker) or _carries(process.ppid(), marker):
                    continue
                command = process.cmdline()
            except (OSError, psutil.Error):
                continue  # gone, or not ours to read
            if command and command not in seen:
                seen.append(command)
        state = http_client.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()["state"]["type"]
        if state in FINAL:
            return seen, state
        time.sleep(0.05)
    raise AssertionError(
        f"flow run {flow_run_id} did not end within {timeout_s:.0f} s; processes seen: {seen}"
    )


def _carries(pid: int, marker: bytes) -> bool:
    """Whether the process's environment holds ``marker`` (raises OSError when it is gone or not ours)."""
    with open(f"/proc/{pid}/environ", "rb") as environ:
        return marker in environ.read().split(b"\0")
