"""The serving process's HTTP/1.1 server: httptools' parser on the asyncio (uvloop) event loop.

Every request is handed whole (method, path, headers, body) to one handler coroutine, and its answer
leaves in one write: status line, headers and body together. The serving API needs nothing else,
and at the request rates of a small model the per-request layers of a general ASGI server cost as
much as the model call: uvicorn's per-request task, scope and message dicts, and a separate write
(so a separate TCP segment) for the head and the body. See README, Serving, for the figures.

HTTP/1.1 as clients use it: keep-alive (idle connections closed after ``keep_alive_s``), pipelined
requests answered in order, chunked request bodies, ``Expect: 100-continue``, HTTP/1.0, ``HEAD``. A
request the parser refuses, or one whose body is larger than ``max_body_bytes``, is answered
400/413 with a JSON ``{"error": ...}`` and its connection closed; so is one not received whole within
``request_timeout_s`` of the read that found it incomplete (408), so that a client sending a request
slowly, or never finishing it, cannot hold a connection for ever. :meth:`HttpServer.shutdown` stops
listening at once, lets every request already received finish (up to a grace period), and closes
idle connections, so a rolling restart drops nothing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
import orjson

log = logging.getLogger(__name__)

JSON = "application/json"
_MAX_PIPELINED = 16  # requests queued on one connection before it stops reading
_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str  # percent-decoded, without the query string
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    local_port: int  # the port the connection came in on (the admin port, or the public one)


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


def json_error(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"error": message}))


class _Clock:
    """The ``Date`` header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._header = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._header = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._header


