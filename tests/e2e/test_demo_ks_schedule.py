"""`modelops demo` and the ks-check deployment, on a real Prefect server.

Its optional extra schedule (``monitoring.demo_interval_s``): added for the demo's length and removed
after it; off by default, when a schedule left by a killed demo is removed too.

Its KS check after each period and the deployment's one slot: a run asked for while a scheduled run
holds the slot would wait ~30 s in AwaitingConcurrencySlot, so the demo takes a scheduled run that
checks the period's traffic, waits for one that started before that traffic was shipped, and asks for
a run of its own only when the slot is free."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import IntervalSchedule
from prefect.states import Completed, Running, Scheduled

from modelops.cli.demo_loop import DEMO_SCHEDULE_SLUG, LoopDriver, short_ks_schedule
from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.prefect_client import prefect_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def deployment_id():
    with prefect_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("ks-check")
        deployment = client.create_deployment(flow_id=flow_id, name="ks-check")
        yield deployment
        for run in client.read_flow_runs():
            if run.deployment_id == deployment:
                client.delete_flow_run(run.id)
        client.delete_deployment(deployment)


def _config(interval_s: int) -> ModelOpsConfig:
    config = load_config()
    return config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"demo_interval_s": interval_s})}
    )


def _intervals(deployment_id) -> dict[str | None, float]:
    with prefect_client(sync_client=True) as client:
        schedules = client.read_deployment_schedules(deployment_id)
    return {
        s.slug: s.schedule.interval.total_seconds()
        for s in schedules
        if isinstance(s.schedule, IntervalSchedule)
    }


def test_a_positive_interval_schedules_ks_check_for_the_demo_only(deployment_id):
    said: list[str] = []
    with short_ks_schedule(_config(7), said.append):
        assert _intervals(deployment_id) == {DEMO_SCHEDULE_SLUG: 7.0}
    assert _intervals(deployment_id) == {}
    assert "demo schedule every 7 s" in said[0] and "removed" in said[-1]


def test_by_default_no_schedule_is_added_and_one_left_by_a_killed_demo_is_removed(deployment_id):
    assert load_config().monitoring.demo_interval_s == 0
    with prefect_client(sync_client=True) as client:
        client.create_deployment_schedules(
            deployment_id, [(IntervalSchedule(interval=timedelta(seconds=5)), True)], slug=DEMO_SCHEDULE_SLUG
        )
    said: list[str] = []
    with short_ks_schedule(load_config(), said.append):
        assert _intervals(deployment_id) == {}
    assert said == []


# ------------------------------------------------------------- the check after a period, and the slot


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


def test_with_the_slot_free_a_run_is_asked_for(deployment_id):
    far = _run(deployment_id, Scheduled(scheduled_time=datetime.now(UTC) + timedelta(minutes=10)))
    said: list[str] = []
    asked = _driver(said).check_now(datetime.now(UTC))
    assert _runs_of(deployment_id) == {far.id, UUID(asked)}
    assert "a run asked for now" in said[-1]


def test_a_scheduled_run_started_after_the_traffic_is_the_check(deployment_id):
    shipped_at = datetime.now(UTC)
    running = _run(deployment_id, Running())
    said: list[str] = []
    assert _driver(said).check_now(shipped_at) == str(running.id)
    assert _runs_of(deployment_id) == {running.id}  # none asked for
    assert "checks this period" in said[-1]


def test_a_scheduled_run_due_within_the_workers_prefetch_is_the_check(deployment_id):
    due = _run(deployment_id, Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=5)))
    assert _driver([]).check_now(datetime.now(UTC)) == str(due.id)
    assert _runs_of(deployment_id) == {due.id}


def test_a_run_started_before_the_traffic_is_waited_for_then_a_run_is_asked_for(deployment_id):
    running = _run(deployment_id, Running())
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
