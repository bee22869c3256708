"""The serving process's gRPC transport (``modelops.serving.grpc_server``) on a real socket.

Two independent clients drive it: grpcio (what gRPC users run) for calls, and the ``h2`` package's
HTTP/2 state machine for what grpcio never sends on its own: padding, CONTINUATION, a tiny receive
window, RST_STREAM in the middle of a call, PING, a server-side deadline, protocol errors. The handler
here is a small stand-in for the TF Serving API (echo, slow, failing, refusing methods), so every
test is about the transport: what reaches the handler, what the client gets back, what survives.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
import uvloop
from support.network import free_port
from support.stack import wait_for

from modelops.serving.grpc_server import PREFACE, GrpcReply, GrpcServer, frame
from modelops.serving.server import listening_socket

MAX_MESSAGE = 8 * 1024 * 1024
MAX_CONNECTION = 12 * 1024 * 1024  # what the calls in progress on one connection may hold together
INCOMPLETE_TIMEOUT_S = 1.0
GRPC_HEADERS = [("content-type", "application/grpc"), ("te", "trailers")]


class StandInApi:
    """Methods by their last path segment; records what the server started and what it cancelled."""

    def __init__(self) -> None:
        self.started: list[bytes] = []
        self.cancelled: list[bytes] = []
        self.paths: list[str] = []

    async def __call__(self, path: str, message: bytes) -> GrpcReply:
        self.paths.append(path)
        method = path.rpartition("/")[2]
        if method == "Echo":
            return GrpcReply(0, message)
        if method == "Size":  # the request's size, as text
            return GrpcReply(0, str(len(message)).encode())
        if method == "Big":  # an answer of int(message) bytes
            return GrpcReply(0, bytes(range(256)) * (int(message) // 256) + b"x" * (int(message) % 256))
        if method == "Slow":  # answers after float(message) seconds
            self.started.append(message)
            try:
                await asyncio.sleep(float(message))
            except asyncio.CancelledError:
                self.cancelled.append(message)
                raise
            return GrpcReply(0, b"done " + message)
        if method == "Fail":
            raise RuntimeError("the handler broke")
        if method == "Refuse":  # INVALID_ARGUMENT with the message as its text
            return GrpcReply(3, message=message.decode())
        return GrpcReply(12, message=f"{path} is not served")


class ServerThread:
    """A GrpcServer on its own uvloop event loop thread, listening on a free loopback port."""

    def __init__(self, api: StandInApi) -> None:
        self.port = free_port()
        self.loop = uvloop.new_event_loop()
        self.server = GrpcServer(
            api, MAX_MESSAGE, incomplete_timeout_s=INCOMPLETE_TIMEOUT_S, max_connection_bytes=MAX_CONNECTION
        )
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-server", daemon=True)
        self.thread.start()
        sock = listening_socket("127.0.0.1", self.port, reuse_port=False, protocol="gRPC")
        self.run(self.server.listen(sock))

    def run(self, coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        if not self.server.shutting_down:
            self.run(self.server.shutdown(grace_s=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def api() -> StandInApi:
    return StandInApi()


@pytest.fixture
def server(api: StandInApi) -> Iterator[ServerThread]:
    running = ServerThread(api)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}", options=options) as opened:
        yield opened


def unary(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/test.StandIn/{method}")  # bytes in, bytes out


def grpc_message(payload: bytes, compressed: bool = False) -> bytes:
    return bytes((int(compressed),)) + struct.pack(">I", len(payload)) + payload


class RawClient:
    """An HTTP/2 client from the ``h2`` package: sends exactly the frames a test asks for."""

    def __init__(self, port: int, initial_window: int | None = None, auto_ack: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        if initial_window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
        self.auto_ack = auto_ack
        self.responses: dict[int, dict[str, Any]] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.ping_acks: list[bytes] = []
        self.closed = False
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, method: str, headers: list[tuple[str, str]] | None = None) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        path = f"/test.StandIn/{method}"
        request = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost")]
        request += headers if headers is not None else GRPC_HEADERS
        self.conn.send_headers(stream_id, request)
        self.responses[stream_id] = {"headers": {}, "data": [], "ended": False, "reset": None}
        return stream_id

    def call(
        self, method: str, payload: bytes, headers: list[tuple[str, str]] | None = None, **data: Any
    ) -> int:
        stream_id = self.start(method, headers)
        self.conn.send_data(stream_id, grpc_message(payload), end_stream=True, **data)
        self.flush()
        return stream_id

    def read_until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not done within {timeout} s: {self.responses}, goaway={self.goaway}"
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 20)
            if not data:
                self.closed = True
                assert done(), (
                    f"the server closed the connection first: {self.responses}, goaway={self.goaway}"
                )
                return
            for event in self.conn.receive_data(data):
                self._record(event)
            self.flush()

    def answered(self, stream_id: int) -> bool:
        response = self.responses[stream_id]
        return response["ended"] or response["reset"] is not None

    def answer(self, stream_id: int) -> tuple[dict[str, str], bytes]:
        self.read_until(lambda: self.answered(stream_id))
        response = self.responses[stream_id]
        return response["headers"], b"".join(response["data"])

    def _record(self, event: Any) -> None:
        response = self.responses.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            response["headers"].update(dict(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            response["data"].append(event.data)
            if self.auto_ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            response["ended"] = True
        elif isinstance(event, h2.events.StreamReset) and response is not None:
            response["reset"] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.PingAckReceived):
            self.ping_acks.append(event.ping_data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(server: ServerThread) -> Iterator[Callable[..., RawClient]]:
    clients: list[RawClient] = []

    def connect(**options: Any) -> RawClient:
        clients.append(RawClient(server.port, **options))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


# ------------------------------------------------------------------------------- grpcio clients


def test_concurrent_grpcio_calls_on_one_channel_each_get_their_own_answer(channel, api):
    echo = unary(channel, "Echo")
    calls = [echo.future(f"call {i}".encode() * (i + 1), timeout=30) for i in range(64)]
    assert [call.result() for call in calls] == [f"call {i}".encode() * (i + 1) for i in range(64)]
    assert set(api.paths) == {"/test.StandIn/Echo"}


def test_messages_larger_than_every_window_and_frame_arrive_whole_both_ways(channel):
    request = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB: past the 4 MiB windows and 16 KiB frames
    assert unary(channel, "Echo")(request, timeout=60) == request
    answer = unary(channel, "Big")(b"6000000", timeout=60)
    assert len(answer) == 6_000_000 and answer[:512] == bytes(range(256)) * 2


def test_a_message_above_the_limit_is_resource_exhausted_and_the_connection_keeps_serving(channel, api):
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Echo")(b"x" * (MAX_MESSAGE + 1), timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {MAX_MESSAGE}" in caught.value.details()
    assert api.paths == []  # never handed to the handler
    assert unary(channel, "Echo")(b"after", timeout=30) == b"after"


def test_a_refusal_keeps_its_code_and_its_message_in_any_characters(channel, raw):
    message = "naïve 100% sûr: ✓\nsecond line"
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Refuse")(message.encode(), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == message
    client = raw()  # on the wire: percent-encoded ASCII, as the gRPC protocol has it
    headers, _ = client.answer(client.call("Refuse", "✓ 100%".encode()))
    assert headers["grpc-status"] == "3" and headers["grpc-message"] == "%E2%9C%93 100%25"


def test_a_failing_handler_is_internal_and_the_server_keeps_serving(channel):
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, "Fail")(b"", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "RuntimeError: the handler broke" in caught.value.details()
    assert unary(channel, "Echo")(b"still here", timeout=30) == b"still here"


def test_a_grpcio_deadline_cancels_the_call_on_the_server(channel, api):
    call = unary(channel, "Slow").future(b"30", timeout=3)
    wait_for(lambda: api.started == [b"30"], 10, "the call started")
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: api.cancelled == [b"30"], 10, "the slow call cancelled on the server")


# ------------------------------------------------------------------- frames grpcio does not send


def test_padding_and_continuation_frames_are_read(raw, api):
    client = raw()
    big_header = [*GRPC_HEADERS, ("x-trace", "t" * 40_000)]  # > 16 KiB: HEADERS + CONTINUATION
    stream_id = client.call("Echo", b"padded body", headers=big_header, pad_length=17)
    headers, body = client.answer(stream_id)
    assert headers[":status"] == "200" and headers["grpc-status"] == "0"
    assert body == grpc_message(b"padded body")


def test_the_answer_waits_for_the_clients_stream_and_connection_windows(raw):
    client = raw(initial_window=1000)  # the connection window stays at 65,535
    stream_id = client.call("Big", b"200000")
    headers, body = client.answer(stream_id)
    assert headers["grpc-status"] == "0"
    assert body == grpc_message(bytes(range(256)) * (200000 // 256) + b"x" * (200000 % 256))
    assert max(len(chunk) for chunk in client.responses[stream_id]["data"]) <= 1000


def test_without_window_updates_the_answer_stops_at_the_window(raw):
    client = raw(initial_window=1000, auto_ack=False)
    stream_id = client.call("Big", b"5000")
    client.read_until(lambda: sum(map(len, client.responses[stream_id]["data"])) >= 1000)
    time.sleep(0.3)  # room for anything the server would wrongly send past the window
    client.sock.settimeout(0.3)
    try:
        for event in client.conn.receive_data(client.sock.recv(1 << 16)):
            client._record(event)
    except TimeoutError:
        pass
    assert sum(map(len, client.responses[stream_id]["data"])) == 1000
    assert not client.responses[stream_id]["ended"]
    client.conn.acknowledge_received_data(1000, stream_id)  # credit: the rest follows
    client.auto_ack = True
    client.flush()
    _, body = client.answer(stream_id)
    assert len(body) == 5005


def test_a_reset_stream_cancels_its_call_and_not_the_others(raw, api):
    client = raw()
    slow = client.call("Slow", b"30")
    quick = client.call("Slow", b"0.2")
    wait_for(lambda: len(api.started) == 2, 10, "both calls started")
    client.conn.reset_stream(slow, error_code=8)  # CANCEL
    client.flush()
    headers, body = client.answer(quick)
    assert headers["grpc-status"] == "0" and body == grpc_message(b"done 0.2")
    wait_for(lambda: api.cancelled == [b"30"], 10, "the reset call cancelled on the server")


def test_a_grpc_timeout_header_is_a_deadline_on_the_server(raw, api):
    client = raw()
    stream_id = client.call("Slow", b"30", headers=[*GRPC_HEADERS, ("grpc-timeout", "2S")])
    wait_for(lambda: api.started == [b"30"], 10, "the call started")
    headers, body = client.answer(stream_id)
    assert headers["grpc-status"] == "4" and body == b""  # DEADLINE_EXCEEDED, trailers only
    # the answer leaves before the cancelled handler's next step runs: wait for that step
    wait_for(lambda: api.cancelled == [b"30"], 10, "the slow call cancelled on the server")


def test_ping_is_acknowledged_with_its_payload(raw):
    client = raw()
    client.conn.ping(b"12345678")
    client.flush()
    client.read_until(lambda: client.ping_acks == [b"12345678"])


def test_a_request_that_is_not_grpc_is_http_415_and_a_compressed_message_unimplemented(raw, api):
    client = raw()
    json_call = client.call("Echo", b"{}", headers=[("content-type", "application/json")])
    assert client.answer(json_call)[0][":status"] == "415"
    compressed = client.start("Echo")
    client.conn.send_data(compressed, grpc_message(b"\x1f\x8b", compressed=True), end_stream=True)
    client.flush()
    headers, _ = client.answer(compressed)
    assert headers["grpc-status"] == "12" and "identity" in headers["grpc-message"]
    assert api.paths == []


# -------------------------------------------------------------------------------- connection errors

SETTINGS_FRAME = frame(4, 0, 0)


def frames_until_closed(sock: socket.socket) -> list[tuple[int, bytes]]:
    """(type, payload) of every frame the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(1 << 16):
        received += chunk
    frames = []
    while len(received) >= 9:
        length = int.from_bytes(received[:3], "big")
        frames.append((received[3], received[9 : 9 + length]))
        received = received[9 + length :]
    return frames