class HttpServer:
    """Listens on any number of sockets and serves ``handler`` on all of them."""

    def __init__(
        self,
        handler: Handler,
        max_body_bytes: int,
        keep_alive_s: float = 5.0,
        request_timeout_s: float = 60.0,
        on_unexpected: Callable[[HttpRequest, BaseException], HttpResponse] | None = None,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.keep_alive_s = keep_alive_s
        self.request_timeout_s = request_timeout_s
        self.on_unexpected = on_unexpected or (
            lambda request, exc: json_error(500, f"internal server error: {type(exc).__name__}: {exc}")
        )
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self.shutting_down = False

    async def listen(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: _Connection(self), sock=sock)
        self.listeners.append(listener)

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop accepting, finish what was received, close idle connections; force after ``grace_s``."""
        self.shutting_down = True
        for listener in self.listeners:
            listener.close()
        for connection in list(self.connections):
            connection.close_when_idle()
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            log.warning("closing a connection still busy after the %.0f s grace period", grace_s)
            connection.abort()
        for listener in self.listeners:
            await listener.wait_closed()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time in arrival order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.local_port = 0
        # (request, keep-alive) to answer in order; a refusal (answer, then close) goes last
        self.received: deque[tuple[HttpRequest, bool] | HttpResponse] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        # A request that did not arrive whole in one read gets a timer: most arrive whole, and pay nothing
        self.receiving = False
        self.request_timer: asyncio.TimerHandle | None = None
        self.closing = False  # answer what was received, then close
        self.can_write: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        self.reading_paused = False
        # the request being parsed
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.refused = False  # answered (413) before its body arrived: the connection closes
        self.continue_owed = False  # its "100 Continue" waits for the answers owed before it

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass
        sockname = transport.get_extra_info("sockname")
        self.local_port = sockname[1] if isinstance(sockname, tuple) else 0
        self.server.connections.add(self)
        if self.server.shutting_down:
            self.closing = True
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._cancel_idle_timer()
        self._cancel_request_timer()
        self.received.clear()
        if self.can_write is not None and not self.can_write.done():
            self.can_write.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self._cancel_idle_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # refused in on_headers_complete
            pass
        except httptools.HttpParserError as exc:
            if not self.refused:
                self._refuse(400, f"malformed HTTP request: {exc}")
        if self.receiving and self.request_timer is None and not self.refused:
            self.request_timer = asyncio.get_running_loop().call_later(
                self.server.request_timeout_s, self._request_timeout
            )

    def pause_writing(self) -> None:
        self.can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.can_write is not None and not self.can_write.done():
            self.can_write.set_result(None)
        self.can_write = None

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.receiving = True
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.parser.should_upgrade():
            self._refuse(400, "protocol upgrades are not supported: send plain HTTP/1.1 requests")
            return
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.server.max_body_bytes:
            self._refuse(413, f"request body of {declared} bytes exceeds {self.server.max_body_bytes} bytes")
            return
        if self.headers.get("expect", "").lower() == "100-continue":
            if self.worker is None and not self.received:
                self._write_continue()
            else:  # a 100 now would arrive ahead of the answers still owed: it follows them
                self.continue_owed = True

    def on_body(self, body: bytes) -> None:
        if self.refused:
            return
        self.body_size += len(body)
        if self.body_size > self.server.max_body_bytes:
            self._refuse(
                413, f"request body of more than {self.server.max_body_bytes} bytes exceeds the limit"
            )
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        self.continue_owed = False  # the body came without it
        self._cancel_request_timer()
        if self.refused:
            return
        url = self.url
        parsed = httptools.parse_url(url) if url[:1] != b"/" or b"?" in url else None
        raw_path = parsed.path if parsed is not None else url
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = HttpRequest(self.parser.get_method().decode(), path, self.headers, body, self.local_port)
        self.received.append((request, self.parser.should_keep_alive()))
        if len(self.received) >= _MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._answer_received())

    # -- answering -----------------------------------------------------------------------------

    async def _answer_received(self) -> None:
        try:
            while self.received and self.transport is not None and not self.transport.is_closing():
                item = self.received.popleft()
                if isinstance(item, HttpResponse):  # a refusal, after the answers owed before it
                    self._write("GET", item, keep_alive=False)
                    self.transport.close()
                    return
                request, keep_alive = item
                try:
                    response = await self.server.handler(request)
                except Exception as exc:
                    response = self.server.on_unexpected(request, exc)
                if self.transport.is_closing():  # the client went away while we worked
                    return
                keep_alive = keep_alive and not (self.closing and not self.received)
                self._write(request.method, response, keep_alive)
                if not keep_alive:
                    self.transport.close()
                    return
                if self.can_write is not None:
                    await self.can_write
                if self.reading_paused and len(self.received) < _MAX_PIPELINED // 2:
                    self.reading_paused = False
                    self.transport.resume_reading()
        finally:
            self.worker = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.closing:
            self.transport.close()
            return
        if self.continue_owed:
            self._write_continue()
        self._arm_idle_timer()

    def _write(self, method: str, response: HttpResponse, keep_alive: bool) -> None:
        assert self.transport is not None
        body = response.body
        head = [
            b"HTTP/1.1 %d %s\r\n" % (response.status, _REASONS.get(response.status, b"")),
            self.server.clock.header(),
            b"content-type: %s\r\ncontent-length: %d\r\n" % (response.content_type.encode(), len(body)),
        ]
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if method != "HEAD":
            head.append(body)
        self.transport.write(b"".join(head))

    def _write_continue(self) -> None:
        self.continue_owed = False
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse(self, status: int, message: str) -> None:
        """Answer without reading the rest of the request, after the answers still owed on this
        connection, then close it."""
        self.refused = True
        self._cancel_request_timer()
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.pause_reading()
        if self.worker is None and not self.received:
            self._write("GET", json_error(status, message), keep_alive=False)
            self.transport.close()
        else:
            self.received.append(json_error(status, message))

    # -- idle connections and shutdown ---------------------------------------------------------------

    def close_when_idle(self) -> None:
        self.closing = True
        if self.worker is None and not self.received and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        if self.receiving:  # not idle: the request timer bounds the request being received
            return
        self.idle_timer = asyncio.get_running_loop().call_later(self.server.keep_alive_s, self._idle_timeout)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _cancel_request_timer(self) -> None:
        if self.request_timer is not None:
            self.request_timer.cancel()
            self.request_timer = None

    def _request_timeout(self) -> None:
        """A request seen incomplete ``request_timeout_s`` ago has still not arrived whole: a bound on the
        total time (not on a pause between reads), so a client dripping a byte now and then is cut off too."""
        self.request_timer = None
        if not self.refused:
            self._refuse(408, f"request not received whole within {self.server.request_timeout_s:g} s")

    def _idle_timeout(self) -> None:
        if self.worker is None and not self.received and self.transport is not None:
            self.transport.close()


def install_signal_handlers(stop: Callable[[], Any]) -> None:
    """SIGTERM and SIGINT start a graceful stop (a second one is ignored: the first is already stopping)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
