"""Dynamic batching merges queued requests into one model call and gives each caller its own answer.

The engine tests hold the model call on an Event, so requests must queue behind it: the number and
size of the calls are then exact whatever the machine's speed (speeds belong in ``modelops bench``).
The server test checks, end to end with a real SavedModel, that merged answers are split back right.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable
from typing import Any

import httpx
import numpy as np
import pytest
from support import http_client
from support.network import free_port
from support.serving import ServerProcess, build_model_base, sample_records

from modelops.serving.batching import InferenceEngine
from modelops.serving.repository import SignatureRunner

MODEL = "risk"
WAIT_S = 120  # only ever reached when the mechanism is broken (it would hang otherwise)


class HeldModel(SignatureRunner):
    """A stand-in signature whose calls wait for ``release`` and are recorded (rows of each call).

    Its score for a row is the row's ``id`` times ten, so every caller can tell its own rows.
    """

    def __init__(self) -> None:
        super().__init__(name="serving_default", inputs=(), outputs=("score",), batchable=True, function=None)
        self.calls: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append([int(i) for i in columns["id"]])
        self.entered.set()
        if not self.release.wait(WAIT_S):
            raise TimeoutError("the test never released the model")
        return {"score": columns["id"] * 10.0}


def request_ids(sizes: list[int]) -> list[list[int]]:
    """Consecutive row ids for requests of the given sizes: [1, 2] -> [[0], [1, 2]]."""
    ids, start = [], 0
    for size in sizes:
        ids.append(list(range(start, start + size)))
        start += size
    return ids


class Client:
    """Callers of one engine; ``started`` counts the requests that reached the engine's queue.

    ``engine.predict`` queues a request before its first suspension, so once ``started`` counts all
    of them, every request is queued.
    """

    def __init__(self, engine: InferenceEngine, model: HeldModel) -> None:
        self.engine, self.model, self.started = engine, model, 0

    def ask(self, ids: list[int]) -> asyncio.Task[dict[str, np.ndarray]]:
        async def one() -> dict[str, np.ndarray]:
            self.started += 1
            return await self.engine.predict(self.model, {"id": np.array(ids, dtype=np.float64)}, len(ids))

        return asyncio.ensure_future(one())

    async def all_queued(self, count: int) -> None:
        while self.started < count:
            await asyncio.sleep(0)


async def settle(turns: int = 10) -> None:
    """Give every ready task of the event loop a few turns (each ``sleep(0)`` is one)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def answers(tasks: list[asyncio.Task[dict[str, np.ndarray]]]) -> list[list[float]]:
    done: Awaitable[list[Any]] = asyncio.gather(*tasks)
    return [list(result["score"]) for result in await asyncio.wait_for(done, WAIT_S)]


async def queue_behind_a_held_call(engine: InferenceEngine, sizes: list[int]) -> tuple[HeldModel, list[Any]]:
    """The first request occupies the model; the rest queue behind it; then the model is released."""
    model = HeldModel()
    client = Client(engine, model)
    ids = request_ids(sizes)
    tasks = [client.ask(ids[0])]
    assert await asyncio.to_thread(model.entered.wait, WAIT_S), "the first request never reached the model"
    tasks += [client.ask(request) for request in ids[1:]]
    await client.all_queued(len(ids))
    model.release.set()
    got = await answers(tasks)
    assert got == [[10.0 * i for i in request] for request in ids], "each caller gets its own rows"
    return model, ids


def test_requests_queued_behind_a_running_call_become_one_call():
    sizes = [1 + n % 4 for n in range(160)]  # 1..4 rows, so that splitting a merged batch is exercised
    engine = InferenceEngine(batching=True, max_batch_size=1024, batch_timeout_s=0.0)
    try:
        model, ids = asyncio.run(queue_behind_a_held_call(engine, sizes))
    finally:
        engine.close()
    assert model.calls == [ids[0], [i for request in ids[1:] for i in request]]
    assert (engine.batches, engine.batched_rows) == (2, sum(sizes))


def test_a_batch_holds_whole_requests_in_arrival_order_up_to_max_batch_size():
    sizes = [1 + n % 4 for n in range(41)]
    engine = InferenceEngine(batching=True, max_batch_size=8, batch_timeout_s=0.0)
    try:
        model, ids = asyncio.run(queue_behind_a_held_call(engine, sizes))
    finally:
        engine.close()
    expected, batch = [], []  # first come, first served, never splitting a request
    for request in ids[1:]:
        if batch and len(batch) + len(request) > 8:
            expected.append(batch)
            batch = []
        batch = batch + request
    expected.append(batch)
    assert model.calls == [ids[0], *expected]
    assert all(len(call) <= 8 for call in model.calls)


