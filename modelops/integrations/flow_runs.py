"""Prefect flow runs: naming a run once it knows its model and version, and one-holder slots.

A slot is a Prefect global concurrency limit of 1 (``modelops-retrain-<model>``), created on first
use. Its holder keeps a lease the Prefect client renews in the background; a holder killed
without releasing frees the slot when the lease expires (``SLOT_LEASE_S``).

Two tags on the runs make the slot explainable and repairable. A run tags itself
``wants:<slot>`` before it tries, and its holder ``holds:<slot>`` once it has the slot, so a run
that finds the slot taken names the run that has it. A slot can outlive its holder without a lease
to expire: the Prefect server keeps leases in memory, so a server restart forgets them while the
limit still counts the slot taken. A slot found taken while no other running run even wants it is
such a leftover (every live holder tagged itself before taking it): it is freed and taken.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from uuid import UUID

import httpx
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from modelops.integrations.prefect_client import prefect_client

SLOT_LEASE_S = 60.0
HOLDER_WAIT_S = 10.0  # how long a run that found the slot taken looks for the holder's tag


def rename_flow_run(flow_run_id: UUID | str, name: str, add_tags: Sequence[str] = ()) -> None:
    """Give the run ``name`` (and ``add_tags`` besides its own tags)."""
    run_id = UUID(str(flow_run_id))
    with prefect_client(sync_client=True) as client:
        tags = None
        if add_tags:
            tags = sorted(set(client.read_flow_run(run_id).tags) | set(add_tags))
        client.update_flow_run(run_id, name=name, tags=tags)


def tag_flow_run(flow_run_id: UUID | str, tags: Sequence[str]) -> None:
    """Add ``tags`` to the run's own."""
    run_id = UUID(str(flow_run_id))
    with prefect_client(sync_client=True) as client:
        client.update_flow_run(run_id, tags=sorted(set(client.read_flow_run(run_id).tags) | set(tags)))


def holder_tag(slot: str) -> str:
    return f"holds:{slot}"


def wanting_tag(slot: str) -> str:
    return f"wants:{slot}"


@contextmanager
def exclusive_slot(slot: str, run_id: UUID | str | None) -> Iterator[bool]:
    """Hold ``slot`` for the block (True), or learn at once, without waiting, that a run has it (False).

    ``run_id``: the flow run that asks (tagged, so others can name it); None outside a flow run.
    """
    _ensure_limit(slot)
    if run_id:
        tag_flow_run(run_id, [wanting_tag(slot)])
    held = _try_acquire(slot, run_id)
    if held is None and not _running_with(wanting_tag(slot), besides=run_id):
        _free(slot)  # taken, yet no live run even wants it: a holder the server forgot
        held = _try_acquire(slot, run_id)
    if held is None:
        yield False
        return
    with held:
        if run_id:
            tag_flow_run(run_id, [holder_tag(slot)])
        yield True


def slot_holder(slot: str, besides: UUID | str | None = None, wait_s: float = 0.0) -> FlowRun | None:
    """The running flow run that holds ``slot``, looked for up to ``wait_s`` (it tags itself just after
    taking the slot); the newest if a killed holder still shows Running."""
    deadline = time.monotonic() + wait_s
    while True:
        runs = _running_with(holder_tag(slot), besides)
        if runs or time.monotonic() >= deadline:
            return runs[0] if runs else None
        time.sleep(0.5)


def _running_with(tag: str, besides: UUID | str | None) -> list[FlowRun]:
    running = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
    with prefect_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]), state=running),
            sort=FlowRunSort.START_TIME_DESC,
            limit=10,
        )
    return [run for run in runs if str(run.id) != str(besides)]


def _try_acquire(slot: str, run_id: UUID | str | None) -> ExitStack | None:
    """The held slot (close it to release), or None when every slot of the limit is taken."""
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(str(run_id))) if run_id else None
    held = ExitStack()
    try:
        held.enter_context(
            concurrency(
                slot, occupy=1, max_retries=0, lease_duration=SLOT_LEASE_S, strict=True, holder=holder
            )
        )
    except ConcurrencySlotAcquisitionError as exc:
        if not _taken(exc):
            raise
        return None
    return held


def _free(slot: str) -> None:
    with prefect_client(sync_client=True) as client:
        client.update_global_concurrency_limit(slot, GlobalConcurrencyLimitUpdate(active_slots=0))


def _ensure_limit(slot: str) -> None:
    with prefect_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(slot)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=slot, limit=1))
        except ObjectAlreadyExists:
            pass  # another run created it a moment ago


def _taken(exc: ConcurrencySlotAcquisitionError) -> bool:
    """The server answered 423 Locked: every slot of the limit is held."""
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423
