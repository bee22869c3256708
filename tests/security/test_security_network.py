"""Servers listen on 127.0.0.1 unless configured otherwise: read from the kernel's socket table (psutil).

``modelops serve`` with the default config, the same with ``MODELOPS_SERVING__HOST`` set (the one way
to open it up), and one ``modelops up`` of the whole embedded stack (Prefect server, MLflow, embedded
PostgreSQL, worker) in a temp home on free ports: every listening socket of every process, children
included, is on the loopback address.
"""

from __future__ import annotations

import ipaddress
import time

import psutil
import pytest
from support.network import free_port
from support.serving import ServerProcess, build_model_base
from support.stack_home import PROBE_FLOW, prefect_yaml, run_modelops, stack_env, stack_status

pytestmark = pytest.mark.slow


def listening_addresses(pid: int) -> dict[tuple[str, int], str]:
    """(ip, port) -> process name, for every TCP LISTEN socket of ``pid`` and its descendants."""
    root = psutil.Process(pid)
    found: dict[tuple[str, int], str] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found[(connection.laddr.ip, connection.laddr.port)] = process.name()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip.split("%")[0]).is_loopback


def wait_listening(pid: int, timeout: float = 60) -> dict[tuple[str, int], str]:
    deadline = time.monotonic() + timeout
    while True:
        found = listening_addresses(pid)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    return build_model_base(tmp_path_factory.mktemp("bind") / "risk", {1: -1.4})


def test_serve_listens_on_loopback_by_default(model_base):
    port = free_port()
    with ServerProcess(model_base, port, "risk") as server:
        sockets = wait_listening(server.process.pid)
    assert ("127.0.0.1", port) in sockets, sockets
    assert all(is_loopback(ip) for ip, _ in sockets), sockets


def test_serve_opens_up_only_when_configured(model_base, monkeypatch):
    monkeypatch.setenv("MODELOPS_SERVING__HOST", "0.0.0.0")
    port = free_port()
    with ServerProcess(model_base, port, "risk") as server:
        sockets = wait_listening(server.process.pid)
    assert ("0.0.0.0", port) in sockets, sockets


def test_every_stack_component_listens_on_loopback_only(tmp_path):
    flow_file = tmp_path / "probe_flow.py"
    flow_file.write_text(PROBE_FLOW)
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(prefect_yaml(flow_file, "bind-test"))
    env = stack_env(tmp_path / "home", prefect_file)
    try:
        result = run_modelops(env, "up")
        assert result.returncode == 0, result.stdout + result.stderr
        rows = {row["name"]: row for row in stack_status(env)}
        assert set(rows) == {"prefect-server", "mlflow", "postgres", "worker", "supervisor"}
        sockets: dict[str, dict[tuple[str, int], str]] = {
            name: listening_addresses(row["pid"]) for name, row in rows.items() if row["pid"]
        }
    finally:
        down = run_modelops(env, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    expected = {
        "prefect-server": int(env["MODELOPS_STACK__PREFECT_PORT"]),
        "mlflow": int(env["MODELOPS_STACK__MLFLOW_PORT"]),
        "postgres": int(env["MODELOPS_STACK__POSTGRES_PORT"]),
    }
    for name, port in expected.items():
        assert ("127.0.0.1", port) in sockets[name], (name, sockets[name])
    exposed = {name: [s for s in found if not is_loopback(s[0])] for name, found in sockets.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
    print(f"\nlistening sockets: { {n: sorted(f) for n, f in sockets.items()} }")
