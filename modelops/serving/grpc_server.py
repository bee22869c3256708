"""The serving process's gRPC server: unary gRPC calls over HTTP/2 on the asyncio (uvloop) event loop.

gRPC is HTTP/2 (cleartext, with prior knowledge, as every gRPC client connects to an insecure port):
a call is a stream whose request HEADERS name the method in ``:path`` and whose DATA holds one
length-prefixed message; the answer is HEADERS, DATA with the response message, and trailing HEADERS
with ``grpc-status``, or only those trailers for a refusal. The serving API needs nothing else, and
each call is handed whole (path, message bytes) to one handler coroutine, as
:mod:`modelops.serving.http_server` does for REST. grpcio's ``grpc.aio`` server, which ran here
before, spent ~0.34 ms of CPU on each call before its handler ran; this one ~0.1 ms (README, Serving).

What it speaks of RFC 9113: the connection preface and SETTINGS (acknowledged; the peer's frame size
and initial window are honoured), PING, GOAWAY, WINDOW_UPDATE, RST_STREAM, PRIORITY (ignored), HEADERS
with CONTINUATION, padding, and flow control both ways: what arrives is credited back as it is read (a
message's size is bounded by ``max_message_bytes`` instead), what leaves waits for the peer's windows.
Headers are decoded by the ``hpack`` package; the few this server sends are literals that never touch
the dynamic table, so the peer's header table size does not matter. A protocol error, or a frame left
half-sent for ``incomplete_timeout_s``, ends the connection with GOAWAY naming it (and a log line).

Of the gRPC protocol: one request message per call, not compressed (``grpc-accept-encoding:
identity``; a compressed one is UNIMPLEMENTED); a message above ``max_message_bytes`` is
RESOURCE_EXHAUSTED, and so is a call that would take what one connection's calls in progress hold of
their requests past ``max_connection_bytes`` (4 × the message limit); ``grpc-timeout`` is a deadline
(DEADLINE_EXCEEDED, the handler cancelled); a request that is not ``application/grpc`` is refused with
HTTP 415. :meth:`GrpcServer.shutdown` stops listening,
sends GOAWAY (the client's next calls go elsewhere or reconnect), lets the calls already received finish
within the grace period, then closes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import hpack
from hpack.exceptions import HPACKError

log = logging.getLogger(__name__)

# gRPC status codes (grpc.StatusCode's numbers) the transport itself answers with
OK = 0
DEADLINE_EXCEEDED = 4
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13


@dataclass(frozen=True, slots=True)
class GrpcReply:
    """A call's answer: ``code`` 0 with the response message's bytes, or an error code and message."""

    code: int
    payload: bytes = b""
    message: str = ""


# (method path, e.g. "/tensorflow.serving.PredictionService/Predict"; the request message's bytes)
Handler = Callable[[str, bytes], Awaitable[GrpcReply]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
# flags
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
# settings
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS = 0x1, 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

DEFAULT_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
MIN_FRAME_SIZE = 16_384  # what every peer accepts; the size of the frames this server takes
MAX_FRAME_SIZE = 2**24 - 1
MAX_CONCURRENT_STREAMS = 128
MAX_HEADER_BLOCK = 64 * 1024
# The receive windows offered (stream and connection): large enough that a batch's request needs no
# round trip for credit; memory stays bounded by max_message_bytes per call.
RECEIVE_WINDOW = 4 * 1024 * 1024
MAX_STATUS_MESSAGE = 8 * 1024  # grpc-message is cut to this: the trailers must fit one frame
_GRPC_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + payload


def _hpack_integer(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A header field as an HPACK literal without indexing, new name: no dynamic-table state needed."""
    return b"\x00" + _hpack_integer(len(name), 7, 0) + name + _hpack_integer(len(value), 7, 0) + value


_STATUS_200 = b"\x88"  # :status 200, entry 8 of HPACK's static table
_RESPONSE_HEAD = (
    _STATUS_200
    + literal(b"content-type", b"application/grpc")
    + literal(b"grpc-accept-encoding", b"identity")
)
_TRAILERS_OK = literal(b"grpc-status", b"0")


def percent_encoded(message: str) -> bytes:
    """``grpc-message`` encoding: printable ASCII as is, ``%`` and every other byte of UTF-8 as %XX."""
    out = bytearray()
    for byte in message.encode("utf-8")[:MAX_STATUS_MESSAGE]:
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def trailers(code: int, message: str) -> bytes:
    block = literal(b"grpc-status", str(code).encode())
    if message:
        block += literal(b"grpc-message", percent_encoded(message))
    return block


