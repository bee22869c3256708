"""One answer to every malformed reply: the REST client against a real (tiny, local) HTTP server.

The server answers ``:predict`` with whatever a test sets, byte for byte. Each row of the table is
sent through the blocking client, the asyncio client, the smoke test and the scoring client: all
four raise (or, for the scoring client, record) the same :class:`ServingClientError` kind and the
same message.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.network import free_port

from modelops.data.schema import HMEQ_SCHEMA
from modelops.scoring.client import TrafficSettings, run_traffic
from modelops.scoring.source import ReplayRecords
from modelops.scoring.spool import ERRORS_DIR
from modelops.serving import rest_client
from modelops.serving.rest_client import (
    AsyncHttpTransport,
    AsyncServingClient,
    HttpTransport,
    ServingClient,
    ServingClientError,
    SmokeTestError,
)

MODEL = "m"
RECORDS = [{"x": 1.0, "c": "a"}, {"x": None, "c": None}]
STATUS = {"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]}
METADATA = {
    "model_spec": {"name": MODEL},
    "metadata": {
        "signature_def": {
            "signature_def": {
                "serving_default": {"inputs": {"x": {"dtype": "DT_FLOAT"}, "c": {"dtype": "DT_STRING"}}}
            }
        }
    },
}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


Replies = dict[tuple[str, str], tuple[int, bytes]]


class CannedServer(ThreadingHTTPServer):
    """Answers ``replies[(method, path)] = (status, body bytes)``, after ``delay_s``; keeps what it got."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], replies: Replies) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.replies = replies
        self.delay_s = 0.0
        self.received: list[tuple[str, str, bytes]] = []


