"""Loopback networking helpers: a free port, a local HTTP receiver (stand-in webhook endpoint), and the
listening sockets of a process tree (read from the kernel's socket table with psutil)."""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil

# Ports below the kernel's ephemeral range (32768-60999 here), one block per pytest-xdist worker: a
# port handed out here is free of every other worker's picks and of the ports the kernel gives to
# outgoing connections and to servers that bind port 0. ``bind(0)`` would hand out ephemeral ports,
# which two workers can both see free before either binds.
FIRST_PORT = 14000
PORTS_PER_WORKER = 2250
MAX_WORKERS = 8


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw<N>" under pytest-xdist
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if index >= MAX_WORKERS:
        raise RuntimeError(f"tests/support/network.py has port blocks for {MAX_WORKERS} workers, not more")
    return index


_START = FIRST_PORT + _worker_index() * PORTS_PER_WORKER
_CANDIDATES = itertools.cycle(range(_START, _START + PORTS_PER_WORKER))


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing listens on, not handed out again until this worker's block wraps."""
    return free_ports(1)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports, all reserved for the caller (a server that takes
    ``port + 1`` for a second slot or model, as the docker target and the local target do)."""
    for _ in range(PORTS_PER_WORKER):
        first = next(_CANDIDATES)
        if first + count > _START + PORTS_PER_WORKER:
            continue  # a run must not cross into the next worker's block
        for _ in range(count - 1):
            next(_CANDIDATES)
        if all(_bindable(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports in {_START}-{_START + PORTS_PER_WORKER - 1}")


@contextmanager
def http_receiver(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """A local HTTP server on 127.0.0.1 (a stand-in webhook endpoint); ``server.received`` collects."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


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
