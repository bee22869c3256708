"""The check a flow makes before it runs: is a Prefect API there? Against real sockets.

Nothing listening is "unreachable" (the flow must not run on a temporary server); a server that
accepted the connection but is slow to answer is there (a loaded machine: a CI run failed when a
busy Prefect server took longer than the check's timeout), and Prefect's own client retries.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.base import require_prefect_api
from modelops.integrations.prefect_api import PrefectUnreachable


@contextmanager
def _listener(answer: bytes | None) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that answers each connection with ``answer``, or never (None)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)
            if answer is not None:
                connection.recv(65536)
                connection.sendall(answer)
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/api"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        server.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_nothing_listening_is_unreachable():
    url = f"http://127.0.0.1:{_closed_port()}/api"
    with temporary_settings({PREFECT_API_URL: url}), pytest.raises(PrefectUnreachable, match=url):
        require_prefect_api(timeout_s=2)


def test_a_server_that_accepts_but_answers_slowly_is_there():
    with _listener(None) as url, temporary_settings({PREFECT_API_URL: url}):
        assert require_prefect_api(timeout_s=0.3) == url


def test_a_server_that_answers_is_there():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ntrue"
    with _listener(ok) as url, temporary_settings({PREFECT_API_URL: url}):
        assert require_prefect_api(timeout_s=5) == url
