"""``modelops up`` / ``status`` / ``down`` as subprocesses, on free ports in a temporary stack home.

``PROBE_FLOW`` is a flow file that records the environment a worker gives a flow run, and
``prefect_yaml`` a ``prefect.yaml`` that deploys it, so a test can check what a run sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from support.network import free_port

MODELOPS = str(Path(sys.executable).parent / "modelops")
CLIENT_VARIABLES = (  # a developer's own settings that would point the stack's clients elsewhere
    "PREFECT_API_URL",
    "PREFECT_HOME",
    "MLFLOW_TRACKING_URI",
    "MODELOPS_DATABASE_URL",
    "MODELOPS_CONFIG",
    "PREFECT_PROFILES_PATH",
)
# How long a test's `modelops up` waits for each component to become healthy. The product's default
# (120 s) was too short on a loaded 2-core CI machine, where the Prefect server alone took longer to
# start; a test fails on what a component does, not on how fast a busy machine starts it.
STARTUP_TIMEOUT_S = "300"

PROBE_FLOW = """
import json, os
from prefect import flow

@flow(name="stack-probe")
def probe(out: str) -> None:
    keys = ["PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MODELOPS_DATABASE_URL", "PREFECT_HOME"]
    record = {key: os.environ.get(key) for key in keys}
    record["cwd"] = os.getcwd()
    with open(out, "w") as handle:
        json.dump(record, handle)
"""


def prefect_yaml(flow_file: Path, pool: str, *, broken: bool = False) -> str:
    """A ``prefect.yaml`` deploying ``PROBE_FLOW`` (in ``flow_file``); ``broken`` adds a bad entrypoint."""
    text = f"""
        name: stack-probe
        prefect-version: 3.9.1
        build: null
        push: null
        pull:
          - prefect.deployments.steps.set_working_directory:
              directory: "{{{{ $MODELOPS_PROJECT_ROOT }}}}"
        deployments:
          - name: probe
            entrypoint: {flow_file}:probe
            work_pool: {{name: {pool}}}
        """
    if broken:
        text += f"""
          - name: broken
            entrypoint: {flow_file.parent}/no_such_flow.py:nothing
            work_pool: {{name: {pool}}}
        """
    return textwrap.dedent(text)


def stack_env(home: Path, prefect_file: Path, **extra: str) -> dict[str, str]:
    """The environment of a stack in ``home`` on free ports (work pool ``stack-test``)."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update(
        MODELOPS_STACK__HOME=str(home),
        MODELOPS_STACK__PREFECT_PORT=str(free_port()),
        MODELOPS_STACK__MLFLOW_PORT=str(free_port()),
        MODELOPS_STACK__POSTGRES_PORT=str(free_port()),
        MODELOPS_STACK__WORK_POOL="stack-test",
        MODELOPS_STACK__PREFECT_FILE=str(prefect_file),
        MODELOPS_STACK__STARTUP_TIMEOUT_S=STARTUP_TIMEOUT_S,
    )
    env.update(extra)
    return env


def run_modelops(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MODELOPS, *args], env=env, capture_output=True, text=True, timeout=timeout)


def stack_status(env: dict[str, str]) -> list[dict]:
    """``modelops status --json``: one row per component."""
    result = run_modelops(env, "status", "--json", timeout=60)
    return json.loads(result.stdout)


def assert_gone(pids: list[int], timeout_s: float = 60) -> None:
    """Gone or a zombie awaiting its reaper (init) — either way no longer running."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not alive, f"still running after down: {alive}"
