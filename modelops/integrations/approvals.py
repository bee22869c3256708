"""Answering a paused champion approval through Prefect's public client, as the UI form does.

``modelops approve`` and ``modelops demo --auto-approve`` use these; the form itself (fields, rules,
description) is :mod:`modelops.approval`, and the flow that pauses is ``flows.approval``.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from modelops.approval import APPROVAL_FLOW_NAME, approval_tags
from modelops.config import ModelOpsConfig
from modelops.integrations.prefect_api import unreachable_message
from modelops.integrations.prefect_client import prefect_client
from modelops.stack.reconcile import reopened_approval, replacement_run_id, why_orphaned

DESCRIPTION_KEY = "description"  # the run-input key of the Markdown shown above the form
SCHEMA_KEY = "schema"  # the run-input key of the form's JSON schema, which Prefect checks an answer against
FORM_WAIT_S = 30.0  # how long an answer waits for a just-paused run's form to be stored
# The first line of a description after an answer the flow did not accept (modelops.approval).
_REFUSAL = re.compile(r"^> \*\*Your previous answer was not accepted:\*\*\s*(?P<reason>.*?)\.?\s*Correct it")


class ApprovalError(RuntimeError):
    """No paused approval to answer, or Prefect refused the answer; the message says which and why."""


def find_paused_approval(model_name: str) -> str:
    """The id of the one paused ``approve-champion`` run tagged ``model:<name>`` (other flows that
    pause for a person, such as a KS review, carry the model's tag too)."""
    wanted = approval_tags(model_name)[-1]
    with prefect_client(sync_client=True) as client:
        try:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[APPROVAL_FLOW_NAME])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                    tags=FlowRunFilterTags(all_=[wanted]),
                ),
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means the API is not usable
            raise ApprovalError(
                f"{unreachable_message(str(client.api_url))} ({type(exc).__name__})"
            ) from None
    if not runs:
        raise ApprovalError(
            f"no paused approval for model {model_name!r} (flow runs tagged {wanted!r} in state "
            "Paused); check the model name, or pass --run <flow run id>"
        )
    if len(runs) > 1:
        listing = ", ".join(f"{r.id} ({r.name})" for r in runs)
        raise ApprovalError(
            f"{len(runs)} paused approvals for model {model_name!r}: {listing}; choose one with --run"
        )
    return str(runs[0].id)


def resume_approval(
    run_id: str,
    run_input: dict[str, Any],
    stack: ModelOpsConfig | None = None,
    form_wait_s: float = FORM_WAIT_S,
) -> str | None:
    """Resume the paused run with the answer; returns the key of the description it answered.

    Prefect answers HTTP 200 even when it refuses (status REJECT, with a reason), so the returned
    status is what counts: anything but ACCEPT raises :class:`ApprovalError`.

    ``pause_flow_run`` proposes the Paused state first and stores the form's schema just after it;
    an answer sent in between is refused ("Run input schema not found"). So the answer waits up to
    ``form_wait_s`` for the schema, and is not sent if it never comes.

    With ``stack`` (the client talks to that stack's API), a run with no process behind it is not
    answered: Prefect would accept the answer and nothing would ever act on it.
    """
    flow_run_id = _flow_run_id(run_id)
    with prefect_client(sync_client=True) as client:
        flow_run = _paused_run(client, flow_run_id)
        if stack is not None and _same_api(str(client.api_url), stack.prefect_api_url):
            _refuse_orphan(client, stack, flow_run)
        keyset = (flow_run.state.state_details.run_input_keyset if flow_run.state else None) or {}
        if SCHEMA_KEY in keyset:
            _wait_for_schema(client, flow_run_id, keyset[SCHEMA_KEY], form_wait_s)
        answered_key = keyset.get(DESCRIPTION_KEY)
        result = client.resume_flow_run(flow_run_id, run_input=run_input)
    if result.status != SetStateStatus.ACCEPT:
        reason = getattr(result.details, "reason", None) or "no reason given"
        if result.state is not None and result.state.type == StateType.FAILED:
            reason = f"the approval timed out ({reason})"
        raise ApprovalError(
            f"Prefect refused the answer for flow run {run_id}: {result.status.value}: {reason}"
        )
    return answered_key


def _wait_for_schema(client: SyncPrefectClient, flow_run_id: UUID, key: str, seconds: float) -> None:
    if _wait_for_input(client, flow_run_id, key, seconds) is None:
        raise ApprovalError(
            f"flow run {flow_run_id} is paused, but its approval form (run input {key!r}) was not "
            f"stored within {seconds:g} s; nothing was sent: try again in a moment"
        )


