"""The stack's Prefect server registers its block types after ``up``, not before it answers.

A real Prefect server (SQLite in a temporary PREFECT_HOME, a free port) runs as the stack runs it:
``python -m modelops.stack.prefect_server_process`` with the environment of
:func:`modelops.stack.components.prefect_server`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from support import http_client
from support.network import free_port
from support.stack import wait_for

from modelops.config import load_config
from modelops.stack import components as comp

# Prefect's own, prefect-docker's and prefect-kubernetes' (the collections the stack installs)
EXPECTED_TYPES = {"secret", "docker-registry-credentials", "kubernetes-cluster-config"}


def block_type_slugs(url: str) -> set[str]:
    response = http_client.post(f"{url}/api/block_types/filter", json={}, timeout=5)
    response.raise_for_status()
    return {block_type["slug"] for block_type in response.json()}


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The stack's Prefect server command for a stack home in ``tmp_path``; yields (url, report, log)."""
    monkeypatch.setenv("MODELOPS_STACK__HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_STACK__PREFECT_PORT", str(free_port()))
    # the registration's latest start (--at-most): far beyond any start-up, so only the report triggers it
    monkeypatch.setenv("MODELOPS_STACK__STARTUP_TIMEOUT_S", "3600")
    config = load_config()
    spec = comp.prefect_server(config, comp.backend_stores(config, None, "sqlite"))
    (tmp_path / "home" / "prefect").mkdir(parents=True)
    report = comp.deploy_report(config)
    log = tmp_path / "prefect-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            spec.argv, env=spec.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: process.poll() is None and spec.health(), 180, f"Prefect server on {spec.url}")
        yield spec.url, report, log
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)


def test_block_types_are_registered_once_the_deployment_step_reports(server):
    url, report, log = server
    assert spec_env_turns_off_registration_at_start()
    assert block_type_slugs(url) == set()  # the server answers before it registers anything

    report.write_text('{"applied": [], "failed": {}}')  # what the deployment step writes when done

    done = "block types: registered after the deployment step"
    wait_for(lambda: done in log.read_text(), 120, "the registration's line in the server's log")
    assert EXPECTED_TYPES <= block_type_slugs(url)


def test_a_report_left_by_an_earlier_up_does_not_count(tmp_path):
    report = tmp_path / "deployments.json"
    report.write_text("{}")
    os.utime(report, (time.time() - 60, time.time() - 60))

    assert not comp.heartbeat_after(report, time.time())  # what the registration thread waits on
    report.write_text("{}")
    assert comp.heartbeat_after(report, time.time())
    assert not comp.heartbeat_after(tmp_path / "missing.json", 0)


def spec_env_turns_off_registration_at_start() -> bool:
    spec = comp.prefect_server(load_config(), comp.backend_stores(load_config(), None, "sqlite"))
    return (
        spec.env["PREFECT_SERVER_REGISTER_BLOCKS_ON_START"] == "false"
        and spec.env["PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION"] == "false"
        and spec.argv[:3] == [sys.executable, "-m", "modelops.stack.prefect_server_process"]
    )
