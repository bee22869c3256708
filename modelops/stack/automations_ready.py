"""Wait until the Prefect server acts on events for the automations it was just given.

A Prefect server loads an automation asynchronously to the API call that writes it: on PostgreSQL its
trigger service learns of it by NOTIFY, on SQLite by a task scheduled after the commit. Prefect has no
API that says an automation is loaded, so an event sent in the first moments after ``prefect deploy``
wrote the retrain trigger may be evaluated before the trigger exists, and launch nothing.

The deployment step of ``modelops up`` therefore ends with a probe: it writes one more automation
(:data:`PROBE_NAME`: a reactive trigger on :data:`PROBE_EVENT` for a resource of its own, and Prefect's
``do-nothing`` action), sends that event every :data:`RESEND_EVERY_S` and waits on the server's event
stream for the automation's ``prefect.automation.action.executed``. The server loads automations in the
order they were written (one NOTIFY channel, read in order; on SQLite, tasks that queue on one lock), so
once the probe fires, every trigger written before it is loaded, and the actions service is consuming.
The probe automation is deleted afterwards; one left by a step that was killed is deleted by a later one
once it is an hour old (not at once: it may be the probe of another ``up`` running beside this one).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from uuid import UUID

from prefect.events import Event
from prefect.events.actions import DoNothing
from prefect.events.clients import get_events_client, get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from modelops.integrations.prefect_client import prefect_client

PROBE_NAME = "modelops-up-probe"  # + the time it was written: "modelops-up-probe 2026-12-05T12:00:00Z"
STALE_AFTER = timedelta(hours=1)  # a probe that old was left by a killed step, not another `up`'s
PROBE_EVENT = "modelops.stack.probe"
EXECUTED_EVENT = "prefect.automation.action.executed"
RESEND_EVERY_S = 1.0


class Acting(NamedTuple):
    seconds: float  # from the start of the probe to the probe's action executed
    events_sent: int  # more than one: the first was not acted on within RESEND_EVERY_S


class AutomationsNotActing(RuntimeError):
    """The server did not act on the probe event in time."""


def probe_event(token: str) -> Event:
    """The event the probe automation waits for; ``token`` makes its resource this probe's own."""
    return Event(event=PROBE_EVENT, resource={"prefect.resource.id": f"modelops.stack.probe.{token}"})


def probe_automation(token: str, written: datetime) -> AutomationCore:
    return AutomationCore(
        name=f"{PROBE_NAME} {written.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}",
        description="Written and deleted by `modelops up`: the server acts on events for its automations.",
        trigger=EventTrigger(
            expect={PROBE_EVENT},
            match={"prefect.resource.id": f"modelops.stack.probe.{token}"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[DoNothing()],
    )


def probe_written(name: str) -> datetime | None:
    """When the probe automation of this name was written; None for any other automation."""
    prefix, _, written = name.partition(" ")
    if prefix != PROBE_NAME:
        return None
    try:
        return datetime.strptime(written, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


async def wait_until_acting(timeout_s: float, resend_every_s: float = RESEND_EVERY_S) -> Acting:
    """When the server acted on the probe; raises :class:`AutomationsNotActing` after
    ``timeout_s``. Uses PREFECT_API_URL, as the deployment step does."""
    started = time.monotonic()
    token = uuid.uuid4().hex
    now = datetime.now(UTC)
    async with prefect_client() as client:
        for automation in await client.read_automations():
            if (written := probe_written(automation.name)) and now - written > STALE_AFTER:
                await client.delete_automation(automation.id)
        automation_id = await client.create_automation(probe_automation(token, now))
        try:
            sent = await _send_until_executed(automation_id, token, timeout_s, resend_every_s)
        finally:
            await client.delete_automation(automation_id)
    return Acting(time.monotonic() - started, sent)


async def _send_until_executed(
    automation_id: UUID, token: str, timeout_s: float, resend_every_s: float
) -> int:
    """How many probe events were sent until the first was acted on."""
    executed = EventFilter(
        event=EventNameFilter(name=[EXECUTED_EVENT]),
        resource=EventResourceFilter(id=[f"prefect.automation.{automation_id}"]),
    )
    deadline = time.monotonic() + timeout_s
    sent = 0
    async with get_events_subscriber(filter=executed) as subscriber, get_events_client() as emitter:
        first = asyncio.ensure_future(anext(subscriber))
        try:
            while not first.done() and time.monotonic() < deadline:
                await emitter.emit(probe_event(token))
                sent += 1
                await asyncio.wait({first}, timeout=min(resend_every_s, max(deadline - time.monotonic(), 0)))
            if first.done():
                first.result()  # a broken event stream raises here
                return sent
        finally:
            first.cancel()
    raise AutomationsNotActing(
        f"the Prefect server did not act on any of {sent} probe event(s) within {timeout_s:g} s: its "
        "automations (the retrain trigger among them) may not be loaded, or its event stream "
        "(/api/events/out) sends nothing; see prefect-server.log"
    )
