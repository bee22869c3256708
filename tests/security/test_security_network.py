"""Servers listen on 127.0.0.1 unless configured otherwise: read from the kernel's socket table (psutil).

``modelops serve`` with the default config, and the same with ``MODELOPS_SERVING__HOST`` set (the one
way to open it up). The embedded stack's check (every listening socket of every component, children
included, on the loopback address) runs on the stack of tests/stack/test_stack_lifecycle.py, which
starts one anyway: ``test_every_stack_component_listens_on_loopback_only``.
"""

from __future__ import annotations

import time

import pytest
from support.network import free_port, is_loopback, listening_addresses
from support.serving import ServerProcess, build_model_base

pytestmark = pytest.mark.slow


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
