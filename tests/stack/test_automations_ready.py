"""The deployment step's probe that the Prefect server acts on events for its automations, on a real
Prefect server (the test harness): it returns once the server ran the probe's action, leaves no probe
behind, and names a server that never acts after its timeout. The end-to-end case, an event sent the
moment ``modelops up`` returns, is tests/stack/test_stack_automation.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from prefect import get_client
from prefect.events import Event
from prefect.events.actions import DoNothing
from prefect.events.clients import get_events_client, get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from modelops.stack import automations_ready, components, manager
from modelops.stack.automations_ready import (
    EXECUTED_EVENT,
    PROBE_NAME,
    AutomationsNotActing,
    probe_automation,
    wait_until_acting,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


async def probes_left() -> list:
    async with get_client() as client:
        return await client.read_automations_by_name(PROBE_NAME)


def test_it_returns_once_the_probe_acted_and_leaves_no_probe_behind():
    # one left by a deployment step killed mid-probe: deleted first, never fired
    async def write_stale() -> None:
        async with get_client() as client:
            await client.create_automation(probe_automation("killed-step"))

    asyncio.run(write_stale())
    acting = asyncio.run(wait_until_acting(timeout_s=120))
    assert 0 < acting.seconds < 120 and acting.events_sent >= 1
    assert asyncio.run(probes_left()) == []


def test_an_automation_written_before_the_probe_acts_on_the_very_next_event():
    """What ``up`` relies on: once the probe fired, an automation written before it is loaded, so one
    event (never re-sent) runs its action."""
    token = uuid.uuid4().hex
    resource = f"modelops.test.ping.{token}"
    automation = probe_automation(token).model_copy(
        update={"name": f"written-before-{token}", "actions": [DoNothing()]}
    )
    automation.trigger.expect = {"modelops.test.ping"}
    automation.trigger.match = {"prefect.resource.id": resource}

    async def scenario() -> Event:
        async with get_client() as client:
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
    report.write_text(
        f'{{"applied": ["retrain"], "failed": {{"{components.AUTOMATIONS_CHECK}": "{reason}"}}}}'
    )
    step = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    deploy = manager._Deployments(
        step, tmp_path / "prefect.yaml", tmp_path / "deploy.log", report, time.monotonic()
    )
    (tmp_path / "prefect.yaml").write_text("deployments:\n  - name: retrain\n")
    config = manager.ModelOpsConfig()
    with pytest.raises(manager.StackError) as error:
        manager._finish_deployments(deploy, config, echo=lambda _line: None)
    assert str(error.value).startswith(f"automations: {reason}")
    assert "deployments are applied" in str(error.value) and "fix the file" not in str(error.value)
