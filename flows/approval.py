"""Human approval of a champion candidate: the seed's user task "Approve champion model".

The subflow ``approve-champion`` publishes the comparison as a table artifact on its run, tells the
approvers (Teams / e-mail, with the form's link), then pauses with a form
(:class:`~modelops.approval.ChampionApproval`) whose description puts the candidate next to the
current champion. A reminder goes out when ``reminder_share`` of the timeout has passed with no
answer. Answers come from the Prefect UI, from ``modelops approve`` or from the REST API. An answer
that fails validation (bad image tag, reviewer not among the approvers) is logged and the run pauses
again with the reason on top of the form; it never fails and never proceeds. A timeout is a
rejection with ``reason="timeout"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger, runtime, tags
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run

from flows.base import flow
from modelops.approval import (
    APPROVAL_FLOW_NAME,
    POLL_INTERVAL_S,
    ApprovalDecision,
    ApprovalEvidence,
    ChampionApproval,
    approval_description,
    approval_tags,
    form_url,
    validate_answer,
)
from modelops.config import NotificationSettings
from modelops.messages import approval_reminder_message, approval_requested_message
from tasks import artifacts
from tasks.notify import notify, notify_later


@flow(name=APPROVAL_FLOW_NAME, flow_run_name="approve-{model_name}-v{candidate_version}", log_prints=False)
def approve_champion(
    model_name: str,
    candidate_version: str,
    evidence: dict[str, Any],
    approvers: list[str],
    timeout_s: int,
    default_image_tag: str,
    notifications: NotificationSettings | None = None,
    switches: dict[str, bool] | None = None,
    reminder_share: float = 0.0,
) -> dict[str, Any]:
    """Evidence artifact → "approval requested" → pause for a valid answer; re-pause (with the reason)
    after an invalid one. Fails on timeout. ``notifications=None``: nobody is notified."""
    log = get_run_logger()
    approval_evidence = ApprovalEvidence.from_dict(evidence)
    artifacts.publish_approval_evidence(model_name, approval_evidence)
    reminder = announce_request(
        model_name, approval_evidence, approvers, timeout_s, notifications, switches or {}, reminder_share
    )
    try:
        answer, invalid = wait_for_valid_answer(
            model_name, approval_evidence, approvers, timeout_s, default_image_tag
        )
    finally:
        if reminder is not None:
            reminder.cancel()
    decision = ApprovalDecision(
        model_name=model_name,
        model_version=str(candidate_version),
        approved=answer.approved,
        reason="approved" if answer.approved else "rejected",
        reviewer=answer.reviewer.strip(),
        image_tag=answer.image_tag,
        comment=answer.comment,
        attempts=len(invalid) + 1,
        invalid_answers=tuple(invalid),
        flow_run_id=str(runtime.flow_run.id),
        decided_at=_now(),
    )
    log.info("approval: %s v%s %s by %s", model_name, candidate_version, decision.reason, decision.reviewer)
    return decision.as_dict()


def announce_request(
    model_name: str,
    evidence: ApprovalEvidence,
    approvers: Sequence[str],
    timeout_s: int,
    settings: NotificationSettings | None,
    switches: dict[str, bool],
    reminder_share: float,
) -> threading.Timer | None:
    """Notify "approval requested" now; return the armed reminder (cancel it once answered)."""
    if settings is None:
        return None
    form = form_url(str(runtime.flow_run.id))
    answer_by = datetime.now(UTC) + timedelta(seconds=timeout_s)
    notify(approval_requested_message(model_name, evidence, approvers, form, answer_by), settings, **switches)
    if reminder_share <= 0:
        return None
    delay_s = timeout_s * reminder_share
    reminder = approval_reminder_message(
        model_name, evidence, approvers, form, answer_by, timeout_s - delay_s
    )
    return notify_later(delay_s, reminder, settings, **switches)


def wait_for_valid_answer(
    model_name: str,
    approval_evidence: ApprovalEvidence,
    approvers: Sequence[str],
    timeout_s: int,
    default_image_tag: str,
) -> tuple[ChampionApproval, list[str]]:
    """The first answer that passes validation, and the reasons the earlier ones were refused."""
    log = get_run_logger()
    deadline = time.monotonic() + timeout_s
    initial = {"approved": False, "image_tag": default_image_tag, "reviewer": "", "comment": ""}
    problem: str | None = None
    invalid: list[str] = []
    while True:
        remaining = max(1, int(deadline - time.monotonic()))
        description = approval_description(model_name, approval_evidence, approvers, problem)
        answer = pause_flow_run(
            wait_for_input=ChampionApproval.with_initial_data(description=description, **initial),
            timeout=remaining,
            poll_interval=min(POLL_INTERVAL_S, remaining),
        )
        problem = validate_answer(answer, approvers)
        if problem is None:
            break
        invalid.append(problem)
        log.warning("approval answer not accepted (%s); waiting for a corrected answer", problem)
        initial = {k: getattr(answer, k) for k in ("approved", "image_tag", "reviewer", "comment")}
    return answer, invalid


def request_champion_approval(
    model_name: str,
    candidate_version: str | int,
    evidence: ApprovalEvidence,
    approvers: Sequence[str] = (),
    timeout_s: int = 3600,
    default_image_tag: str | None = None,
    notifications: NotificationSettings | None = None,
    switches: dict[str, bool] | None = None,
    reminder_share: float = 0.0,
) -> ApprovalDecision:
    """Ask a person to approve ``candidate_version``; a timeout is a rejection (``reason="timeout"``).

    Call it inside a flow (it runs the ``approve-champion`` subflow); it also works on its own.
    With ``notifications``, the approvers hear of it (and of a reminder at ``reminder_share`` of
    the timeout) through the channels the run's ``switches`` allow.
    """
    version = str(candidate_version)
    tag = default_image_tag or f"v{version}"
    with tags(*approval_tags(model_name)):
        state = approve_champion(
            model_name=model_name,
            candidate_version=version,
            evidence=asdict(evidence),
            approvers=list(approvers),
            timeout_s=int(timeout_s),
            default_image_tag=tag,
            notifications=notifications,
            switches=switches,
            reminder_share=reminder_share,
            return_state=True,
        )
    if state.is_completed():
        return ApprovalDecision(
            **{**state.result(), "invalid_answers": tuple(state.result()["invalid_answers"])}
        )
    if _timed_out(state):
        return ApprovalDecision(
            model_name=model_name,
            model_version=version,
            approved=False,
            reason="timeout",
            flow_run_id=str(state.state_details.flow_run_id),
            decided_at=_now(),
        )
    state.result()  # re-raises the subflow's error
    raise RuntimeError(f"approval subflow ended in state {state.type.value}: {state.message}")


def _timed_out(state: Any) -> bool:
    try:
        outcome = state.result(raise_on_failure=False)
    except Exception:
        outcome = None
    return isinstance(outcome, FlowPauseTimeout) or "never resumed" in (state.message or "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