def parse_timeout(value: str) -> float | None:
    """``grpc-timeout`` (``100m``, ``5S``, up to 8 digits and a unit) in seconds; None if malformed."""
    unit = _GRPC_TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


class ProtocolViolation(Exception):
    """A protocol error that ends the connection (GOAWAY with ``code``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class GrpcServer:
    """Listens on any number of sockets and serves ``handler`` on all of them."""

    def __init__(
        self,
        handler: Handler,
        max_message_bytes: int,
        incomplete_timeout_s: float = 60.0,
        max_connection_bytes: int | None = None,
    ) -> None:
        self.handler = handler
        self.max_message_bytes = max_message_bytes
        # what all calls in progress on one connection may hold of their requests together
        self.max_connection_bytes = max_connection_bytes or 4 * max_message_bytes
        # a connection that leaves the preface or a frame half-sent this long is closed (as REST's 408)
        self.incomplete_timeout_s = incomplete_timeout_s
        self.connections: set[_Connection] = set()
        self.listeners: list[asyncio.AbstractServer] = []
        self.shutting_down = False

    async def listen(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self.listeners.append(await loop.create_server(lambda: _Connection(self), sock=sock))

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop accepting, GOAWAY, finish the calls received; close what is still open after ``grace_s``."""
        self.shutting_down = True
        for listener in self.listeners:
            listener.close()
        for connection in list(self.connections):
            connection.go_away(NO_ERROR, "the server is stopping")
        deadline = time.monotonic() + grace_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            log.warning("closing a gRPC connection still busy after the %.0f s grace period", grace_s)
            connection.abort()
        for listener in self.listeners:
            await listener.wait_closed()


class _Stream:
    """One call: its request as it arrives, then the answer as the peer's window lets it leave."""

    __slots__ = (
        "id", "path", "body", "size", "held", "received", "answered", "task", "timer", "window", "unsent"
    )  # fmt: skip

    def __init__(self, stream_id: int, window: int) -> None:
        self.id = stream_id
        self.path = ""
        self.body: list[bytes] = []
        self.size = 0
        self.held = 0  # request bytes this connection holds for the call until it is answered
        self.received = False  # END_STREAM seen: no more DATA, credit nothing back
        self.answered = False  # the answer is queued or sent; later request DATA is discarded
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.window = window  # what the peer lets this stream send
        self.unsent = b""  # response DATA (with the message's prefix) waiting for window


