"""The stack's Python API and helpers that need no running stack (fast)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from modelops.config import load_config
from modelops.stack import Endpoints, StackNotRunning, endpoints, use_stack_environment
from modelops.stack.process_identity import start_ticks
from modelops.stack.processes import find_process, port_in_use, spawn, stop_tree
from modelops.stack.state import (
    ComponentRecord,
    StackState,
    load_state,
    remove_state,
    save_state,
    state_path,
)


def _config(tmp_path, **extra: str):
    environ = {"MODELOPS_STACK__HOME": str(tmp_path), **extra}
    return load_config(environ=environ)


def test_endpoints_without_stack_or_dsn_names_the_fix(tmp_path):
    with pytest.raises(StackNotRunning, match="modelops up"):
        endpoints(_config(tmp_path))


def test_endpoints_prefer_the_configured_dsn(tmp_path):
    dsn = "postgresql://someone@127.0.0.1:5432/scoring"
    ends = endpoints(_config(tmp_path, MODELOPS_DATABASE_URL=dsn, MODELOPS_STACK__PREFECT_PORT="4321"))
    assert ends == Endpoints(
        prefect_api_url="http://127.0.0.1:4321/api",
        prefect_ui_url="http://127.0.0.1:4321",
        mlflow_uri="http://127.0.0.1:5000",
        database_url=dsn,
    )


def test_endpoints_read_the_embedded_dsn_from_the_state_file(tmp_path):
    config = _config(tmp_path)
    save_state(StackState(home=str(tmp_path), database_url="postgresql://postgres@127.0.0.1:6543/modelops"))
    assert endpoints(config).database_url == "postgresql://postgres@127.0.0.1:6543/modelops"


def test_use_stack_environment_keeps_variables_already_set(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere:1/api")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    use_stack_environment(_config(tmp_path, MODELOPS_STACK__MLFLOW_PORT="5999"))
    assert os.environ["PREFECT_API_URL"] == "http://elsewhere:1/api"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"


def test_state_round_trip_and_removal(tmp_path):
    state = StackState(home=str(tmp_path), database_url="postgresql://x@127.0.0.1:1/db")
    state.components["mlflow"] = ComponentRecord(
        name="mlflow", url="http://127.0.0.1:1", pid=12, start_ticks=3500
    )
    save_state(state)
    assert load_state(tmp_path) == state
    remove_state(tmp_path)
    assert load_state(tmp_path) is None


def test_port_in_use_sees_a_listener():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_stop_tree_stops_a_process_that_ignores_the_first_sigterm(tmp_path):
    """Like a Prefect worker: ignores one SIGTERM, and has a child in another session."""
    script = (
        "import signal, subprocess, sys, time\n"
        "hits = []\n"
        "signal.signal(signal.SIGTERM, lambda *a: hits.append(1))\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    process = spawn([sys.executable, "-c", script], env={"PATH": "/usr/bin:/bin"}, log=tmp_path / "p.log")
    deadline = time.monotonic() + 60
    while not process.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = process.children()[0]
    stop_tree(process, grace_s=1.0)
    gone, alive = psutil.wait_procs([process, child], timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert find_process(process.pid, None) is None


def test_find_process_ignores_a_recycled_pid():
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as popen:
        real = start_ticks(popen.pid)
        assert real is not None
        assert find_process(popen.pid, real) is not None
        assert find_process(popen.pid, real - 100) is None
        popen.kill()


def test_a_live_process_is_still_found_when_the_wall_clock_moves(monkeypatch):
    """NTP moving the clock moves /proc/stat's boot time by whole seconds, and psutil's create_time()
    with it (a CI run saw `modelops up` call a worker that had just started "exited during startup")."""
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as popen:
        try:
            recorded = start_ticks(popen.pid)
            booted = psutil.boot_time()
            monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 1.0)  # the clock moved
            assert psutil.Process(popen.pid).create_time() != pytest.approx(
                booted + recorded / os.sysconf("SC_CLK_TCK"), abs=0.5
            )
            assert find_process(popen.pid, recorded) is not None
        finally:
            popen.kill()


def test_a_state_file_from_before_start_ticks_still_names_its_processes(tmp_path):
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as popen:
        try:
            created = psutil.Process(popen.pid).create_time()
            legacy = {"name": "worker", "url": "http://127.0.0.1:1", "pid": popen.pid, "create_time": created}
            state_path(tmp_path).write_text(
                json.dumps({"home": str(tmp_path), "components": {"worker": legacy}})
            )
            record = load_state(tmp_path).components["worker"]
            assert record.start_ticks == start_ticks(popen.pid)
            assert find_process(record.pid, record.start_ticks) is not None
        finally:
            popen.kill()
