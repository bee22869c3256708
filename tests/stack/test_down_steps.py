"""``down`` stops the MLflow and Prefect servers side by side, and everything else one after the other.

Real processes stand in for the components: each takes a while to exit after SIGTERM, as a server
finishing its shutdown does, and writes when it got the signal and when it exits. The check is on
the order of those events, not on how long ``down`` took.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from modelops.config import ModelOpsConfig
from modelops.stack import components as comp
from modelops.stack.process_identity import start_ticks
from modelops.stack.state import ComponentRecord, StackState, load_state, save_state
from modelops.stack.teardown import down

SLOW_TO_STOP = """
import json, signal, sys, time
out, shutdown_s = sys.argv[1], float(sys.argv[2])
def on_term(signum, frame):
    with open(out, "a") as handle:
        handle.write(json.dumps(["term", time.time()]) + "\\n")
    time.sleep(shutdown_s)  # a graceful shutdown
    with open(out, "a") as handle:
        handle.write(json.dumps(["exit", time.time()]) + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(out, "a") as handle:
    handle.write(json.dumps(["ready", time.time()]) + "\\n")
while True:
    time.sleep(0.05)
"""


# The servers take long enough that a busy machine still overlaps their shutdowns; the worker stops
# within `down`'s first wait for it (1.5 s), as Prefect's worker is not given more.
SHUTDOWN_S = {comp.WORKER: 0.3, comp.MLFLOW: 2.0, comp.PREFECT_SERVER: 2.0}


def _start(name: str, folder: Path) -> tuple[subprocess.Popen, Path]:
    events = folder / f"{name}.events"
    command = [sys.executable, "-c", SLOW_TO_STOP, str(events), str(SHUTDOWN_S[name])]
    process = subprocess.Popen(command, start_new_session=True)
    deadline = time.monotonic() + 60
    while not events.exists() or "ready" not in events.read_text():
        assert time.monotonic() < deadline and process.poll() is None, f"{name} did not start"
        time.sleep(0.05)
    return process, events


def _times(events: Path) -> dict[str, float]:
    return {kind: at for kind, at in map(json.loads, events.read_text().splitlines())}


def test_the_two_servers_stop_side_by_side_and_the_worker_before_them(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    names = (comp.WORKER, comp.MLFLOW, comp.PREFECT_SERVER)
    processes = {name: _start(name, tmp_path) for name in names}
    state = StackState(home=str(home))
    for name, (process, _events) in processes.items():
        state.components[name] = ComponentRecord(
            name, url="", pid=process.pid, start_ticks=start_ticks(process.pid)
        )
    save_state(state)
    lines: list[str] = []
    try:
        stopped = down(ModelOpsConfig(stack={"home": str(home)}), lines.append)
    finally:
        for process, _events in processes.values():
            process.kill()
            process.wait()
    assert stopped == list(names)
    assert load_state(home) is None
    worker, mlflow, prefect = (_times(processes[name][1]) for name in names)
    assert worker["exit"] <= min(mlflow["term"], prefect["term"])  # the worker first, alone
    assert mlflow["term"] < prefect["exit"] and prefect["term"] < mlflow["exit"]  # overlapping shutdowns
    stop_lines = [line.split(":")[0] for line in lines if ": stopped pid" in line]
    assert stop_lines == list(names)  # printed in the order of the steps, whichever finished first


def test_the_steps_stop_every_component_once_in_reverse_start_order():
    flat = [name for step in comp.STOP_STEPS for name in step]
    assert sorted(flat) == sorted(comp.ORDER) and len(flat) == len(set(flat))
    later_first = [name for name in reversed(comp.ORDER) if name not in (comp.MLFLOW, comp.PREFECT_SERVER)]
    assert [name for name in flat if name in later_first] == later_first
