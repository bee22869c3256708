"""`modelops up` starts the worker and the supervisor beside the servers; what keeps that safe.

* the worker process (:mod:`modelops.stack.worker_process`) runs ``prefect worker start`` only once its
  work pool exists (else the worker would make the pool with Prefect's default job template), or once
  the deployment step has reported without making it;
* the supervisor leaves the worker and the model servers alone while ``up``/``down`` hold the stack
  lock, and only writes its heartbeat, so it never races ``up`` restoring what served.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL

from modelops.config import PROJECT_ROOT, load_config
from modelops.integrations.prefect_client import prefect_client
from modelops.stack import components as comp
from modelops.stack.state import StackState, save_state
from modelops.stack.supervisor import Supervisor
from modelops.stack.worker_process import pool_exists, wait_for_pool


@pytest.fixture
def api_url(prefect_harness) -> str:
    return str(PREFECT_API_URL.value()).rstrip("/")


def _create_pool(name: str) -> None:
    with prefect_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def test_the_worker_waits_for_its_pool_then_goes(api_url):
    pool = f"early-{time.monotonic_ns()}"
    assert not pool_exists(api_url, pool)
    found: list[bool] = []
    waiter = threading.Thread(target=lambda: found.append(wait_for_pool(api_url, pool, timeout_s=120)))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()  # no pool yet: still waiting
    _create_pool(pool)
    waiter.join(30)
    assert found == [True]


def test_the_worker_stops_waiting_when_the_deployment_step_reported_without_the_pool(api_url, tmp_path):
    report = tmp_path / "deployments.json"
    found: list[bool] = []
    started = time.monotonic()
    waiter = threading.Thread(
        target=lambda: found.append(wait_for_pool(api_url, "never-made", timeout_s=120, unless=report))
    )
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive()
    report.write_text(json.dumps({"applied": [], "failed": {"x": "broken"}}))
    waiter.join(30)
    assert found == [False] and time.monotonic() - started < 60


def test_the_deployment_step_reports_a_work_pool_it_could_not_make(tmp_path):
    """Its report is what tells a waiting worker to go: it is written when the pool fails too."""
    report = tmp_path / "deployments.json"
    env = dict(
        os.environ,
        PREFECT_API_URL="http://127.0.0.1:9/api",  # nothing listens there
        PREFECT_CLIENT_MAX_RETRIES="0",
        PREFECT_HOME=str(tmp_path / "prefect"),
        MODELOPS_STACK__HOME=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "-m", "modelops.stack.apply_deployments", "--pool", "p", "--prefect-file",
         str(PROJECT_ROOT / "prefect.yaml"), "--report", str(report), "--wait-for-server", "0.5"],
        env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    outcome = json.loads(report.read_text())
    assert outcome["applied"] == [] and list(outcome["failed"]) == ["work pool p"]


def test_the_worker_stops_waiting_after_the_timeout_on_an_unreachable_api():
    assert wait_for_pool("http://127.0.0.1:9/api", "pool", timeout_s=0.3) is False


def test_the_worker_component_waits_for_its_pool_unless_the_deployment_step_reported(tmp_path):
    config = load_config(environ={"MODELOPS_STACK__HOME": str(tmp_path)})
    argv = comp.worker(config, None).argv
    assert argv[1:3] == ["-m", "modelops.stack.worker_process"]
    assert argv[argv.index("--unless") + 1] == str(comp.deploy_report(config))
    assert argv[argv.index("--pool") + 1] == config.stack.work_pool


class _Recording(Supervisor):
    """A real supervisor whose checks are recorded, not run (no worker or model server here)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.checks: list[str] = []

    def _check_worker(self, state) -> None:
        self.checks.append("worker")

    def _check_serving(self) -> None:
        self.checks.append("serving")

    def _keep_standby(self) -> None:
        self.checks.append("standby")


def test_the_supervisor_only_beats_while_up_or_down_hold_the_stack_lock(tmp_path):
    config = load_config(environ={"MODELOPS_STACK__HOME": str(tmp_path)})
    save_state(StackState(home=str(tmp_path)))
    supervisor = _Recording(config)
    heartbeat = tmp_path / comp.SUPERVISOR_HEARTBEAT
    with (tmp_path / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as `up` holds it
        supervisor.tick()
        assert supervisor.checks == []
        assert json.loads(heartbeat.read_text())["pid"] == os.getpid()  # healthy: `up` sees it beat
        fcntl.flock(lock, fcntl.LOCK_UN)
    supervisor.tick()
    assert supervisor.checks == ["worker", "serving", "standby"]
    supervisor.pool.shutdown()