def _flow_run_id(run_id: str) -> UUID:
    try:
        return UUID(run_id)
    except ValueError:
        raise ApprovalError(f"--run {run_id!r} is not a flow run id (a UUID such as 0f1e2d3c-...)") from None


def _paused_run(client: SyncPrefectClient, flow_run_id: UUID) -> FlowRun:
    try:
        flow_run = client.read_flow_run(flow_run_id)
    except ObjectNotFound:
        raise ApprovalError(f"flow run {flow_run_id} does not exist on {client.api_url}") from None
    state = flow_run.state
    if state is None or state.type != StateType.PAUSED:
        current = state.name if state else "no state"
        replacement = replacement_run_id(state.message if state else None)
        if replacement:
            raise ApprovalError(
                f"flow run {flow_run_id} ended ({current}) in a restart, and its approval was reopened in "
                f"lifecycle run {replacement}: {_reopened_hint(client, replacement)}; nothing was sent"
            )
        raise ApprovalError(
            f"flow run {flow_run_id} is not waiting for an answer (state {current}): "
            "it was already answered or has ended; nothing was sent"
        )
    return flow_run


def _reopened_hint(client: SyncPrefectClient, lifecycle_run_id: str) -> str:
    approval = reopened_approval(client, lifecycle_run_id)
    if approval is not None and approval.state is not None and approval.state.type == StateType.PAUSED:
        return f"answer that one (--run {approval.id}, or --model)"
    return "it has not paused for the answer yet; try again in a moment (--model finds it)"


def _refuse_orphan(client: SyncPrefectClient, stack: ModelOpsConfig, flow_run: FlowRun) -> None:
    reason = why_orphaned(client, stack, flow_run.id)
    if reason is not None:
        raise ApprovalError(
            f"approval run {flow_run.id} has no process behind it ({reason}); nothing was sent: run "
            "`modelops up`, which reopens the approval in a new lifecycle run, then answer again"
        )


def _same_api(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def watch_for_refusal(
    run_id: str, answered_key: str | None, seconds: float, description_wait_s: float = 10.0
) -> str | None:
    """If the flow pauses again for a corrected answer within ``seconds``, the reason it shows; else None.

    Prefect stores the new form's description just after the run is Paused again (``pause_flow_run``
    proposes the state, then saves the form), so a new pause seen before its description is readable
    is watched up to ``description_wait_s`` longer for it; a loaded machine widens that window.
    """
    deadline = time.monotonic() + seconds
    with prefect_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(UUID(run_id)).state
            if state is None or state.is_final():
                return None
            key = (state.state_details.run_input_keyset or {}).get(DESCRIPTION_KEY)
            if state.type == StateType.PAUSED and key and key != answered_key:
                return refusal_reason(_wait_for_description(client, UUID(run_id), key, description_wait_s))
            time.sleep(0.5)
    return None


def _wait_for_description(client: SyncPrefectClient, flow_run_id: UUID, key: str, seconds: float) -> str:
    """The form's description once it is stored; "" if it is not within ``seconds``."""
    stored = _wait_for_input(client, flow_run_id, key, seconds)
    if stored is None:
        return ""
    value = json.loads(stored)  # run inputs are stored JSON-encoded
    return value if isinstance(value, str) else ""


def _wait_for_input(client: SyncPrefectClient, flow_run_id: UUID, key: str, seconds: float) -> str | None:
    """A run input as stored (JSON text), polled until it is there; None if not within ``seconds``."""
    deadline = time.monotonic() + seconds
    while (stored := _read_input(client, flow_run_id, key)) is None:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)
    return stored


def wait_until_answered(run_id: str, poll_s: float = 1.0) -> None:
    """Block while the run waits for an answer (a person answers in the UI or with ``modelops approve``)."""
    with prefect_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(UUID(run_id)).state
            if state is None or state.type != StateType.PAUSED:
                return
            time.sleep(poll_s)


def _read_input(client: SyncPrefectClient, flow_run_id: UUID, key: str) -> str | None:
    """A run input as stored (JSON text); None while it is not stored (yet)."""
    try:
        return client.read_flow_run_input(flow_run_id, key)
    except PrefectHTTPStatusError:
        return None


def refusal_reason(description: str) -> str:
    """Why the flow did not accept the last answer, from the top of the form's new description."""
    first = description.splitlines()[0] if description else ""
    match = _REFUSAL.match(first)
    return match.group("reason").strip() if match else "see the approval form in the Prefect UI"
