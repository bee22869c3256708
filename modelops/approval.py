"""The champion approval's contract: the form, the evidence shown above it, the decision, the rules.

The flow that pauses for it is ``flows.approval``; ``modelops approve`` answers it. Both import
from here, so the form and its validation live in one place.

Finding the paused run: the approval run carries the tags :func:`approval_tags` (``model:<name>``)
and its parameters name ``model_name`` and ``candidate_version``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

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


def approval_tags(model_name: str) -> list[str]:
    """Tags on the paused approval run; ``modelops approve --model`` searches for ``model:<name>``."""
    return ["modelops", "approval", f"model:{model_name}"]


def _link(model: ModelEvidence) -> str:
    if model.run_url:
        return f"[{model.run_id or 'run'}]({model.run_url})"
    return model.run_id or "–"


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
