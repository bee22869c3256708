"""``modelops approve``: answer a paused champion approval (the same as the form in the Prefect UI)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from modelops.cli.errors import UserError

HELP = "answer a paused champion approval: approve (or --reject) with an image tag and your name"
_RECHECK_S = 8.0  # how long to watch for the flow re-pausing because it did not accept the answer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--model", help="model whose paused approval to answer (default: model.name of the config)"
    )
    target.add_argument("--run", help="flow run id of the paused approval")
    parser.add_argument("--tag", default="", help="serving image tag, e.g. v7 (required to approve)")
    parser.add_argument("--reviewer", required=True, help="your name (must be in approval.approvers if set)")
    parser.add_argument("--reject", action="store_true", help="reject the candidate instead of approving it")
    parser.add_argument("--comment", default="", help="reason, kept in the approvals audit")
    parser.add_argument(
        "--no-wait", action="store_true", help="do not watch whether the flow accepted the answer"
    )


def run(args: argparse.Namespace) -> int:
    from modelops.config import load_config
    from modelops.approval import ChampionApproval, validate_answer

    config = load_config()
    answer = ChampionApproval(
        approved=not args.reject, image_tag=args.tag, reviewer=args.reviewer, comment=args.comment
    )
    problem = validate_answer(answer, config.approval.approvers)
    if problem:
        raise UserError(f"answer not sent: {problem}")
    with use_prefect_api(config), _api_reachable():
        run_id = args.run or find_paused_approval(args.model or config.model.name)
        answered_key = resume_approval(run_id, answer.model_dump())
        verb = "rejected" if args.reject else f"approved with image tag {args.tag}"
        print(f"approval run {run_id}: {verb} by {args.reviewer}")
        if not args.no_wait:
            refusal = watch_for_refusal(run_id, answered_key, _RECHECK_S)
            if refusal:
                print(f"the flow did not accept the answer and waits again: {refusal}")
                return 1
    return 0


@contextmanager
def use_prefect_api(config: Any) -> Iterator[None]:
    """Point the Prefect client at the configured API (the stack's) unless PREFECT_API_URL is set."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings({PREFECT_API_URL: config.prefect_api_url}):
        yield


@contextmanager
def _api_reachable() -> Iterator[None]:
    """Turn "the Prefect API is not there" into one line with the fix."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    try:
        yield
    except (httpx.TransportError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "Failed to reach API" not in str(exc):
            raise
        raise UserError(
            f"cannot reach the Prefect API at {PREFECT_API_URL.value()}: start the stack (modelops up) "
            "or set PREFECT_API_URL"
        ) from None


def find_paused_approval(model_name: str) -> str:
    """The id of the one paused approval run tagged ``model:<name>``."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    from modelops.approval import approval_tags

    wanted = approval_tags(model_name)[-1]
    with get_client(sync_client=True) as client:
        try:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
                    tags=FlowRunFilterTags(all_=[wanted]),
                )
            )
        except Exception as exc:
            raise UserError(
                f"cannot reach the Prefect API at {client.api_url}: {type(exc).__name__}; "
                "start the stack (modelops up) or set PREFECT_API_URL"
            ) from None
    if not runs:
        raise UserError(
            f"no paused approval for model {model_name!r} (flow runs tagged {wanted!r} in state "
            "Paused); check the model name, or pass --run <flow run id>"
        )
    if len(runs) > 1:
        listing = ", ".join(f"{r.id} ({r.name})" for r in runs)
        raise UserError(
            f"{len(runs)} paused approvals for model {model_name!r}: {listing}; choose one with --run"
        )
    return str(runs[0].id)


def resume_approval(run_id: str, run_input: dict[str, Any]) -> str | None:
    """POST /flow_runs/{id}/resume with the answer; raise UserError unless the server accepted it.

    Prefect answers HTTP 200 even when it refuses (``{"status": "REJECT", "details": {"reason": ...}}``),
    so the body's status is what counts.
    """
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import ObjectNotFound

    try:
        flow_run_id = UUID(run_id)
    except ValueError:
        raise UserError(f"--run {run_id!r} is not a flow run id (a UUID such as 0f1e2d3c-...)") from None
    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise UserError(f"flow run {run_id} does not exist on {client.api_url}") from None
        state = flow_run.state
        if state is None or state.type != StateType.PAUSED:
            current = state.name if state else "no state"
            raise UserError(
                f"flow run {run_id} is not waiting for an answer (state {current}): "
                "it was already answered or has ended; nothing was sent"
            )
        answered_key = (state.state_details.run_input_keyset or {}).get("description")
        result = client.resume_flow_run(flow_run_id, run_input=run_input)
    if result.status != SetStateStatus.ACCEPT:
        reason = getattr(result.details, "reason", None) or "no reason given"
        if result.state is not None and result.state.type == StateType.FAILED:
            reason = f"the approval timed out ({reason})"
        raise UserError(f"Prefect refused the answer for flow run {run_id}: {result.status.value}: {reason}")
    return answered_key


def watch_for_refusal(run_id: str, answered_key: str | None, seconds: float) -> str | None:
    """If the flow pauses again for a corrected answer, return the reason it shows; else None."""
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(UUID(run_id)).state
            if state is None or state.is_final():
                return None
            keyset = state.state_details.run_input_keyset
            if state.type == StateType.PAUSED and keyset and keyset["description"] != answered_key:
                return _refusal_reason(client, run_id, keyset["description"])
            time.sleep(0.5)
    return None


def _refusal_reason(client: Any, run_id: str, key: str) -> str:
    response = client._client.get(f"/flow_runs/{run_id}/input/{key}")
    text = response.json() if response.status_code == 200 else ""
    first = text.splitlines()[0] if text else ""
    reason = first.split(":**", 1)[-1].replace("Correct it and submit again.", "").strip()
    return reason or "see the approval form in the Prefect UI"
