"""Server-side dynamic batching: concurrent requests merged into one signature call.

All inference runs on one dedicated thread. Callers hand it their decoded columns from the event loop
(REST, :meth:`InferenceEngine.predict`) or from a gRPC handler thread
(:meth:`InferenceEngine.predict_blocking`); both go through the same queue, so REST and gRPC requests
are merged into the same calls. With batching on, whenever the inference thread is free it takes the
oldest request and everything queued behind it for the same signature (whole requests, in arrival
order, up to ``max_batch_size`` rows) as one call, and gives each caller its own slice back. Requests
therefore batch naturally while a call is running, and a lone request never waits: the bounded wait
``batch_timeout_ms`` is only spent when other requests are already being received (counted by
:class:`Arrivals`, not yet queued), like TF Serving's ``batch_timeout_micros`` but without the idle
penalty for a single client.

Batching on the inference thread rather than on the event loop keeps a request's cost on the loop to
one future and one queue put: no batch task, no second future, no event per request.

A caller on its own thread (a gRPC handler) that finds the engine idle (nothing queued, nothing being
decoded, no call running) makes the call itself instead of waking the inference thread and waiting to
be woken: two thread hand-offs fewer per call. One call at a time still holds, by a lock that the
inference thread takes too.
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


@dataclass
class Arrivals:
    """Requests the server has started handling but not yet handed to the engine (being decoded).

    ``enter``/``leave`` are called from the event loop and from gRPC handler threads, hence the lock.
    """

    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def enter(self) -> None:
        with self._lock:
            self.count += 1

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


class _Job:
    """One caller's request; ``deliver(result, error)`` hands the outcome back on the caller's side."""

    __slots__ = ("columns", "deliver", "rows", "runner")

    def __init__(
        self,
        runner: SignatureRunner,
        columns: Columns,
        rows: int,
        deliver: Callable[[Columns | None, BaseException | None], None],
    ) -> None:
        self.runner, self.columns, self.rows, self.deliver = runner, columns, rows, deliver


class _LoopCaller:
    """Delivery to a coroutine awaiting ``future`` on its event loop."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Columns]) -> None:
        self.loop, self.future = loop, future

    def __call__(self, result: Columns | None, error: BaseException | None) -> None:
        try:
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)
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


class _ThreadCaller:
    """Delivery to a thread blocked in :meth:`wait` (a lock released by the inference thread)."""

    __slots__ = ("error", "ready", "result")

    def __init__(self) -> None:
        self.result: Columns | None = None
        self.error: BaseException | None = None
        self.ready = threading.Lock()
        self.ready.acquire()

    def __call__(self, result: Columns | None, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.ready.release()

    def wait(self) -> Columns:
        self.ready.acquire()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


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
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()  # None: close() was called
        self._held: deque[_Job | None] = deque()  # taken from the queue, not yet served (inference thread)
        self._closed = False
        self._calling = threading.Lock()  # held during a signature call: one at a time, on any thread
        self._count_lock = threading.Lock()
        self._outstanding = 0  # jobs submitted and not yet in a call
        self._thread = threading.Thread(target=self._work, name="inference", daemon=True)
        self._thread.start()

    async def predict(self, runner: SignatureRunner, columns: Columns, rows: int) -> Columns:
        """From the event loop: the signature's outputs for these rows."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Columns] = loop.create_future()
        self._submit(_Job(runner, columns, rows, _LoopCaller(loop, future)))
        return await future

    def predict_blocking(self, runner: SignatureRunner, columns: Columns, rows: int) -> Columns:
        """From any thread but the inference thread (gRPC handlers): the same, waiting in this thread,
        or calling the signature in this thread when the engine is idle."""
        if self._claim_idle():
            try:
                if self._closed:
                    raise asyncio.CancelledError()
                self._count(runner, rows)
                return runner(columns)
            finally:
                self._calling.release()
        caller = _ThreadCaller()
        self._submit(_Job(runner, columns, rows, caller))
        return caller.wait()

    def close(self) -> None:
        """Calls still queued are cancelled; the one running finishes."""
        self._closed = True
        self._jobs.put(None)

    def _submit(self, job: _Job) -> None:
        if self._closed:
            job.deliver(None, asyncio.CancelledError())
            return
        with self._count_lock:
            self._outstanding += 1
        self._jobs.put(job)

    def _claim_idle(self) -> bool:
        """Take the call lock if nobody else wants it: nothing queued, held or on its way."""
        with self._count_lock:
            return (
                self._outstanding == 0 and self.arrivals.count <= 0 and self._calling.acquire(blocking=False)
            )

    def _count(self, runner: SignatureRunner, rows: int) -> None:
        self.batches += 1
        self.batched_rows += rows
        if self.batch_observer is not None:
            self.batch_observer(runner, rows)

    # -- the inference thread

    def _work(self) -> None:
        while True:
            first = self._held.popleft() if self._held else self._jobs.get()
            if first is None:
                break
            with self._calling:  # jobs keep queueing while a caller's own call runs: they join this batch
                if self.batching and first.runner.batchable and first.rows < self.max_batch_size:
                    self._call(self._gather(first))
                else:
                    self._call([first])
        for job in [*self._held, *_drain(self._jobs)]:
            if job is not None:
                job.deliver(None, asyncio.CancelledError())

    def _gather(self, first: _Job) -> list[_Job]:
        """``first`` and the requests behind it for the same signature that fit, in arrival order;
        what is not taken stays held, in order, for the next calls."""
        batch, rows, limit = [first], first.rows, self.max_batch_size
        kept: deque[_Job | None] = deque()
        full = stopping = False

        def offer(job: _Job | None) -> None:
            nonlocal rows, full, stopping
            if job is None:
                stopping = True
                kept.append(job)
            elif full or job.runner is not first.runner or not job.runner.batchable:
                kept.append(job)
            elif rows + job.rows > limit:  # whole requests only, and none overtakes another
                kept.append(job)
                full = True
            else:
                batch.append(job)
                rows += job.rows
                full = rows >= limit

        while self._held:  # held back earlier, so older than anything queued
            offer(self._held.popleft())
        deadline: float | None = None
        while not full and not stopping:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                if self.arrivals.count <= 0:  # nobody else is on the way: do not wait
                    break
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + self.batch_timeout_s
                if now >= deadline:
                    break
                try:
                    job = self._jobs.get(timeout=deadline - now)
                except queue.Empty:
                    break
            offer(job)
        self._held = kept
        return batch

    def _call(self, batch: list[_Job]) -> None:
        with self._count_lock:
            self._outstanding -= len(batch)
        if self._closed:
            for job in batch:
                job.deliver(None, asyncio.CancelledError())
            return
        runner = batch[0].runner
        self._count(runner, sum(job.rows for job in batch))
        try:
            outputs = runner(_concatenate(batch))
        except BaseException as exc:  # every caller in the batch gets whatever the model raised
            for job in batch:
                job.deliver(None, exc)
            return
        if len(batch) == 1:
            batch[0].deliver(outputs, None)
            return
        offset = 0
        for job in batch:
            job.deliver({k: v[offset : offset + job.rows] for k, v in outputs.items()}, None)
            offset += job.rows


def _concatenate(batch: list[_Job]) -> Columns:
    if len(batch) == 1:
        return batch[0].columns
    names = batch[0].columns.keys()
    return {name: np.concatenate([job.columns[name] for job in batch]) for name in names}


def _drain(jobs: queue.SimpleQueue[Any]) -> list[Any]:
    drained = []
    while True:
        try:
            drained.append(jobs.get_nowait())
        except queue.Empty:
            return drained
