"""The deployment step's probe that the Prefect server acts on events for its automations, on a real
Prefect server (the test harness): it returns once the server ran the probe's action, leaves no probe
behind, and names a server that never acts after its timeout. The end-to-end case, an event sent the
moment ``modelops up`` returns, is tests/support/automation.py, run on both backends' stacks by
tests/stack/test_stack_postgres_backends.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.events import Event
from prefect.events.actions import DoNothing
from prefect.events.clients import get_events_client, get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from modelops.config import ModelOpsConfig
from modelops.integrations.prefect_client import prefect_client
from modelops.stack import automations_ready, components, manager
from modelops.stack.automations_ready import (
    EXECUTED_EVENT,
    PROBE_NAME,
    AutomationsNotActing,
    probe_automation,
    probe_written,
    wait_until_acting,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


async def probes_left() -> list[str]:
    async with prefect_client() as client:
        return [a.name for a in await client.read_automations() if a.name.startswith(PROBE_NAME)]


async def write_probe(token: str, written: datetime) -> UUID:
    async with prefect_client() as client:
        return await client.create_automation(probe_automation(token, written))


def test_it_returns_once_the_probe_acted_and_leaves_no_probe_of_its_own():
    # one left by a deployment step killed mid-probe two hours ago: deleted; one written a minute ago
    # may be another `up`'s probe, running beside this one: kept
    now = datetime.now(UTC)
    asyncio.run(write_probe("killed-step", now - timedelta(hours=2)))
    beside = asyncio.run(write_probe("another-up", now - timedelta(minutes=1)))
    try:
        acting = asyncio.run(wait_until_acting(timeout_s=120))
        assert 0 < acting.seconds < 120 and acting.events_sent >= 1
        assert asyncio.run(probes_left()) == [probe_automation("another-up", now - timedelta(minutes=1)).name]
    finally:
        asyncio.run(delete(beside))


async def delete(automation_id: UUID) -> None:
    async with prefect_client() as client:
        await client.delete_automation(automation_id)


def test_only_names_the_probe_writes_count_as_probes():
    written = datetime(2026, 12, 5, 12, 0, 0, tzinfo=UTC)
    assert probe_written(probe_automation("t", written).name) == written
    assert probe_written("modelops-up-probe") is None
    assert probe_written("modelops-up-probe of mine") is None
    assert probe_written("retrain-on-degraded-ks 2026-12-05T12:00:00Z") is None


def test_an_automation_written_before_the_probe_acts_on_the_very_next_event():
    """What ``up`` relies on: once the probe fired, an automation written before it is loaded, so one
    event (never re-sent) runs its action."""
    token = uuid.uuid4().hex
    resource = f"modelops.test.ping.{token}"
    automation = probe_automation(token, datetime.now(UTC)).model_copy(
        update={"name": f"written-before-{token}", "actions": [DoNothing()]}
    )
    automation.trigger.expect = {"modelops.test.ping"}
    automation.trigger.match = {"prefect.resource.id": resource}

    async def scenario() -> Event:
        async with prefect_client() as client:
            automation_id = await client.create_automation(automation)
            await wait_until_acting(timeout_s=120)
            executed = EventFilter(
                event=EventNameFilter(name=[EXECUTED_EVENT]),
                resource=EventResourceFilter(id=[f"prefect.automation.{automation_id}"]),
            )
            try:
                async with get_events_subscriber(filter=executed) as subscriber:
                    async with get_events_client() as emitter:
                        await emitter.emit(
                            Event(event="modelops.test.ping", resource={"prefect.resource.id": resource})
                        )
                    return await asyncio.wait_for(anext(subscriber), timeout=120)
            finally:
                await client.delete_automation(automation_id)

    assert asyncio.run(scenario()).resource["prefect.resource.name"] == f"written-before-{token}"


def test_a_server_that_never_acts_is_named_after_the_timeout(monkeypatch):
    # The events go to another resource than the probe automation's: the server never acts on them.
    probe_event = automations_ready.probe_event
    monkeypatch.setattr(automations_ready, "probe_event", lambda token: probe_event(f"not-{token}"))
    started = time.monotonic()
    with pytest.raises(AutomationsNotActing, match=r"did not act on any of \d+ probe event\(s\) within 3 s"):
        asyncio.run(wait_until_acting(timeout_s=3, resend_every_s=0.5))
    assert time.monotonic() - started >= 3
    assert asyncio.run(probes_left()) == []


def test_up_names_automations_that_are_not_acting_apart_from_the_deployments(tmp_path: Path):
    """The step's report carries the probe's failure under its own name; ``up`` says the deployments are
    applied and what is wrong, instead of asking to fix the file."""
    report = tmp_path / "report.json"
    reason = "the Prefect server did not act on any of 300 probe event(s) within 300 s: ..."
    report.write_text(json.dumps({"applied": ["retrain"], "failed": {components.AUTOMATIONS_CHECK: reason}}))
    step = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    deploy = manager._Deployments(
        step, tmp_path / "prefect.yaml", tmp_path / "deploy.log", report, time.monotonic()
    )
    (tmp_path / "prefect.yaml").write_text("deployments:\n  - name: retrain\n")
    with pytest.raises(manager.StackError) as error:
        manager._finish_deployments(deploy, ModelOpsConfig(), echo=lambda _line: None)
    assert str(error.value).startswith(f"automations: {reason}")
    assert "deployments are applied" in str(error.value) and "fix the file" not in str(error.value)