class _Connection(asyncio.Protocol):
    """One client connection: frames in, calls handed to the handler, answers out in one write each."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.preface_seen = False
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = MAX_HEADER_BLOCK
        self.streams: dict[int, _Stream] = {}
        self.last_stream_id = 0
        self.header_block: tuple[int, int, bytearray] | None = (
            None  # (stream, flags, fragments) awaiting CONTINUATION
        )
        self.send_window = DEFAULT_WINDOW  # the peer's connection window
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = MIN_FRAME_SIZE
        self.blocked: dict[int, _Stream] = {}  # streams with DATA waiting for window, in order
        self.out: list[bytes] = []  # what data_received answers, written once at its end
        self.going_away = False
        self.closed = False
        self.incomplete_timer: asyncio.TimerHandle | None = None
        self.held = 0  # request bytes of the calls in progress (bounded by max_connection_bytes)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport is not a subclass
        assert self.transport is not None
        self.server.connections.add(self)
        settings = struct.pack(
            ">HIHIHI",
            SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS,
            SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW,
            SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_BLOCK,
        )  # fmt: skip
        raise_window = struct.pack(">I", RECEIVE_WINDOW - DEFAULT_WINDOW)
        self.transport.write(frame(SETTINGS, 0, 0, settings) + frame(WINDOW_UPDATE, 0, 0, raise_window))
        if self.server.shutting_down:
            self.go_away(NO_ERROR, "the server is stopping")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.incomplete_timer is not None:
            self.incomplete_timer.cancel()
        self.server.connections.discard(self)
        for stream in self.streams.values():
            self._forget(stream, cancel=True)
        self.streams.clear()
        self.blocked.clear()

    def pause_writing(self) -> None:  # the peer is not reading: stop reading its requests too
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        try:
            if not self.preface_seen:
                start = bytes(buffer[: len(PREFACE)])
                if not PREFACE.startswith(start):
                    raise ProtocolViolation(
                        PROTOCOL_ERROR,
                        "not an HTTP/2 connection preface: this port speaks gRPC (HTTP/2); REST is on "
                        "the server's other port",
                    )
                if len(start) == len(PREFACE):
                    del buffer[: len(PREFACE)]
                    self.preface_seen = True
            if self.preface_seen:
                self._read_frames()
        except ProtocolViolation as error:
            self._end(error.code, str(error))
            return
        self._flush()
        self._watch_incomplete()

    def _watch_incomplete(self) -> None:
        """A timer while bytes of an unfinished frame wait in the buffer; most reads leave none."""
        if self.buffer and self.incomplete_timer is None:
            self.incomplete_timer = asyncio.get_running_loop().call_later(
                self.server.incomplete_timeout_s, self._incomplete_too_long
            )
        elif not self.buffer and self.incomplete_timer is not None:
            self.incomplete_timer.cancel()
            self.incomplete_timer = None

    def _incomplete_too_long(self) -> None:
        self.incomplete_timer = None
        waited = self.server.incomplete_timeout_s
        self._end(PROTOCOL_ERROR, f"a frame left incomplete for {waited:g} s")

    def _end(self, code: int, reason: str) -> None:
        """A connection error: GOAWAY naming it, then close (the calls in progress are cancelled)."""
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        log.info("gRPC connection from %s closed: %s", peer, reason)
        self.go_away(code, reason)
        self._flush()
        if self.transport is not None:
            self.transport.close()

    # -- frames in ---------------------------------------------------------------------------------

    def _read_frames(self) -> None:
        buffer = self.buffer
        position = 0
        available = len(buffer)
        credit = 0  # DATA read: connection window to give back
        while available - position >= 9:
            length = int.from_bytes(buffer[position : position + 3], "big")
            if length > MIN_FRAME_SIZE:
                raise ProtocolViolation(
                    FRAME_SIZE_ERROR, f"frame of {length} bytes; the limit is {MIN_FRAME_SIZE}"
                )
            end = position + 9 + length
            if end > available:
                break
            kind = buffer[position + 3]
            flags = buffer[position + 4]
            stream_id = int.from_bytes(buffer[position + 5 : position + 9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[position + 9 : end])
            position = end
            if self.header_block is not None and kind != CONTINUATION:
                raise ProtocolViolation(PROTOCOL_ERROR, "a header block was interrupted by another frame")
            if kind == DATA:
                credit += length
                self._on_data(stream_id, flags, payload)
            elif kind == HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif kind == CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif kind == SETTINGS:
                self._on_settings(stream_id, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == PING:
                if length != 8 or stream_id:
                    raise ProtocolViolation(
                        FRAME_SIZE_ERROR if length != 8 else PROTOCOL_ERROR, "malformed PING"
                    )
                if not flags & ACK:
                    self.out.append(frame(PING, ACK, 0, payload))
            elif kind == RST_STREAM:
                if length != 4 or not stream_id:
                    raise ProtocolViolation(PROTOCOL_ERROR, "malformed RST_STREAM")
                stream = self.streams.pop(stream_id, None)
                if stream is not None:
                    self._forget(stream, cancel=True)
            elif kind == GOAWAY:
                self.going_away = True  # the peer starts no more calls here; finish what it sent
            elif kind == PUSH_PROMISE:
                raise ProtocolViolation(PROTOCOL_ERROR, "a client cannot push")
            elif kind == PRIORITY and (length != 5 or not stream_id):
                raise ProtocolViolation(PROTOCOL_ERROR, "malformed PRIORITY")
            # PRIORITY is advisory and unknown frame types are ignored (RFC 9113, 5.5)
        del buffer[:position]
        if credit:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", credit)))
        if self.going_away and not self.streams:
            self._close_soon()

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if not stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "DATA on stream 0")
        stream = self.streams.get(stream_id)
        if stream is None or stream.received:
            if stream_id > self.last_stream_id:
                raise ProtocolViolation(PROTOCOL_ERROR, f"DATA on stream {stream_id}, which was never opened")
            return  # a stream already answered and closed: nothing to do with it
        data = _unpadded(flags, payload, "DATA")
        if flags & END_STREAM:
            stream.received = True
        elif payload:
            self.out.append(frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", len(payload))))
        if stream.answered:
            return
        stream.size += len(data)
        if stream.size > self.server.max_message_bytes + 5:
            self._reply(
                stream,
                GrpcReply(
                    RESOURCE_EXHAUSTED,
                    message=f"Received message larger than max ({stream.size - 5} vs. "
                    f"{self.server.max_message_bytes})",
                ),
            )
            return
        if self.held + len(data) > self.server.max_connection_bytes:
            self._reply(
                stream,
                GrpcReply(
                    RESOURCE_EXHAUSTED,
                    message=f"the calls in progress on this connection hold more than "
                    f"{self.server.max_connection_bytes} bytes of requests: send fewer large calls at once",
                ),
            )
            return
        stream.body.append(data)
        stream.held += len(data)
        self.held += len(data)
        if stream.received:
            self._dispatch(stream)

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if not stream_id or not stream_id % 2:
            raise ProtocolViolation(
                PROTOCOL_ERROR, f"HEADERS on stream {stream_id}: a client opens odd streams"
            )
        block = _unpadded(flags, payload, "HEADERS")
        if flags & PRIORITY_FLAG:
            if len(block) < 5:
                raise ProtocolViolation(PROTOCOL_ERROR, "HEADERS too short for its priority")
            block = block[5:]
        if flags & END_HEADERS:
            self._on_header_block(stream_id, flags, block)
        else:
            self.header_block = (stream_id, flags, bytearray(block))

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self.header_block is None or self.header_block[0] != stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "CONTINUATION without the HEADERS it continues")
        _, first_flags, block = self.header_block
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise ProtocolViolation(PROTOCOL_ERROR, f"a header block above {MAX_HEADER_BLOCK} bytes")
        if flags & END_HEADERS:
            self.header_block = None
            self._on_header_block(stream_id, first_flags, bytes(block))

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block, raw=True)  # always: the peer's encoder state depends on it
        except HPACKError as exc:
            raise ProtocolViolation(COMPRESSION_ERROR, f"undecodable header block: {exc}") from None
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers from the client: they end its request
            if not flags & END_STREAM:
                raise ProtocolViolation(
                    PROTOCOL_ERROR, f"a second HEADERS on stream {stream_id} without END_STREAM"
                )
            stream.received = True
            if not stream.answered:
                self._dispatch(stream)
            return
        if stream_id <= self.last_stream_id:
            if self.going_away:
                return
            raise ProtocolViolation(STREAM_CLOSED, f"HEADERS on closed stream {stream_id}")
        self.last_stream_id = stream_id
        if self.going_away or self.server.shutting_down:
            self.out.append(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self.out.append(frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM)))
            return
        stream = _Stream(stream_id, self.peer_initial_window)
        self.streams[stream_id] = stream
        fields = dict(headers)
        stream.path = fields.get(b":path", b"").decode("latin-1")
        if flags & END_STREAM:
            stream.received = True
        if fields.get(b":method") != b"POST":
            self._reply_http(stream, 405)
        elif not fields.get(b"content-type", b"").startswith(b"application/grpc"):
            self._reply_http(stream, 415)
        else:
            timeout = fields.get(b"grpc-timeout")
            if timeout is not None:
                seconds = parse_timeout(timeout.decode("latin-1"))
                if seconds is not None:
                    stream.timer = asyncio.get_running_loop().call_later(seconds, self._deadline, stream)
            if stream.received:
                self._dispatch(stream)

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id:
            raise ProtocolViolation(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "SETTINGS of a length not a multiple of 6")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolViolation(FLOW_CONTROL_ERROR, f"initial window {value} above 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not MIN_FRAME_SIZE <= value <= MAX_FRAME_SIZE:
                    raise ProtocolViolation(PROTOCOL_ERROR, f"max frame size {value} out of range")
                self.peer_max_frame = value
            # HEADER_TABLE_SIZE: the literals sent never use the dynamic table, any size suits them
        self.out.append(frame(SETTINGS, ACK, 0))
        self._send_blocked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolViolation(FRAME_SIZE_ERROR, "WINDOW_UPDATE of a length other than 4")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ProtocolViolation(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolViolation(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                return
            if not increment or stream.window + increment > MAX_WINDOW:
                self._reset(stream, PROTOCOL_ERROR if not increment else FLOW_CONTROL_ERROR)
                return
            stream.window += increment
        self._send_blocked()

    # -- calls ---------------------------------------------------------------------------------------

    def _dispatch(self, stream: _Stream) -> None:
        body = b"".join(stream.body)
        stream.body = []
        if len(body) < 5:
            self._reply(stream, GrpcReply(INTERNAL, message="the call carried no request message"))
            return
        compressed = body[0]
        length = int.from_bytes(body[1:5], "big")
        if compressed:
            self._reply(
                stream,
                GrpcReply(
                    UNIMPLEMENTED, message="compressed messages are not accepted: send grpc-encoding identity"
                ),
            )
        elif length != len(body) - 5:
            self._reply(stream, GrpcReply(INTERNAL, message="a unary call takes exactly one request message"))
        else:
            stream.task = asyncio.get_running_loop().create_task(self._answer(stream, body[5:]))

    async def _answer(self, stream: _Stream, message: bytes) -> None:
        try:
            reply = await self.server.handler(stream.path, message)
        except asyncio.CancelledError:
            return  # the client reset the call, or its deadline passed (answered there)
        except Exception as exc:  # noqa: BLE001 - the handler's own envelope should have caught it
            log.exception("gRPC %s failed", stream.path)
            reply = GrpcReply(INTERNAL, message=f"internal server error: {type(exc).__name__}: {exc}")
        stream.task = None
        if self.streams.get(stream.id) is stream and not self.closed:
            self._reply(stream, reply)
            self._flush()

    def _deadline(self, stream: _Stream) -> None:
        stream.timer = None
        if self.streams.get(stream.id) is stream and not stream.answered:
            if stream.task is not None:
                stream.task.cancel()
            self._reply(stream, GrpcReply(DEADLINE_EXCEEDED, message="Deadline Exceeded"))
            self._flush()

    # -- frames out --------------------------------------------------------------------------------

    def _reply(self, stream: _Stream, reply: GrpcReply) -> None:
        stream.answered = True
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if reply.code != OK:  # trailers only
            block = (
                _STATUS_200
                + literal(b"content-type", b"application/grpc")
                + trailers(reply.code, reply.message)
            )
            self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
            self._close_stream(stream)
            return
        payload = reply.payload
        stream.unsent = b"\x00" + struct.pack(">I", len(payload)) + payload
        self.out.append(frame(HEADERS, END_HEADERS, stream.id, _RESPONSE_HEAD))
        self._send_data(stream)

    def _reply_http(self, stream: _Stream, status: int) -> None:
        """Not a gRPC request: an HTTP status and nothing else (as gRPC servers answer such requests)."""
        stream.answered = True
        block = literal(b":status", str(status).encode())
        self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        self._close_stream(stream)

    def _send_data(self, stream: _Stream) -> None:
        """As much of the stream's answer as the windows allow, then its trailers once all is sent."""
        unsent = stream.unsent
        while unsent:
            size = min(len(unsent), stream.window, self.send_window, self.peer_max_frame)
            if size <= 0:
                self.blocked[stream.id] = stream
                stream.unsent = unsent
                return
            self.out.append(frame(DATA, 0, stream.id, unsent[:size]))
            unsent = unsent[size:]
            stream.window -= size
            self.send_window -= size
        stream.unsent = b""
        self.blocked.pop(stream.id, None)
        self.out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream.id, _TRAILERS_OK))
        self._close_stream(stream)

    def _send_blocked(self) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            self._send_data(stream)

    def _close_stream(self, stream: _Stream) -> None:
        """The answer has ended the stream on this side; a client still sending is told to stop."""
        if not stream.received:
            self.out.append(frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR)))
        self.streams.pop(stream.id, None)
        self._forget(stream, cancel=False)
        if self.going_away and not self.streams:
            self._close_soon()

    def _reset(self, stream: _Stream, code: int) -> None:
        self.out.append(frame(RST_STREAM, 0, stream.id, struct.pack(">I", code)))
        self.streams.pop(stream.id, None)
        self._forget(stream, cancel=True)

    def _forget(self, stream: _Stream, cancel: bool) -> None:
        self.held -= stream.held
        stream.held = 0
        self.blocked.pop(stream.id, None)
        if stream.timer is not None:
            stream.timer.cancel()
            stream.timer = None
        if cancel and stream.task is not None:
            stream.task.cancel()
            stream.task = None

    def _flush(self) -> None:
        if self.out and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    # -- the connection's end ------------------------------------------------------------------------

    def go_away(self, code: int, reason: str) -> None:
        """GOAWAY naming the last stream taken; with NO_ERROR the calls received are still answered."""
        if self.closed:
            return
        if not self.going_away or code != NO_ERROR:
            debug = reason.encode()[:MAX_STATUS_MESSAGE]
            self.out.append(frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream_id, code) + debug))
        self.going_away = True
        self._flush()
        if code == NO_ERROR and not self.streams:
            self._close_soon()

    def _close_soon(self) -> None:
        if self.transport is not None and not self.closed:
            self._flush()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


def _unpadded(flags: int, payload: bytes, kind: str) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation(PROTOCOL_ERROR, f"{kind} padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]