def test_requests_still_being_received_are_waited_for_and_join_the_batch():
    async def scenario() -> HeldModel:
        engine = InferenceEngine(batching=True, batch_timeout_s=3600)  # only the arrival ends the wait
        model = HeldModel()
        model.release.set()
        client = Client(engine, model)
        try:
            engine.arrivals.count = 1  # the server is parsing another request
            first = client.ask([0])
            await client.all_queued(1)
            await settle()  # the batch worker has taken it and now waits for the arriving request
            engine.arrivals.count = 0  # ... and hands it over
            second = client.ask([1, 2])
            assert await answers([first, second]) == [[0.0], [10.0, 20.0]]
        finally:
            engine.close()
        return model

    assert asyncio.run(scenario()).calls == [[0, 1, 2]]


def test_a_lone_request_does_not_wait_for_the_batch_timeout():
    async def scenario() -> HeldModel:
        engine = InferenceEngine(batching=True, batch_timeout_s=3600)  # waiting would hang the test
        model = HeldModel()
        model.release.set()
        try:
            assert await answers([Client(engine, model).ask([5])]) == [[50.0]]
        finally:
            engine.close()
        return model

    assert asyncio.run(scenario()).calls == [[5]]


def test_a_lone_request_makes_its_call_itself_and_later_arrivals_queue_for_the_next_call():
    """No drain task for a request that finds nothing queued: its own task hands the call over."""

    async def scenario() -> tuple[HeldModel, int]:
        engine = InferenceEngine(batching=True, batch_timeout_s=0.0)
        model = HeldModel()
        client = Client(engine, model)
        try:
            first = client.ask([0])
            assert await asyncio.to_thread(model.entered.wait, WAIT_S)
            tasks_during_lone_call = len(asyncio.all_tasks())  # this scenario and the caller only
            rest = [client.ask([1]), client.ask([2, 3])]
            await client.all_queued(3)
            model.release.set()
            assert await answers([first, *rest]) == [[0.0], [10.0], [20.0, 30.0]]
        finally:
            engine.close()
        return model, tasks_during_lone_call

    model, tasks = asyncio.run(scenario())
    assert tasks == 2
    assert model.calls == [[0], [1, 2, 3]]


# ---------------------------------------------------------------- end to end, real server and model


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_model_base(tmp_path_factory.mktemp("batching") / MODEL, {1: -0.3})


async def score_concurrently(url: str, requests: list[list[dict]], connections: int) -> list[list[float]]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=WAIT_S) as client:
        gate = asyncio.Semaphore(connections)

        async def one(records: list[dict]) -> list[float]:
            async with gate:
                body = json.dumps({"instances": records}).encode()
                answer = await client.post(f"{url}/v1/models/{MODEL}:predict", content=body)
                assert answer.status_code == 200, answer.text
                return answer.json()["predictions"]

        return await asyncio.gather(*(one(r) for r in requests))


@pytest.mark.slow
def test_batching_server_answers_each_request_as_the_unbatched_server_does(base):
    records = sample_records(400, seed=11)
    requests, start = [], 0  # 1..4 records each, so that splitting a merged batch back is exercised
    while start < len(records):
        size = 1 + len(requests) % 4
        requests.append(records[start : start + size])
        start += size
    with ServerProcess(base, free_port(), MODEL, "--no-batching") as plain:
        unbatched = asyncio.run(score_concurrently(plain.url, requests, connections=4))
    with ServerProcess(base, free_port(), MODEL, "--batching", "--batch-timeout-ms", "2") as batched_server:
        before = http_client.get(f"{batched_server.url}/-/stats").json()
        batched = asyncio.run(score_concurrently(batched_server.url, requests, connections=32))
        stats = http_client.get(f"{batched_server.url}/-/stats").json()
    assert [len(b) for b in batched] == [len(r) for r in requests]
    for got, want in zip(batched, unbatched, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
    # how many calls the requests took depends on timing; every row went through exactly one
    assert stats["rows"] - before["rows"] == len(records)
    assert 1 <= stats["batches"] - before["batches"] <= len(requests)


def test_closing_the_engine_finishes_the_running_call_and_cancels_the_queued_ones():
    async def scenario() -> tuple[HeldModel, list[Any]]:
        engine = InferenceEngine(batching=False)
        model = HeldModel()
        client = Client(engine, model)
        running = client.ask([1])
        assert await asyncio.to_thread(model.entered.wait, WAIT_S), "the first call never reached the model"
        queued = client.ask([2])
        await client.all_queued(2)
        await settle()
        engine.close()
        model.release.set()
        outcomes = await asyncio.wait_for(asyncio.gather(running, queued, return_exceptions=True), WAIT_S)
        return model, outcomes

    model, (first, second) = asyncio.run(scenario())
    assert list(first["score"]) == [10.0]
    assert isinstance(second, asyncio.CancelledError)
    assert model.calls == [[1]]
