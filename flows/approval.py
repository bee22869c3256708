"""Human approval of a champion candidate: the seed's user task "Approve champion model".

The subflow ``approve-champion`` pauses with a form (:class:`~modelops.approval.ChampionApproval`)
whose description puts the candidate next to the current champion. Answers come from the Prefect UI,
from ``modelops approve`` or from the REST API. An answer that fails validation (bad image tag,
reviewer not among the approvers) is logged and the run pauses again with the reason on top of the
form; it never fails and never proceeds. A timeout is a rejection with ``reason="timeout"``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, runtime, tags
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run

from modelops.approval import (
    APPROVAL_FLOW_NAME,
    POLL_INTERVAL_S,
    ApprovalDecision,
    ApprovalEvidence,
    ChampionApproval,
    approval_description,
    approval_tags,
    validate_answer,
)


@flow(name=APPROVAL_FLOW_NAME, flow_run_name="approve-{model_name}-v{candidate_version}", log_prints=False)
def approve_champion(
    model_name: str,
    candidate_version: str,
    evidence: dict[str, Any],
    approvers: list[str],
    timeout_s: int,
    default_image_tag: str,
) -> dict[str, Any]:
    """Pause for a valid answer; re-pause (with the reason) after an invalid one. Fails on timeout."""
    log = get_run_logger()
    approval_evidence = ApprovalEvidence.from_dict(evidence)
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
    )
    log.info("approval: %s v%s %s by %s", model_name, candidate_version, decision.reason, decision.reviewer)
    return decision.as_dict()


def request_champion_approval(
    model_name: str,
    candidate_version: str | int,
    evidence: ApprovalEvidence,
    approvers: Sequence[str] = (),
    timeout_s: int = 3600,
    default_image_tag: str | None = None,
) -> ApprovalDecision:
    """Ask a person to approve ``candidate_version``; a timeout is a rejection (``reason="timeout"``).

    Call it inside a flow (it runs the ``approve-champion`` subflow); it also works on its own.
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
        )
    state.result()  # re-raises the subflow's error
    raise RuntimeError(f"approval subflow ended in state {state.type.value}: {state.message}")


def _timed_out(state: Any) -> bool:
    try:
        outcome = state.result(raise_on_failure=False)
    except Exception:
        outcome = None
    return isinstance(outcome, FlowPauseTimeout) or "never resumed" in (state.message or "")
