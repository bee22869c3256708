"""`modelops demo`'s KS check after each period and the ks-check deployment's one slot, on a real Prefect
server: a run asked for while a scheduled run holds the slot would wait ~30 s in AwaitingConcurrencySlot,
so the demo takes a scheduled run that checks the period's traffic, waits for one that started before
that traffic was shipped, and asks for a run of its own only when the slot is free."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from prefect.client.schemas.objects import StateType
from prefect.states import Completed, Running, Scheduled

from modelops.cli.demo_loop import LoopDriver
from modelops.config import load_config
from modelops.integrations.prefect_client import prefect_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def deployment():
    with prefect_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("ks-check")
        deployment = client.create_deployment(flow_id=flow_id, name="ks-check")
        yield deployment
        for run in client.read_flow_runs():
            if run.deployment_id == deployment:
                client.delete_flow_run(run.id)
        client.delete_deployment(deployment)


def _run(deployment, state):
    """A run of the deployment in ``state`` (a Scheduled one sets its expected start time)."""
    with prefect_client(sync_client=True) as client:
        if state.is_scheduled():
            return client.create_flow_run_from_deployment(deployment, state=state)
        run = client.create_flow_run_from_deployment(deployment, state=Scheduled())
        client.set_flow_run_state(run.id, state, force=True)
        return client.read_flow_run(run.id)


def _runs_of(deployment) -> set:
    with prefect_client(sync_client=True) as client:
        return {run.id for run in client.read_flow_runs() if run.deployment_id == deployment}


def _driver(said: list[str]) -> LoopDriver:
    return LoopDriver(load_config(), reviewer=None, narrate=said.append, timeout_s=60)


def test_with_the_slot_free_a_run_is_asked_for(deployment):
    far = _run(deployment, Scheduled(scheduled_time=datetime.now(UTC) + timedelta(minutes=10)))
    said: list[str] = []
    asked = _driver(said).check_now(datetime.now(UTC))
    assert _runs_of(deployment) == {far.id, UUID(asked)}
    assert "a run asked for now" in said[-1]


def test_a_scheduled_run_started_after_the_traffic_is_the_check(deployment):
    shipped_at = datetime.now(UTC)
    running = _run(deployment, Running())
    said: list[str] = []
    assert _driver(said).check_now(shipped_at) == str(running.id)
    assert _runs_of(deployment) == {running.id}  # none asked for
    assert "checks this period" in said[-1]


def test_a_scheduled_run_due_within_the_workers_prefetch_is_the_check(deployment):
    due = _run(deployment, Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=5)))
    assert _driver([]).check_now(datetime.now(UTC)) == str(due.id)
    assert _runs_of(deployment) == {due.id}


def test_a_run_started_before_the_traffic_is_waited_for_then_a_run_is_asked_for(deployment):
    running = _run(deployment, Running())
    shipped_at = datetime.now(UTC) + timedelta(milliseconds=1)
    assert running.start_time is not None and running.start_time < shipped_at

    def finish_later() -> None:
        time.sleep(1.5)
        with prefect_client(sync_client=True) as client:
            client.set_flow_run_state(running.id, Completed(), force=True)

    finisher = threading.Thread(target=finish_later)
    finisher.start()
    said: list[str] = []
    try:
        asked = _driver(said).check_now(shipped_at)
    finally:
        finisher.join()
    with prefect_client(sync_client=True) as client:
        waited_for = client.read_flow_run(running.id)
        created = client.read_flow_run(UUID(asked)).created
    assert waited_for.state_type is StateType.COMPLETED and waited_for.end_time is not None
    assert created is not None and created > waited_for.end_time  # asked for once the slot was free
    assert any("waiting for the scheduled run" in line for line in said)
    assert "a run asked for now" in said[-1]
