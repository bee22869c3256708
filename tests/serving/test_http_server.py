"""The serving process's HTTP/1.1 server over real sockets, with a handler that echoes what it got:
keep-alive, pipelining, chunked bodies, 100-continue, HTTP/1.0, HEAD, refused requests, a failing
handler, idle connections and the graceful stop a rolling restart relies on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from modelops.serving.http_server import HttpRequest, HttpResponse, HttpServer, _Connection
from modelops.serving.server import listening_socket
from tests.support.network import free_port

LIMIT = 1000


class Echo:
    """Answers each request with what it received; ``/slow`` waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        await self.started.put(request.path)
        if request.path == "/slow":
            await self.release.wait()
        if request.path == "/fail":
            raise RuntimeError("handler broke")
        summary = {"method": request.method, "path": request.path, "body": request.body.decode()}
        return HttpResponse(200, orjson.dumps(summary), headers=(("X-Port", str(request.local_port)),))


@asynccontextmanager
async def server(
    keep_alive_s: float = 5.0, request_timeout_s: float = 60.0
) -> AsyncIterator[tuple[HttpServer, Echo, int]]:
    echo = Echo()
    http = HttpServer(
        echo, max_body_bytes=LIMIT, keep_alive_s=keep_alive_s, request_timeout_s=request_timeout_s
    )
    port = free_port()
    await http.listen(listening_socket("127.0.0.1", port, reuse_port=False))
    try:
        yield http, echo, port
    finally:
        echo.release.set()
        await http.shutdown(grace_s=2)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await asyncio.wait_for(reader.readline(), 10)
    status = int(status_line.split()[1])
    headers = {}
    while (line := await asyncio.wait_for(reader.readline(), 10)) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return status, headers, body


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def forgotten(http: HttpServer, deadline_s: float = 10.0) -> bool:
    """Whether the server drops every connection within the deadline (a bound, not a speed)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while http.connections and loop.time() < end:
        await asyncio.sleep(0.01)
    return not http.connections


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return await asyncio.wait_for(reader.read(1), 10) == b""


def test_keep_alive_pipelining_and_chunked_bodies_are_answered_in_order():
    async def scenario() -> None:
        async with server() as (_, echo, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # three requests in one write: the first is slow, the answers must still come in order
            chunked = (
                b"POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
            )
            writer.write(post("/slow", b"first") + post("/second%20one?x=1", b"second") + chunked)
            await writer.drain()
            assert await echo.started.get() == "/slow"
            echo.release.set()
            answers = [await read_response(reader) for _ in range(3)]
            assert [json.loads(body) for _, _, body in answers] == [
                {"method": "POST", "path": "/slow", "body": "first"},
                {"method": "POST", "path": "/second one", "body": "second"},
                {"method": "POST", "path": "/chunked", "body": "abcdefg"},
            ]
            status, headers, _ = answers[0]
            assert status == 200 and headers["x-port"] == str(port) and headers["date"].endswith("GMT")
            assert headers["content-type"] == "application/json" and "connection" not in headers
            writer.close()

    asyncio.run(scenario())


async def continue_then_send_the_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read a ``100 Continue``, then send the 4-byte body it asked for and read its answer."""
    assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 100 Continue\r\n"
    assert await reader.readline() == b"\r\n"
    writer.write(b"body")
    status, _, body = await read_response(reader)
    assert status == 200 and json.loads(body)["body"] == "body"
    writer.close()


