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
from datetime import UTC, datetime
from typing import Any

from prefect.input import RunInput
from prefect.settings import PREFECT_UI_URL
from pydantic import Field

IMAGE_TAG_RULE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_IMAGE_TAG = re.compile(rf"^{IMAGE_TAG_RULE}$")
APPROVAL_FLOW_NAME = "approve-champion"
POLL_INTERVAL_S = 2
DELTA = "Δ"  # the column "candidate minus champion"
_METRIC_NAMES = {"ks": "KS", "auc": "AUC", "log_loss": "log-loss"}


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
    window_score_mean: float | None = None  # the mean score this model gives the window's records


@dataclass(frozen=True)
class ApprovalEvidence:
    """What the reviewer sees: candidate, current champion (if any), the window both were scored on."""

    candidate: ModelEvidence
    champion: ModelEvidence | None = None
    window: str | None = None  # e.g. "latest 2000 labelled records (n=2000, events=430)"
    model_url: str | None = None  # the registered model in the MLflow UI
    # Two-sample KS between the candidate's and the champion's scores on the window: how far the
    # new model moves the score distribution (and so the decisions at a fixed threshold).
    score_shift_ks: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApprovalEvidence:
        champion = data.get("champion")
        return cls(
            candidate=ModelEvidence(**data["candidate"]),
            champion=ModelEvidence(**champion) if champion else None,
            window=data.get("window"),
            model_url=data.get("model_url"),
            score_shift_ks=data.get("score_shift_ks"),
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
    decided_at: str | None = None  # ISO 8601, UTC: when the accepted answer (or the timeout) came

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


def approval_window(
    timeout_s: int, reminder_share: float, deadline: str | None, now: datetime | None = None
) -> tuple[int, float]:
    """(seconds left to answer, share of them after which the reminder goes out) for one request.

    A first request gets the whole ``timeout_s``. A request reopened after a restart (``deadline``:
    the ISO answer-by time the approvers were first given) keeps that time: the seconds left (at
    least 1, so a deadline already past times out at once) and the reminder at its original moment,
    or none if that moment has passed.
    """
    if not deadline:
        return timeout_s, reminder_share
    now = now or datetime.now(UTC)
    left = max(1, int((datetime.fromisoformat(deadline) - now).total_seconds()))
    if reminder_share <= 0:
        return left, 0.0
    reminder_in = left - timeout_s * (1 - reminder_share)
    return left, reminder_in / left if reminder_in > 0 else 0.0


def approval_description(
    model_name: str, evidence: ApprovalEvidence, approvers: Sequence[str], problem: str | None = None
) -> str:
    """The Markdown the UI shows above the form: candidate next to champion, links, how to answer.

    The dialog is about 470 px wide: every cell is short (3 decimals, "run 1a2b3c4" links), so the
    champion's column and the difference stay in view without horizontal scrolling.
    """
    cand, champ = evidence.candidate, evidence.champion
    lines: list[str] = []
    if problem:
        lines += [f"> **Your previous answer was not accepted:** {problem}. Correct it and submit again.", ""]
    lines += [f"### Approve champion: {model_name} v{cand.version}", ""]
    if champ is None:
        lines += ["There is no current champion: approving makes this the first one.", ""]
    lines += _markdown_table(evidence_columns(evidence), evidence_rows(evidence)) + [""]
    if evidence.window:
        lines += [f"Window: {evidence.window}.", ""]
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


def evidence_columns(evidence: ApprovalEvidence) -> list[str]:
    """The comparison's column headers: the figure, the candidate, and the champion and Δ if any."""
    columns = ["figure", f"candidate v{evidence.candidate.version}"]
    if evidence.champion is not None:
        columns += [f"champion v{evidence.champion.version}", DELTA]
    return columns


def evidence_rows(evidence: ApprovalEvidence) -> list[list[str]]:
    """The comparison's rows, as Markdown cells, the decisive ones first (the dialog shows ~5 rows
    before its description scrolls): the same recent window, then training, then the MLflow runs.

    Window figures score both models on the same recent labelled records; the score shift is the
    two-sample KS between the two models' scores on it; training figures are the hold-out metrics
    logged with each version; Δ is candidate minus champion; links are ``[run 1a2b3c4](url)``.
    """
    cand, champ = evidence.candidate, evidence.champion
    rows: list[list[str]] = []

    def row(label: str, cand_value: float | None, champ_value: float | None) -> None:
        cells = [label, _num(cand_value)]
        if champ is not None:
            delta = None if cand_value is None or champ_value is None else cand_value - champ_value
            cells += [_num(champ_value), _num(delta, signed=True)]
        rows.append(cells)

    if _has_window(cand) or (champ is not None and _has_window(champ)):
        row("window KS", cand.window_ks, champ.window_ks if champ else None)
        row("window AUC", cand.window_auc, champ.window_auc if champ else None)
        if cand.window_score_mean is not None or (champ is not None and champ.window_score_mean is not None):
            row("window mean score", cand.window_score_mean, champ.window_score_mean if champ else None)
    if evidence.score_shift_ks is not None and champ is not None:
        rows.append(["score shift (KS)", "", "", _num(evidence.score_shift_ks)])
    keys = list(cand.training_metrics) + [
        k for k in (champ.training_metrics if champ else {}) if k not in cand.training_metrics
    ]
    for key in keys:
        row(
            f"training {_METRIC_NAMES.get(key, key)}",
            cand.training_metrics.get(key),
            champ.training_metrics.get(key) if champ else None,
        )
    rows.append(["MLflow run", run_link(cand)] + ([run_link(champ), ""] if champ else []))
    return rows


def evidence_table(evidence: ApprovalEvidence) -> list[dict[str, str]]:
    """The comparison as a Prefect table artifact: one dict per row, keyed by the column headers."""
    columns = evidence_columns(evidence)
    return [dict(zip(columns, cells, strict=True)) for cells in evidence_rows(evidence)]


def decision_markdown(decision: ApprovalDecision, evidence: ApprovalEvidence, form_url: str | None) -> str:
    """The lifecycle run's record of the decision: who, when, tag, comment, and the evidence shown."""
    outcome = {"approved": "approved", "rejected": "rejected", "timeout": "not answered in time"}
    when = (decision.decided_at or "–").replace("T", " ").removesuffix("+00:00")
    lines = [
        f"# Approval of {decision.model_name} v{decision.model_version}: "
        f"{outcome.get(decision.reason, decision.reason)}",
        "",
        "| | |",
        "|---|---|",
        f"| decision | {outcome.get(decision.reason, decision.reason)} |",
        f"| reviewer | {_cell(decision.reviewer) or '–'} |",
        f"| decided at (UTC) | {when} |",
        f"| image tag | {_cell(decision.image_tag) or '–'} |",
        f"| comment | {_cell(decision.comment) or '–'} |",
        f"| answers received | {decision.attempts} |",
    ]
    for number, reason in enumerate(decision.invalid_answers, start=1):
        lines.append(f"| refused answer {number} | {_cell(reason)} |")
    if form_url:
        lines.append(f"| approval run | [{short_id(decision.flow_run_id or '')}]({form_url}) |")
    lines += ["", "## Evidence the reviewer saw", ""]
    lines += _markdown_table(evidence_columns(evidence), evidence_rows(evidence))
    if evidence.window:
        lines += ["", f"Window: {evidence.window}."]
    return "\n".join(lines) + "\n"


def form_url(flow_run_id: str | None, ui_url: str | None = None) -> str | None:
    """The Prefect UI page of the approval run (its *Resume* button opens the form).

    ``ui_url`` defaults to Prefect's ``PREFECT_UI_URL`` setting (derived from ``PREFECT_API_URL``
    for a self-hosted server); None when neither is known.
    """
    base = ui_url or PREFECT_UI_URL.value()
    if not base or not flow_run_id:
        return None
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}"


def short_id(identifier: str) -> str:
    """The first 7 characters of a run id, as git shortens a commit."""
    return identifier[:7]


def run_link(model: ModelEvidence) -> str:
    """``[run 1a2b3c4](url)``: a short link to the version's MLflow run (or the short id, or –)."""
    if not model.run_id:
        return f"[run]({model.run_url})" if model.run_url else "–"
    text = f"run {short_id(model.run_id)}"
    return f"[{text}]({model.run_url})" if model.run_url else text


def approval_tags(model_name: str) -> list[str]:
    """Tags on the paused approval run; ``modelops approve --model`` searches for ``model:<name>``."""
    return ["modelops", "approval", f"model:{model_name}"]


def _has_window(model: ModelEvidence) -> bool:
    return model.window_ks is not None or model.window_auc is not None


def _markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    header = "| " + " | ".join("" if c == "figure" else c for c in columns) + " |"
    return [header, "|" + "---|" * len(columns)] + ["| " + " | ".join(cells) + " |" for cells in rows]


def _cell(text: str) -> str:
    """Free text inside a Markdown table cell: one line, no column breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"
