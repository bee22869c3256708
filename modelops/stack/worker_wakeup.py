"""Wake the stack's worker when a flow run of its pool is scheduled, instead of waiting for its next poll.

Prefect's worker asks the server for due runs every ``PREFECT_WORKER_QUERY_SECONDS``. How soon a run the
automation creates starts depends on that poll, and so does what an idle stack costs: at a 0.25 s poll,
the Prefect server of an idle stack spent ~5 CPU-seconds a minute answering it (8.5 % of a core).

So the stack's worker also listens to the server's event stream (the websocket Prefect's own clients
use) for flow runs that enter a Scheduled-type state (``Scheduled``, ``AwaitingRetry``, ``Resuming``...)
in its work pool, and polls at once when one does. The event is sent while the server's transaction is
still open, so the run may not be visible yet: a wake-up polls up to :data:`ATTEMPTS` times,
:data:`RETRY_AFTER_S` apart, until the run is among those the worker submitted. Runs scheduled for later
(the cron schedules) get the same few polls, which find nothing due. The periodic poll stays as the
fallback: it catches whatever an event stream that dropped missed, and runs that come due later, so the
stack's poll can be slow (``stack.worker_query_seconds``).

:func:`install` hooks the listener into ``prefect worker start`` (run in this process by
:mod:`modelops.stack.worker_process`): Prefect's ``BaseWorker.start`` builds its polling loop from
``prefect.workers.base.critical_service_loop``; the hook runs that loop on a serialised poll and the
listener beside it. Every other loop (the heartbeat) is Prefect's own, unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from uuid import UUID

import anyio
import prefect.workers.base as workers_base
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import Event, ResourceSpecification

ATTEMPTS = 3  # polls per wake-up, until the run that woke the worker was submitted
RETRY_AFTER_S = 0.2
RESUBSCRIBE_AFTER_S = 5.0  # after the event stream failed; the periodic poll covers the gap
POLL_NAME = "get_and_submit_flow_runs"  # the workload of BaseWorker.start's polling loop


class Subscriber(Protocol):
    def __aiter__(self) -> AsyncIterator[Event]: ...


Subscribe = Callable[[EventFilter], AbstractAsyncContextManager[Subscriber]]
Poll = Callable[[], Awaitable[Sequence[Any]]]  # the worker's poll: the flow runs it submitted


def scheduled_runs_filter() -> EventFilter:
    """Flow runs entering a Scheduled-type state. Prefect's subscriber sets the time range itself: the
    last minute on connecting (what was scheduled while the worker started is not missed), then from
    the last event on (a reconnect replays what the gap would have lost; it drops repeats by id)."""
    return EventFilter(
        event=EventNameFilter(prefix=["prefect.flow-run."]),
        resource=EventResourceFilter(labels=ResourceSpecification({"prefect.state-type": "SCHEDULED"})),
    )


def run_in_pool(event: Event, pool: str) -> UUID | None:
    """The id of the flow run the event is about, when that run belongs to work pool ``pool``."""
    work_pool = event.resource_in_role.get("work-pool")
    if work_pool is None or work_pool.name != pool:
        return None
    prefix, _, run_id = event.resource.id.rpartition(".")
    if prefix != "prefect.flow-run":
        return None
    try:
        return UUID(run_id)
    except ValueError:
        return None


class SerialPoll:
    """The worker's poll, one call at a time: the periodic loop and the wake-ups share it."""

    def __init__(self, poll: Poll) -> None:
        self._poll = poll
        self._lock = anyio.Lock()
        self.__name__ = getattr(poll, "__name__", POLL_NAME)  # critical_service_loop prints it

    async def __call__(self) -> Sequence[Any]:
        async with self._lock:
            return await self._poll()


class Wakeups:
    """Runs that woke the worker and have not been seen submitted; polled for in bursts."""

    def __init__(self, poll: Poll, log: Callable[[str], None] = print) -> None:
        self._poll = poll
        self._log = log
        self._attempts: dict[UUID, int] = {}  # run id -> polls made for it
        self._arrived = anyio.Event()
        self.polls = 0

    def add(self, run_id: UUID) -> None:
        self._attempts.setdefault(run_id, 0)
        self._arrived.set()

    async def serve(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived = anyio.Event()
            await self._burst()

    async def _burst(self) -> None:
        while self._attempts:
            self.polls += 1
            try:
                submitted = {run.id for run in await self._poll()}
            except Exception as exc:  # noqa: BLE001 - the periodic poll reports and retries outages
                self._log(
                    f"worker wake-up: the poll failed ({type(exc).__name__}: {exc}); periodic polls go on"
                )
                self._attempts.clear()
                return
            for run_id in list(self._attempts):
                self._attempts[run_id] += 1
                if run_id in submitted or self._attempts[run_id] >= ATTEMPTS:
                    del self._attempts[run_id]
            if self._attempts:
                await anyio.sleep(RETRY_AFTER_S)


async def listen(
    wakeups: Wakeups,
    pool: str,
    subscribe: Subscribe | None = None,
    log: Callable[[str], None] = print,
    resubscribe_after_s: float = RESUBSCRIBE_AFTER_S,
) -> None:
    """Feed ``wakeups`` with the scheduled runs of ``pool``; resubscribe (after a pause) when the stream
    fails, for as long as the worker runs."""
    subscribe = subscribe or (lambda flt: get_events_subscriber(filter=flt))
    lost = False
    while True:
        try:
            async with subscribe(scheduled_runs_filter()) as subscriber:
                if lost:
                    log("worker wake-up: listening to the event stream again")
                    lost = False
                async for event in subscriber:
                    run_id = run_in_pool(event, pool)
                    if run_id is not None:
                        wakeups.add(run_id)
        except Exception as exc:  # noqa: BLE001 - never take the worker down; its periodic poll goes on
            if not lost:
                log(
                    f"worker wake-up: the event stream failed ({type(exc).__name__}: {exc}); retrying every "
                    f"{resubscribe_after_s:g} s, the periodic poll picks up runs meanwhile"
                )
                lost = True
        await anyio.sleep(resubscribe_after_s)


def install(pool: str, log: Callable[[str], None] = print) -> None:
    """Make ``prefect worker start`` in this process wake on the scheduled runs of ``pool``."""
    periodic_loop = workers_base.critical_service_loop

    async def polling_with_wakeups(workload: Any, interval: float, **options: Any) -> None:
        if getattr(workload, "__name__", "") != POLL_NAME or options.get("run_once"):
            return await periodic_loop(workload, interval, **options)
        poll = SerialPoll(workload)
        wakeups = Wakeups(poll, log)
        log(f"worker wake-up: polls when a run of pool {pool!r} is scheduled, and every {interval:g} s")
        async with anyio.create_task_group() as group:
            group.start_soon(wakeups.serve)
            group.start_soon(listen, wakeups, pool, None, log)
            try:
                await periodic_loop(poll, interval, **options)
            finally:
                group.cancel_scope.cancel()

    workers_base.critical_service_loop = polling_with_wakeups  # type: ignore[assignment]
