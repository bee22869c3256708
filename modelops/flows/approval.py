"""Human approval of a champion candidate: the seed's user task "Approve champion model".

The subflow ``approve-champion`` pauses with a form (:class:`ChampionApproval`) whose description
puts the candidate next to the current champion. Answers come from the Prefect UI, from
``modelops approve`` or from the REST API. An answer that fails validation (bad image tag, reviewer
not among the approvers) is logged and the run pauses again with the reason on top of the form; it
never fails and never proceeds. A timeout is a rejection with ``reason="timeout"``.

Finding the paused run: the subflow run carries the tags ``modelops``, ``approval`` and
``model:<name>`` (set here, whatever flow calls :func:`request_champion_approval`), and its
parameters name ``model_name`` and ``candidate_version``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow, get_run_logger, runtime, tags
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

IMAGE_TAG_RULE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_IMAGE_TAG = re.compile(rf"^{IMAGE_TAG_RULE}$")
APPROVAL_FLOW_NAME = "approve-champion"
POLL_INTERVAL_S = 2


class ChampionApproval(RunInput):
    """The form a reviewer fills in (the Prefect UI renders it from this schema)."""

    approved: bool = Field(False, description="Approve this candidate as the new champion?")
    image_tag: str = Field("", description=f"Tag of the serving image to build; must match {IMAGE_TAG_RULE}")
    reviewer: str = Field("", description="Your name (must be one of the configured approvers, if any)")
    comment: str = Field("", description="Why (kept in the approvals audit)")


@dataclass(frozen=True)
class ModelEvidence:
    """One model's figures for the approval page."""

    version: str
    run_id: str | None = None
    run_url: str | None = None
    training_metrics: dict[str, float] = field(default_factory=dict)
    window_ks: float | None = None
    window_auc: float | None = None


@dataclass(frozen=True)
class ApprovalEvidence:
    """What the reviewer sees: candidate, current champion (if any), the window both were scored on."""

    candidate: ModelEvidence
    champion: ModelEvidence | None = None
    window: str | None = None  # e.g. "latest 2000 labelled records (n=2000, events=430)"
    model_url: str | None = None  # the registered model in the MLflow UI

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApprovalEvidence:
        champion = data.get("champion")
        return cls(
            candidate=ModelEvidence(**data["candidate"]),
            champion=ModelEvidence(**champion) if champion else None,
            window=data.get("window"),
            model_url=data.get("model_url"),
        )


@dataclass(frozen=True)
class ApprovalDecision:
    model_name: str
    model_version: str
    approved: bool
    reason: str  # "approved", "rejected" or "timeout"
    reviewer: str = ""
    image_tag: str = ""
    comment: str = ""
    attempts: int = 0  # answers received, valid or not
    invalid_answers: tuple[str, ...] = ()
    flow_run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_image_tag(tag: str) -> str | None:
    """None if ``tag`` is a valid image tag, else the reason naming the value and the rule."""
    if _IMAGE_TAG.match(tag):
        return None
    return (
        f"image tag {tag!r} is invalid: it must match {IMAGE_TAG_RULE} (letters, digits, '_', '.', '-'; "
        "not starting with '.' or '-'; at most 128 characters)"
    )


def validate_answer(answer: ChampionApproval, approvers: Sequence[str]) -> str | None:
    """None if the answer can be acted on, else why not (shown on top of the next form)."""
    reviewer = answer.reviewer.strip()
    if not reviewer:
        return "reviewer is empty: enter your name"
    if approvers and reviewer not in approvers:
        return f"reviewer {reviewer!r} is not an approver: approval.approvers is {', '.join(approvers)}"
    if answer.approved:
        return validate_image_tag(answer.image_tag)
    if answer.image_tag:  # a rejection needs no tag, but a given one must still be sane for the audit
        return validate_image_tag(answer.image_tag)
    return None


def approval_description(
    model_name: str, evidence: ApprovalEvidence, approvers: Sequence[str], problem: str | None = None
) -> str:
    """The Markdown the UI shows above the form: candidate next to champion, links, how to answer."""
    cand, champ = evidence.candidate, evidence.champion
    lines: list[str] = []
    if problem:
        lines += [f"> **Your previous answer was not accepted:** {problem}. Correct it and submit again.", ""]
    lines += [f"## Approve champion: {model_name} v{cand.version}", ""]
    if champ is None:
        lines += ["There is no current champion: approving makes this the first one.", ""]
    header = f"| | candidate v{cand.version} |" + (f" champion v{champ.version} |" if champ else "")
    rule = "|---|---|" + ("---|" if champ else "")
    rows = [header, rule]

    def row(label: str, cand_value: str, champ_value: str) -> None:
        rows.append(f"| {label} | {cand_value} |" + (f" {champ_value} |" if champ else ""))

    row("MLflow run", _link(cand), _link(champ) if champ else "")
    keys = list(cand.training_metrics) + [
        k for k in (champ.training_metrics if champ else {}) if k not in cand.training_metrics
    ]
    for key in keys:
        row(
            f"training {key}",
            _num(cand.training_metrics.get(key)),
            _num(champ.training_metrics.get(key)) if champ else "",
        )
    if evidence.window:
        row("KS on the labelled window", _num(cand.window_ks), _num(champ.window_ks) if champ else "")
        row("AUC on the labelled window", _num(cand.window_auc), _num(champ.window_auc) if champ else "")
    lines += rows + [""]
    if evidence.window:
        lines += [f"Both models scored on the same window: {evidence.window}.", ""]
    else:
        lines += ["No labelled production window yet: only training figures to compare.", ""]
    if evidence.model_url:
        lines += [f"[Registered model in MLflow]({evidence.model_url})", ""]
    who = f"one of: {', '.join(approvers)}" if approvers else "your name"
    lines += [
        "**Answer:** tick *approved* to deploy, or leave it unticked to reject; "
        f"*image tag* must match `{IMAGE_TAG_RULE}`; *reviewer*: {who}.",
    ]
    return "\n".join(lines) + "\n"


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


def approval_tags(model_name: str) -> list[str]:
    """Tags on the paused approval run; ``modelops approve --model`` searches for ``model:<name>``."""
    return ["modelops", "approval", f"model:{model_name}"]


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
    from prefect.exceptions import FlowPauseTimeout

    try:
        outcome = state.result(raise_on_failure=False)
    except Exception:
        outcome = None
    return isinstance(outcome, FlowPauseTimeout) or "never resumed" in (state.message or "")


def _link(model: ModelEvidence) -> str:
    if model.run_url:
        return f"[{model.run_id or 'run'}]({model.run_url})"
    return model.run_id or "–"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