@contextmanager
def canned_server(
    replies: Replies, handler: type[BaseHTTPRequestHandler] | None = None
) -> Iterator[CannedServer]:
    server = CannedServer(handler or CannedServing, replies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class CannedServing(BaseHTTPRequestHandler):
    server: CannedServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.received.append((self.command, self.path, self.rfile.read(length)))
        status, body = self.server.replies.get((self.command, self.path), (404, b'{"error": "no route"}'))
        delay = self.server.delay_s
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except BrokenPipeError:  # the client gave up waiting (the timeout test)
            pass

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def server() -> Iterator[CannedServer]:
    replies: Replies = {
        ("GET", f"/v1/models/{MODEL}"): (200, _json(STATUS)),
        ("GET", f"/v1/models/{MODEL}/metadata"): (200, _json(METADATA)),
        ("POST", f"/v1/models/{MODEL}:predict"): (200, _json({"predictions": [0.25, 0.75]})),
    }
    with canned_server(replies) as server:
        yield server


def _url(server: CannedServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _answer_predict(server: CannedServer, status: int, body: bytes) -> None:
    server.replies[("POST", f"/v1/models/{MODEL}:predict")] = (status, body)


# (id, HTTP status, body of the :predict answer, kind, a piece of the message)
BAD, NOT_A_NUMBER = "bad_response", "which is not a number"
MALFORMED = [
    ("not-json", 200, b"<html>upstream hiccup</html>", BAD, "not JSON: <html>upstream hiccup"),
    ("empty-body", 200, b"", BAD, "not JSON: (an empty body)"),
    ("json-not-an-object", 200, b"[0.25, 0.75]", BAD, "not a JSON object"),
    ("no-predictions", 200, _json({"outputs": [0.25, 0.75]}), BAD, "no 'predictions'"),
    ("error-with-200", 200, _json({"error": "busy"}), BAD, "no 'predictions' but the error 'busy'"),
    ("too-few", 200, _json({"predictions": [0.25]}), BAD, "answered 1 predictions for 2 records"),
    ("too-many", 200, _json({"predictions": [0.1, 0.2, 0.3]}), BAD, "3 predictions for 2 records"),
    ("not-a-list", 200, _json({"predictions": 0.25}), BAD, "predictions for 2 records"),
    ("null", 200, b'{"predictions": [0.25, null]}', BAD, "null as prediction 1"),
    ("nan-token", 200, b'{"predictions": [NaN, 0.75]}', BAD, "prediction 0 = nan, which is not a finite"),
    ("infinity", 200, b'{"predictions": [0.25, Infinity]}', BAD, "prediction 1 = inf"),
    ("string", 200, _json({"predictions": [0.25, "0.75"]}), BAD, f"prediction 1 = '0.75', {NOT_A_NUMBER}"),
    ("boolean", 200, _json({"predictions": [True, 0.75]}), BAD, f"prediction 0 = True, {NOT_A_NUMBER}"),
    ("two-values", 200, _json({"predictions": [[0.2, 0.8], [0.3, 0.7]]}), BAD, NOT_A_NUMBER),
    ("named-outputs", 200, _json({"predictions": [{"a": 1, "b": 2}] * 2}), BAD, "outputs ['a', 'b']"),
    ("error-400", 400, _json({"error": "Could not parse input"}), "http_4xx", "HTTP 400: Could not parse"),
    ("error-404", 404, _json({"error": "Servable not found"}), "http_4xx", "HTTP 404: Servable not found"),
    ("error-500", 500, _json({"error": "No variable dense"}), "http_5xx", "HTTP 500: No variable dense"),
    ("error-503-not-json", 503, b"no healthy upstream", "http_5xx", "HTTP 503: no healthy upstream"),
]  # fmt: skip


def _sync_error(url: str) -> ServingClientError:
    with pytest.raises(ServingClientError) as caught:
        ServingClient(url).predict(MODEL, RECORDS)
    return caught.value


@pytest.mark.parametrize("name, status, body, kind, fragment", MALFORMED, ids=[row[0] for row in MALFORMED])
def test_every_malformed_reply_is_one_error_type_with_a_clear_message(
    server, name, status, body, kind, fragment
):
    _answer_predict(server, status, body)
    url = _url(server)
    error = _sync_error(url)
    assert type(error) is ServingClientError
    assert error.kind == kind
    assert fragment in str(error), str(error)
    assert str(error).startswith(f"POST {url}/v1/models/{MODEL}:predict answered "), str(error)
    assert error.status == (status if status >= 400 else None)

    async def through_asyncio() -> ServingClientError:
        async with AsyncServingClient(AsyncHttpTransport(url)) as client:
            with pytest.raises(ServingClientError) as caught:
                await client.predict(MODEL, RECORDS)
            return caught.value

    same = asyncio.run(through_asyncio())
    assert (type(same), same.kind, str(same), same.status) == (type(error), kind, str(error), error.status)

    with pytest.raises(ServingClientError) as smoke:
        rest_client.smoke_test(url, MODEL, RECORDS)
    assert (type(smoke.value), smoke.value.kind, str(smoke.value)) == (type(error), kind, str(error))


@pytest.mark.parametrize(
    "name, status, body, kind, fragment", MALFORMED[::3], ids=[r[0] for r in MALFORMED[::3]]
)
def test_the_scoring_client_records_the_same_kind_and_message(
    server, tmp_path, name, status, body, kind, fragment
):
    _answer_predict(server, status, body)
    url = _url(server)
    expected = _sync_error(url)
    records = ReplayRecords(
        instances=[{"x": 1.0, "c": "a"}, {"x": float("nan"), "c": ""}],
        labels=[None, None],
        schema=HMEQ_SCHEMA,
        period=None,
        source="canned",
    )
    settings = TrafficSettings(
        url=url, model_name=MODEL, spool_dir=tmp_path / "spool", concurrency=1, batch_size=2
    )
    summary = run_traffic(records, settings)
    assert (summary.ok, summary.errors, summary.errors_by_kind) == (0, 2, {kind: 2})
    errors = [
        json.loads(line)
        for p in (tmp_path / "spool" / ERRORS_DIR).glob("errors-*")
        for line in p.read_text().splitlines()
    ]
    assert [(e["kind"], e["error"], e["status"]) for e in errors] == [
        (kind, str(expected), expected.status)
    ] * 2


def test_good_replies_in_row_and_columnar_form(server):
    url = _url(server)
    client = ServingClient(url)
    assert client.predict(MODEL, RECORDS) == [0.25, 0.75]
    method, path, sent = server.received[-1]
    assert (method, path) == ("POST", f"/v1/models/{MODEL}:predict")
    assert (
        sent == b'{"instances": [{"x": 1.0, "c": "a"}, {"x": NaN, "c": ""}]}'
    )  # NaN token, "" for a category

    _answer_predict(server, 200, _json({"outputs": [[0.25], [0.75]]}))
    assert client.predict(MODEL, RECORDS, columnar=True) == [0.25, 0.75]
    assert server.received[-1][2] == b'{"inputs": {"x": [1.0, NaN], "c": ["a", ""]}}'
    _answer_predict(server, 200, _json({"outputs": {"score": [0.5, 0.5], "logit": [0.0, 0.0]}}))
    assert client.predict(MODEL, RECORDS, columnar=True) == [0.5, 0.5]
    _answer_predict(
        server, 200, _json({"predictions": [{"score": 0.1, "logit": -2.2}, {"score": 0.9, "logit": 2.2}]})
    )
    assert client.predict(MODEL, RECORDS) == [0.1, 0.9]


@pytest.mark.parametrize(
    "reply, kind, fragment",
    [
        ((200, b"not json"), "bad_response", "not JSON"),
        (
            (200, _json({"model_version_status": "AVAILABLE"})),
            "bad_response",
            "no 'model_version_status' list",
        ),
        ((200, _json({})), "bad_response", "no 'model_version_status' list"),
        ((404, _json({"error": "Servable not found"})), "http_4xx", "HTTP 404: Servable not found"),
    ],
)
def test_malformed_status_replies(server, reply, kind, fragment):
    server.replies[("GET", f"/v1/models/{MODEL}")] = reply
    with pytest.raises(ServingClientError, match=fragment) as caught:
        rest_client.model_status(_url(server), MODEL)
    assert caught.value.kind == kind


def test_metadata_without_the_signature(server):
    url = _url(server)
    server.replies[("GET", f"/v1/models/{MODEL}/metadata")] = (200, _json({"metadata": {}}))
    with pytest.raises(ServingClientError, match="no metadata.signature_def") as caught:
        rest_client.signature_inputs(url, MODEL, refresh=True)
    assert caught.value.kind == "bad_response"
    server.replies[("GET", f"/v1/models/{MODEL}/metadata")] = (200, _json(METADATA))
    with pytest.raises(
        ServingClientError, match=r"no signature 'other'; it has \['serving_default'\]"
    ) as caught:
        rest_client.signature_inputs(url, MODEL, signature="other", refresh=True)
    assert caught.value.kind == "signature"


def test_a_record_that_cannot_be_sent_is_named_and_nothing_is_sent(server):
    before = len(server.received)
    with pytest.raises(ServingClientError, match="record 1: x='many' is not a number") as caught:
        ServingClient(_url(server)).predict(MODEL, [{"x": 1.0}, {"x": "many"}])
    assert caught.value.kind == "bad_record"
    assert [r[0] for r in server.received[before:]] == ["GET"]  # metadata only


def test_unreachable_and_slow_servers(server):
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServingClientError, match="the server is unreachable") as caught:
        rest_client.predict(closed, MODEL, RECORDS)
    assert caught.value.kind == "connect"

    server.delay_s = 1.0
    with pytest.raises(ServingClientError, match=r"no answer within 0.2 s") as caught:
        ServingClient(HttpTransport(_url(server), timeout=0.2)).status(MODEL)
    assert caught.value.kind == "timeout"


def test_smoke_test_checks_version_and_probabilities(server):
    url = _url(server)
    _answer_predict(server, 200, _json({"predictions": [[0.25]]}))
    assert rest_client.smoke_test(url, MODEL, expected_version=1) == [0.25]  # default: one all-missing record
    assert server.received[-1][2] == b'{"instances": [{"x": NaN, "c": ""}]}'
    with pytest.raises(SmokeTestError, match="serves version 1, expected 2") as caught:
        rest_client.smoke_test(url, MODEL, expected_version=2)
    assert caught.value.kind == "smoke"
    _answer_predict(server, 200, _json({"predictions": [1.5, 0.5]}))
    with pytest.raises(SmokeTestError, match=r"not finite probabilities in \[0, 1\] \(record 0: 1.5\)"):
        rest_client.smoke_test(url, MODEL, RECORDS)


def test_the_version_header_is_read(tmp_path: Path) -> None:
    class WithVersion(CannedServing):
        def end_headers(self) -> None:
            self.send_header("X-Model-Version", "7")
            super().end_headers()

    replies: Replies = {("POST", f"/v1/models/{MODEL}:predict"): (200, _json({"predictions": [0.5]}))}
    with canned_server(replies, WithVersion) as server:
        prediction = ServingClient(_url(server)).predict_instances(MODEL, [{"x": 1.0}])
    assert (prediction.scores, prediction.model_version) == ([0.5], "7")


class DroppingServing(CannedServing):
    """Closes the connection without an answer for the first ``server.drops`` requests, as a server
    does that closes an idle keep-alive connection just as the client sends on it."""

    def _answer(self) -> None:
        if self.server.drops > 0:
            self.server.drops -= 1
            length = int(self.headers.get("Content-Length") or 0)
            self.server.received.append((self.command, self.path, self.rfile.read(length)))
            self.close_connection = True
            self.connection.shutdown(2)  # no status line: the client reads EOF
            return
        super()._answer()

    do_GET = do_POST = _answer


@contextmanager
def dropping_server(drops: int) -> Iterator[CannedServer]:
    replies: Replies = {
        ("GET", f"/v1/models/{MODEL}/metadata"): (200, _json(METADATA)),
        ("POST", f"/v1/models/{MODEL}:predict"): (200, _json({"predictions": [0.25, 0.75]})),
    }
    with canned_server(replies, DroppingServing) as server:
        server.drops = drops  # type: ignore[attr-defined]
        yield server


def _sent_twice_first(server: CannedServer) -> bool:
    """The first request (dropped) and the next one are the same request: it was sent once more."""
    return len(server.received) >= 2 and server.received[0] == server.received[1]


def test_a_connection_closed_without_an_answer_is_sent_once_more():
    with dropping_server(drops=1) as server:
        assert ServingClient(HttpTransport(_url(server))).predict(MODEL, RECORDS) == [0.25, 0.75]
        assert _sent_twice_first(server)
    with dropping_server(drops=1) as server:

        async def predict() -> list[float]:
            transport = AsyncHttpTransport(_url(server))
            try:
                return await AsyncServingClient(transport).predict(MODEL, RECORDS)
            finally:
                await transport.aclose()

        assert asyncio.run(predict()) == [0.25, 0.75]
        assert _sent_twice_first(server)


def test_a_server_that_keeps_closing_is_unreachable_after_two_tries():
    with dropping_server(drops=10) as server:
        with pytest.raises(ServingClientError, match="the server is unreachable") as caught:
            ServingClient(HttpTransport(_url(server))).predict(MODEL, RECORDS)
        assert caught.value.kind == "connect"
        assert len(server.received) == 2 and _sent_twice_first(server)
