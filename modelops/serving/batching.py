"""Server-side dynamic batching: concurrent requests merged into one signature call.

All inference runs on one dedicated thread, off the event loop. With batching on, each
(version, signature) pair has a queue; whenever the inference thread is free, everything queued
(up to ``max_batch_size`` rows) becomes one call and each caller gets its own slice back. Requests
therefore batch naturally while a call is running, and a lone request never waits: the bounded
wait ``batch_timeout_ms`` is only spent when other requests are already being received (they are
received but not yet queued), like TF Serving's ``batch_timeout_micros`` but without the idle
penalty for a single client.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelops.serving.repository import SignatureRunner

Columns = dict[str, np.ndarray]


class InferenceThread:
    """The one thread every model call runs on, in submission order; callers await on their loop.

    Leaner than ``loop.run_in_executor`` on a one-worker pool: no work item, pool bookkeeping or
    second future per call.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="inference", daemon=True)
        self._thread.start()

    def run(self, runner: SignatureRunner, columns: Columns) -> asyncio.Future[Columns]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Columns] = loop.create_future()
        if self._closed:
            future.set_exception(RuntimeError("the inference thread is closed"))
        else:
            self._jobs.put((loop, future, runner, columns))
        return future

    def close(self) -> None:
        """Calls still queued are cancelled; the one running finishes."""
        self._closed = True
        self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, runner, columns = job
            if self._closed:
                _settle_threadsafe(loop, future, None, asyncio.CancelledError())
                continue
            try:
                result = runner(columns)
            except BaseException as exc:  # the caller gets whatever the model raised
                _settle_threadsafe(loop, future, None, exc)
            else:
                _settle_threadsafe(loop, future, result, None)


def _settle_threadsafe(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Columns],
    result: Columns | None,
    error: BaseException | None,
) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass


def _settle(future: asyncio.Future[Columns], result: Columns | None, error: BaseException | None) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


@dataclass
class Arrivals:
    """Requests the server has started handling but not yet handed to the engine (being parsed)."""

    count: int = 0


@dataclass
class _Item:
    columns: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]


@dataclass
class InferenceEngine:
    """Runs signature calls on one inference thread, batching concurrent requests when enabled."""

    batching: bool = True
    max_batch_size: int = 1024
    batch_timeout_s: float = 0.001
    arrivals: Arrivals = field(default_factory=Arrivals)
    batches: int = 0  # signature calls made; /metrics-like introspection for tests and the bench
    batched_rows: int = 0
    # Called with (runner, rows) once per signature call, e.g. ServingMetrics.observe_batch.
    batch_observer: Callable[[SignatureRunner, int], None] | None = None

    def __post_init__(self) -> None:
        self._inference = InferenceThread()
        self._queues: dict[int, _SignatureQueue] = {}

    async def predict(
        self, runner: SignatureRunner, columns: dict[str, np.ndarray], rows: int
    ) -> dict[str, np.ndarray]:
        if not self.batching or not runner.batchable or rows >= self.max_batch_size:
            self._count_call(runner, rows)
            return await self._inference.run(runner, columns)
        queue = self._queues.get(id(runner))
        if queue is None:
            queue = self._queues[id(runner)] = _SignatureQueue(self, runner)
        return await queue.submit(columns, rows)

    def _count_call(self, runner: SignatureRunner, rows: int) -> None:
        self.batches += 1
        self.batched_rows += rows
        if self.batch_observer is not None:
            self.batch_observer(runner, rows)

    def close(self) -> None:
        self._inference.close()


class _SignatureQueue:
    def __init__(self, engine: InferenceEngine, runner: SignatureRunner) -> None:
        self.engine = engine
        self.runner = runner
        self.pending: deque[_Item] = deque()
        self.arrived: asyncio.Event | None = None
        self.worker: asyncio.Task[None] | None = None
        self.busy = False  # a call of this queue is being made (by the drain task or a lone caller)

    async def submit(self, columns: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        engine = self.engine
        if not self.busy and not self.pending and engine.arrivals.count == 0:
            return await self._call_alone(columns, rows)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
        self.pending.append(_Item(columns, rows, future))
        if self.arrived is None:
            self.arrived = asyncio.Event()
        self.arrived.set()
        if not self.busy:
            self._start_drain()
        return await future

    async def _call_alone(self, columns: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """Nothing queued, nothing being received: the caller makes the call itself, without the
        drain task and the second future; requests arriving meanwhile queue for the next call."""
        self.busy = True
        try:
            self.engine._count_call(self.runner, rows)
            return await self.engine._inference.run(self.runner, columns)
        finally:
            self.busy = False
            if self.pending:  # queued while this call ran
                self._start_drain()

    def _start_drain(self) -> None:
        self.busy = True  # from now: the task is created but may not have started yet
        self.worker = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            await self._drain_pending()
        finally:
            self.busy = False

    async def _drain_pending(self) -> None:
        engine = self.engine
        while self.pending:
            batch = self._take([])
            deadline = time.monotonic() + engine.batch_timeout_s
            # others are being received right now: give them a bounded moment to join this batch
            while (
                self._rows(batch) < engine.max_batch_size
                and engine.arrivals.count > 0
                and (remaining := deadline - time.monotonic()) > 0
            ):
                assert self.arrived is not None
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), remaining)
                except TimeoutError:
                    pass
                batch = self._take(batch)
            engine._count_call(self.runner, self._rows(batch))
            try:
                outputs = await engine._inference.run(self.runner, _concatenate(batch))
            except Exception as exc:  # the model failed: every caller in the batch gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            offset = 0
            for item in batch:
                if not item.future.done():  # the caller may have gone away
                    item.future.set_result({k: v[offset : offset + item.rows] for k, v in outputs.items()})
                offset += item.rows

    def _take(self, batch: list[_Item]) -> list[_Item]:
        rows = self._rows(batch)
        limit = self.engine.max_batch_size
        while self.pending and (not batch or rows + self.pending[0].rows <= limit):
            item = self.pending.popleft()
            batch.append(item)
            rows += item.rows
        return batch

    @staticmethod
    def _rows(batch: list[_Item]) -> int:
        return sum(item.rows for item in batch)


def _concatenate(batch: list[_Item]) -> dict[str, np.ndarray]:
    if len(batch) == 1:
        return batch[0].columns
    names = batch[0].columns.keys()
    return {name: np.concatenate([item.columns[name] for item in batch]) for name in names}
