"""The stack's worker polls when a run of its pool is scheduled, not only on its periodic poll.

The end-to-end test runs the stack's worker process (``python -m modelops.stack.worker_process
--wake-on-events``) against a real Prefect server with a periodic poll of 300 s: a run scheduled after
the worker's first poll can only be picked up within a minute through the wake-up (Prefect's jitter
keeps the next poll at least 210 s away). The other tests drive the listener and the burst logic in
this process, against real Prefect events and a real (closed) port.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.events.clients import get_events_subscriber
from prefect.events.schemas.events import Event, Resource
from prefect.settings import PREFECT_API_URL, temporary_settings
from support.network import free_port
from support.stack import stop_process_group, wait_for

from modelops.config import PROJECT_ROOT, load_config
from modelops.integrations.prefect_client import prefect_client
from modelops.stack import components as comp
from modelops.stack import worker_wakeup
from modelops.stack.worker_wakeup import ATTEMPTS, Wakeups, listen, run_in_pool

FLOW = """
from prefect import flow

@flow(name="wakeup-probe")
def probe() -> None:
    pass
"""
PERIODIC_POLL_S = 300  # the next poll after the first is >= 210 s away (Prefect's jitter: +-30 %)
WAKEUP_DEADLINE_S = 60


def scheduled_event(run_id: UUID, pool: str | None, state_type: str = "SCHEDULED") -> Event:
    related = []
    if pool is not None:
        related.append(
            {
                "prefect.resource.id": f"prefect.work-pool.{uuid4()}",
                "prefect.resource.role": "work-pool",
                "prefect.resource.name": pool,
            }
        )
    return Event(
        event="prefect.flow-run.Scheduled",
        resource=Resource(
            {"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.state-type": state_type}
        ),
        related=related,
    )


def test_an_event_names_its_run_only_for_the_workers_pool():
    run_id = uuid4()
    assert run_in_pool(scheduled_event(run_id, "mine"), "mine") == run_id
    assert run_in_pool(scheduled_event(run_id, "theirs"), "mine") is None
    assert run_in_pool(scheduled_event(run_id, None), "mine") is None  # a run without a pool


def test_the_filter_asks_for_flow_runs_entering_a_scheduled_type_state():
    flt = worker_wakeup.scheduled_runs_filter()  # the time range is the subscriber's own (see its doc)
    both = [flt.event, flt.resource]
    assert all(f is not None and f.includes(scheduled_event(uuid4(), "p")) for f in both)
    assert not all(f is not None and f.includes(scheduled_event(uuid4(), "p", "RUNNING")) for f in both)


class Poll:
    """The worker's poll as the wake-ups see it: each call returns the runs it submitted."""

    def __init__(self, submitted_on_call: dict[int, list[UUID]] | None = None) -> None:
        self.calls = 0
        self.submitted_on_call = submitted_on_call or {}

    async def __call__(self) -> list[object]:
        self.calls += 1
        return [type("Run", (), {"id": run_id}) for run_id in self.submitted_on_call.get(self.calls, [])]


def burst(poll: Poll, run_ids: list[UUID]) -> Wakeups:
    async def scenario() -> Wakeups:
        wakeups = Wakeups(poll, log=lambda line: None)
        for run_id in run_ids:
            wakeups.add(run_id)
        task = asyncio.ensure_future(wakeups.serve())
        try:
            for _ in range(200):
                await asyncio.sleep(0.05)
                if not wakeups._attempts:
                    break
        finally:
            task.cancel()
        return wakeups

    return asyncio.run(scenario())


def test_a_wakeup_polls_until_its_run_was_submitted():
    run_id = uuid4()
    poll = Poll({2: [run_id]})  # not visible on the first poll (the server's transaction still open)
    burst(poll, [run_id])
    assert poll.calls == 2


def test_a_run_that_never_comes_due_gets_a_few_polls_and_wakeups_arriving_together_share_them():
    poll = Poll()
    wakeups = burst(poll, [uuid4() for _ in range(7)])  # e.g. a cron schedule's next seven runs
    assert poll.calls == ATTEMPTS == wakeups.polls


def test_a_failing_event_stream_is_reported_once_and_retried():
    """A real subscriber against a closed port: the listener keeps retrying and never wakes the worker."""
    lines: list[str] = []
    subscriptions: list[object] = []
    poll = Poll()

    def subscribe(flt):  # Prefect's own subscriber, counted
        subscriptions.append(flt)
        return get_events_subscriber(filter=flt, reconnection_attempts=0)

    async def scenario() -> None:
        wakeups = Wakeups(poll, log=lines.append)
        with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{free_port()}/api"}):
            task = asyncio.ensure_future(
                listen(wakeups, "pool", subscribe, lines.append, resubscribe_after_s=0.01)
            )
            deadline = time.monotonic() + 120
            while len(subscriptions) < 4 and not task.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not task.done(), "the listener must keep going"
            task.cancel()

    asyncio.run(scenario())
    assert len(subscriptions) >= 4, "it resubscribes after each failure"
    assert len(lines) == 1 and "event stream failed" in lines[0], lines
    assert poll.calls == 0


# ---------------------------------------------------------------- the worker process, real server


@pytest.fixture
def api_url(prefect_harness) -> str:
    return str(PREFECT_API_URL.value()).rstrip("/")


def _deploy(pool: str, flow_file: Path) -> UUID:
    with prefect_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = client.create_flow_from_name("wakeup-probe")
        return client.create_deployment(
            flow_id=flow_id,
            name=f"probe-{pool}",
            work_pool_name=pool,
            entrypoint=f"{flow_file.name}:probe",
            path=str(flow_file.parent),
        )


def _state(run_id: UUID) -> str:
    with prefect_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        return run.state.type.value if run.state else "NONE"


def _schedule(deployment_id: UUID) -> UUID:
    with prefect_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(deployment_id).id


@pytest.mark.slow
def test_a_run_scheduled_after_the_first_poll_starts_without_waiting_for_the_next(api_url, tmp_path):
    pool = f"wakeup-{uuid4().hex[:8]}"
    flow_file = tmp_path / "probe_flow.py"
    flow_file.write_text(FLOW)
    deployment_id = _deploy(pool, flow_file)
    first = _schedule(deployment_id)  # due before the worker starts: its first poll takes it
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "PREFECT_WORKER_QUERY_SECONDS": str(PERIODIC_POLL_S),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "modelops.stack.worker_process", "--pool", pool, "--wake-on-events"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its flow-run processes go with it at the end
        )
    try:
        wait_for(lambda: _state(first) != "SCHEDULED", 240, "the first poll taking the first run")
        wait_for(lambda: "worker wake-up: polls when a run" in log.read_text(), 60, "the listener started")
        second = _schedule(deployment_id)
        wait_for(
            lambda: _state(second) != "SCHEDULED", WAKEUP_DEADLINE_S, "the wake-up taking the second run"
        )
        wait_for(lambda: _state(second) in {"COMPLETED", "FAILED", "CRASHED"}, 240, "the second run ending")
        assert _state(second) == "COMPLETED", log.read_text()[-3000:]
    finally:
        stop_process_group(worker)


def test_the_stacks_worker_wakes_on_events_unless_configured_off(monkeypatch):
    monkeypatch.setenv("MODELOPS_STACK__WORKER_WAKEUPS", "true")
    assert "--wake-on-events" in comp.worker(load_config(), None).argv
    monkeypatch.setenv("MODELOPS_STACK__WORKER_WAKEUPS", "false")
    assert "--wake-on-events" not in comp.worker(load_config(), None).argv