def test_expect_100_continue_and_http_1_0():
    async def scenario() -> None:
        expecting = b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        async with server() as (_, echo, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(expecting)
            await continue_then_send_the_body(reader, writer)

            assert await echo.started.get() == "/e"

            # behind an answer still owed, the 100 follows that answer
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/slow", b"first") + expecting)
            assert await echo.started.get() == "/slow"
            echo.release.set()
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["body"] == "first"
            await continue_then_send_the_body(reader, writer)

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /old HTTP/1.0\r\n\r\n")
            status, headers, body = await read_response(reader)
            assert status == 200 and headers["connection"] == "close" and json.loads(body)["path"] == "/old"
            assert await closed_by_server(reader)

    asyncio.run(scenario())


def test_head_answers_carry_no_body():
    async def scenario() -> None:
        async with server() as (_, _, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\n\r\n")
            status_line = await asyncio.wait_for(reader.readline(), 10)
            assert status_line.startswith(b"HTTP/1.1 200")
            while await reader.readline() != b"\r\n":
                pass
            status, _, body = await read_response(reader)  # straight after HEAD's head: no body between
            assert status == 200 and json.loads(body)["path"] == "/next"
            writer.close()

    asyncio.run(scenario())


def test_malformed_oversized_and_upgrade_requests_get_an_error_and_a_closed_connection():
    async def scenario() -> None:
        async with server() as (_, echo, port):
            for raw, status, words in [
                (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed HTTP request"),
                (post("/big", b"").replace(b"Content-Length: 0", b"Content-Length: 5000"), 413, "5000 bytes"),
                (
                    b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"%x\r\n" % (LIMIT + 1)
                    + b"x" * (LIMIT + 1)
                    + b"\r\n",
                    413,
                    f"more than {LIMIT} bytes",
                ),
                (
                    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                    400,
                    "upgrade",
                ),
            ]:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)  # the 413 cases send no (or not all of the) body: refused before it
                got, headers, body = await read_response(reader)
                assert got == status, (raw[:40], got, body)
                assert words in json.loads(body)["error"] and headers["connection"] == "close"
                assert await closed_by_server(reader)
                writer.close()
            assert echo.started.empty()  # none of them reached the handler

    asyncio.run(scenario())


def test_a_refusal_behind_pipelined_requests_comes_after_their_answers():
    async def scenario() -> None:
        async with server() as (_, echo, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            oversized = post("/big", b"").replace(b"Content-Length: 0", b"Content-Length: 5000")
            writer.write(post("/slow", b"first") + oversized)
            assert await echo.started.get() == "/slow"
            echo.release.set()
            status, headers, body = await read_response(reader)
            assert status == 200 and json.loads(body)["body"] == "first" and "connection" not in headers
            status, headers, body = await read_response(reader)
            assert status == 413 and "5000 bytes" in json.loads(body)["error"]
            assert headers["connection"] == "close" and await closed_by_server(reader)
            assert echo.started.empty()

    asyncio.run(scenario())


def test_a_request_not_received_whole_in_time_gets_408_and_a_closed_connection():
    """A client that stops mid-request, or drips its headers a line at a time, is cut off once the
    request has taken longer than the timeout to arrive; the answers owed before it still come first,
    and a slow handler (the answer, not the request) is never cut off."""

    async def drip(writer: asyncio.StreamWriter, answered: asyncio.Task) -> None:
        writer.write(b"POST /drip HTTP/1.1\r\nHost: t\r\n")
        for line in range(500):  # a header line every 0.02 s: each read is prompt, the request never ends
            if answered.done():
                return
            writer.write(b"X-Line-%d: x\r\n" % line)
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        async with server(request_timeout_s=0.3) as (http, echo, port):
            # stops after half its headers
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /half HTTP/1.1\r\nHost: t\r\n")
            status, headers, body = await read_response(reader)
            assert status == 408 and "not received whole within 0.3 s" in json.loads(body)["error"]
            assert headers["connection"] == "close" and await closed_by_server(reader)

            # drips header lines, each soon after the last
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            answered = asyncio.create_task(read_response(reader))
            await drip(writer, answered)
            status, headers, _ = await answered
            assert status == 408 and headers["connection"] == "close" and await closed_by_server(reader)

            # a complete request answered slowly, then an incomplete one behind it
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/slow", b"whole") + post("/cut", b"12345")[:-2])
            assert await echo.started.get() == "/slow"
            await asyncio.sleep(0.6)  # twice the request timeout, spent in the handler
            echo.release.set()
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["body"] == "whole"
            status, headers, _ = await read_response(reader)
            assert status == 408 and headers["connection"] == "close" and await closed_by_server(reader)
            assert echo.started.empty()  # no incomplete request reached the handler
            assert await forgotten(http)

    asyncio.run(scenario())


def test_a_request_arriving_in_pieces_within_the_timeout_is_answered():
    """Pauses longer than the keep-alive time inside a request do not close the connection: only the
    request timeout bounds a request being received."""

    async def scenario() -> None:
        async with server(keep_alive_s=0.2, request_timeout_s=30) as (_, echo, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            raw = post("/pieces", b"0123456789")
            for start in range(0, len(raw), 7):
                writer.write(raw[start : start + 7])
                await writer.drain()
                await asyncio.sleep(0.01)
            status, headers, body = await read_response(reader)
            assert status == 200 and json.loads(body)["body"] == "0123456789" and "connection" not in headers
            writer.write(post("/again", b""))  # the connection is still open for the next one
            assert (await read_response(reader))[0] == 200

            # the rest of a pipelined request comes after its predecessor's answer and a pause
            rest = post("/rest", b"abc")
            writer.write(post("/slow", b"") + rest[:-3])
            assert [await echo.started.get() for _ in range(3)][-1] == "/slow"
            echo.release.set()
            assert (await read_response(reader))[0] == 200
            await asyncio.sleep(0.5)  # more than the keep-alive time
            writer.write(rest[-3:])
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["body"] == "abc"
            writer.close()

    asyncio.run(scenario())


def test_a_failing_handler_answers_500_and_the_connection_keeps_serving():
    async def scenario() -> None:
        async with server() as (_, _, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/fail", b"") + post("/ok", b""))
            status, _, body = await read_response(reader)
            assert status == 500 and json.loads(body) == {
                "error": "internal server error: RuntimeError: handler broke"
            }
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["path"] == "/ok"
            writer.close()

    asyncio.run(scenario())


def test_a_client_gone_before_its_answer_costs_nothing_else():
    async def scenario() -> None:
        async with server() as (http, echo, port):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/slow", b"abandoned"))
            assert await echo.started.get() == "/slow"
            writer.transport.abort()  # gone while the handler works
            assert await forgotten(http)
            echo.release.set()  # the handler finishes; its answer has nowhere to go
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/next", b""))
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["path"] == "/next"
            writer.close()

    asyncio.run(scenario())


def test_idle_connections_are_closed_after_the_keep_alive_time():
    async def scenario() -> None:
        async with server(keep_alive_s=0.2) as (http, _, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post("/once", b""))
            assert (await read_response(reader))[0] == 200
            assert await closed_by_server(reader)
            assert await forgotten(http)  # the server forgets it once the close is through

    asyncio.run(scenario())


def test_shutdown_stops_listening_answers_what_was_received_and_closes_idle_connections():
    async def scenario() -> None:
        async with server() as (http, echo, port):
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            idle_writer.write(post("/warm", b""))
            assert (await read_response(idle_reader))[0] == 200
            busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
            busy_writer.write(post("/slow", b"in flight") + post("/queued", b"behind it"))
            assert await echo.started.get() == "/warm"
            assert await echo.started.get() == "/slow"

            stopping = asyncio.create_task(http.shutdown(grace_s=10))
            assert await closed_by_server(idle_reader)  # idle: closed at once
            try:
                await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                pass
            else:
                raise AssertionError("still accepting connections while stopping")
            assert not stopping.done()  # waiting for the request in flight
            echo.release.set()
            status, headers, body = await read_response(busy_reader)
            assert status == 200 and json.loads(body)["body"] == "in flight" and "connection" not in headers
            status, headers, body = await read_response(busy_reader)  # received before the stop: answered
            assert status == 200 and json.loads(body)["body"] == "behind it"
            assert headers["connection"] == "close"
            assert await closed_by_server(busy_reader)
            await asyncio.wait_for(stopping, 10)
            assert not http.connections

    asyncio.run(scenario())


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 8501) if name == "sockname" else default


def test_each_answer_leaves_in_one_write():
    """Head and body in one write, so one TCP segment and one wake-up of the client per answer."""

    async def scenario() -> None:
        connection = _Connection(HttpServer(Echo(), max_body_bytes=LIMIT))
        transport = RecordingTransport()
        connection.connection_made(transport)
        connection.data_received(post("/a", b"1") + post("/b", b"2"))
        while connection.worker is not None:
            await asyncio.sleep(0)
        assert len(transport.writes) == 2
        for write, path in zip(transport.writes, ["/a", "/b"], strict=True):
            head, _, body = write.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and json.loads(body)["path"] == path
        connection.connection_lost(None)

    asyncio.run(scenario())