@pytest.mark.parametrize(
    ("sent", "error_code"),
    [
        (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", 0x1),  # HTTP/1.1 on the gRPC port: PROTOCOL_ERROR
        (PREFACE + SETTINGS_FRAME + frame(0, 0, 1, b"x" * 20_000), 0x6),  # above 16 KiB: FRAME_SIZE_ERROR
        (PREFACE + SETTINGS_FRAME + frame(1, 0x5, 2, b"\x82"), 0x1),  # a client opening an even stream
        (PREFACE + SETTINGS_FRAME + frame(1, 0x5, 1, b"\xff\xff\xff\xff"), 0x9),  # HPACK garbage
    ],
    ids=["http1", "frame-too-large", "even-stream", "bad-hpack"],
)
def test_a_protocol_error_ends_that_connection_with_goaway_and_the_server_keeps_serving(
    server, channel, sent, error_code, caplog
):
    caplog.set_level(logging.INFO, logger="modelops.serving.grpc_server")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(sent)
        frames = frames_until_closed(sock)
    goaways = [payload for kind, payload in frames if kind == 7]
    assert len(goaways) == 1, frames
    assert int.from_bytes(goaways[0][4:8], "big") == error_code, goaways[0]
    reason = goaways[0][8:].decode()
    assert any(reason in record.getMessage() for record in caplog.records), "the server logs why it closed"
    assert unary(channel, "Echo")(b"unaffected", timeout=30) == b"unaffected"


@pytest.mark.parametrize(
    "sent",
    [PREFACE[:10], PREFACE + SETTINGS_FRAME + frame(0, 0, 1, b"x" * 100)[:50]],
    ids=["preface", "frame"],
)
def test_a_connection_that_leaves_a_frame_half_sent_is_closed_after_the_timeout(server, channel, sent):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        frames = frames_until_closed(sock)
        waited = time.monotonic() - started
    assert waited >= INCOMPLETE_TIMEOUT_S * 0.9, waited
    (goaway,) = [payload for kind, payload in frames if kind == 7]
    assert int.from_bytes(goaway[4:8], "big") == 0x1 and b"incomplete" in goaway[8:], goaway
    assert unary(channel, "Echo")(b"unaffected", timeout=30) == b"unaffected"


def test_calls_holding_more_than_the_connections_budget_are_refused_and_the_others_served(server):
    """Two unfinished 7 MiB requests on one connection: the one that passes the 12 MiB budget is
    RESOURCE_EXHAUSTED, the other completes. Frames are written by hand (no client flow control)."""
    encoder = hpack.Encoder()

    def headers(stream_id: int) -> bytes:
        block = encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", "/test.StandIn/Size"),
             (":authority", "localhost"), *GRPC_HEADERS]
        )  # fmt: skip
        return frame(1, 0x4, stream_id, block)

    def data_frames(stream_id: int, body: bytes, end: bool) -> list[bytes]:
        chunks = [body[i : i + 16_384] for i in range(0, len(body), 16_384)]
        return [
            frame(0, 0x1 if end and i == len(chunks) - 1 else 0, stream_id, c) for i, c in enumerate(chunks)
        ]

    first = data_frames(1, grpc_message(b"a" * (7 << 20)), end=True)
    second = data_frames(3, grpc_message(b"b" * (7 << 20)), end=True)
    wire = [PREFACE, SETTINGS_FRAME, headers(1), headers(3), *first[:-1], *second, first[-1]]
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(b"".join(wire),))
        sender.start()
        answers: dict[int, dict[str, str]] = {}
        decoder, received = hpack.Decoder(), b""
        while len(answers) < 2 or not all("grpc-status" in a for a in answers.values()):
            chunk = sock.recv(1 << 16)
            assert chunk, f"closed early: {answers}"
            received += chunk
            while len(received) >= 9 and len(received) >= 9 + int.from_bytes(received[:3], "big"):
                length = int.from_bytes(received[:3], "big")
                kind, stream_id = received[3], int.from_bytes(received[5:9], "big")
                if kind == 1:
                    answers.setdefault(stream_id, {}).update(dict(decoder.decode(received[9 : 9 + length])))
                received = received[9 + length :]
        sender.join(30)
    assert answers[3]["grpc-status"] == "8" and str(MAX_CONNECTION) in answers[3]["grpc-message"], answers
    assert answers[1]["grpc-status"] == "0", answers


def test_shutdown_answers_the_calls_received_says_goaway_and_stops_listening(server, channel, api):
    in_flight = unary(channel, "Slow").future(b"0.5", timeout=30)
    wait_for(lambda: api.started == [b"0.5"], 10, "the call started")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as idle:
        idle.sendall(PREFACE + SETTINGS_FRAME)
        stopping = asyncio.run_coroutine_threadsafe(server.server.shutdown(grace_s=10), server.loop)
        (goaway,) = [payload for kind, payload in frames_until_closed(idle) if kind == 7]
    assert int.from_bytes(goaway[4:8], "big") == 0  # NO_ERROR: a graceful end
    assert in_flight.result() == b"done 0.5"
    stopping.result(30)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
