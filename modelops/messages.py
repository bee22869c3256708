"""What the loop tells people at each stage: the title and facts of every notification.

The flows decide *when* to notify (``tasks.notify``); this module decides *what* is said, so the
wording is in one place and the flows stay a list of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from modelops.approval import ApprovalDecision, ApprovalEvidence, ModelEvidence, short_id
from modelops.monitoring.ks_decision import KsDecision
from modelops.targets import Rollout


class Message(NamedTuple):
    stage: str  # one of modelops.integrations.notify.STAGES
    title: str
    facts: dict[str, Any]
    link: tuple[str, str] | None = None  # (label, URL): a button on the card, a line in the e-mail


FORM_LINK_LABEL = "Open the approval form"


def approval_requested_message(
    model_name: str,
    evidence: ApprovalEvidence,
    approvers: Sequence[str],
    form_url: str | None,
    answer_by: datetime,
) -> Message:
    """A candidate waits for a reviewer: the evidence in short and the link to the form."""
    version = evidence.candidate.version
    return Message(
        "approval_requested",
        f"{model_name} v{version} waits for your approval",
        _approval_facts(evidence, approvers, form_url, answer_by),
        (FORM_LINK_LABEL, form_url) if form_url else None,
    )


def approval_reminder_message(
    model_name: str,
    evidence: ApprovalEvidence,
    approvers: Sequence[str],
    form_url: str | None,
    answer_by: datetime,
    seconds_left: float,
) -> Message:
    """Nobody answered yet: the same facts, and how long until the request times out (a rejection)."""
    version = evidence.candidate.version
    left = f"{round(seconds_left / 60)} min" if seconds_left >= 120 else f"{round(seconds_left)} s"
    return Message(
        "approval_reminder",
        f"Reminder: {model_name} v{version} still waits for approval ({left} left)",
        _approval_facts(evidence, approvers, form_url, answer_by),
        (FORM_LINK_LABEL, form_url) if form_url else None,
    )


def _approval_facts(
    evidence: ApprovalEvidence, approvers: Sequence[str], form_url: str | None, answer_by: datetime
) -> dict[str, Any]:
    cand, champ = evidence.candidate, evidence.champion
    facts: dict[str, Any] = {
        "candidate": _version_text(cand),
        "champion": _version_text(champ) if champ else "none yet (this would be the first)",
    }
    for key in ("ks", "auc"):
        if key in cand.training_metrics:
            facts[f"training {key.upper()}"] = _pair(cand.training_metrics[key], champ, champ_key=key)
    if cand.window_ks is not None:
        facts["window KS"] = _pair(cand.window_ks, champ, window="window_ks")
        facts["window AUC"] = _pair(cand.window_auc, champ, window="window_auc")
    if evidence.score_shift_ks is not None:
        facts["score shift (KS)"] = f"{evidence.score_shift_ks:.3f}"
    facts["window"] = evidence.window or "no labelled window"
    facts["approvers"] = ", ".join(approvers) if approvers else "anyone"
    facts["answer by"] = f"{answer_by:%Y-%m-%d %H:%M} UTC (then it counts as not approved)"
    facts["approval form"] = form_url or "open the paused approve-champion run in the Prefect UI"
    return facts


def _version_text(model: ModelEvidence) -> str:
    return f"v{model.version}" + (f" (run {short_id(model.run_id)})" if model.run_id else "")


def _pair(value: float | None, champ: ModelEvidence | None, champ_key: str = "", window: str = "") -> str:
    """``candidate`` or ``candidate (champion x)`` with 3 decimals."""
    text = "–" if value is None else f"{value:.3f}"
    if champ is None:
        return text
    other = champ.training_metrics.get(champ_key) if champ_key else getattr(champ, window)
    return f"{text} (champion {'–' if other is None else f'{other:.3f}'})"


def decision_message(decision: ApprovalDecision) -> Message:
    name, version = decision.model_name, decision.model_version
    if decision.approved:
        return Message(
            "approved",
            f"{name} v{version} approved as champion",
            {"reviewer": decision.reviewer, "image tag": decision.image_tag, "comment": decision.comment},
        )
    return Message(
        "rejected",
        f"{name} v{version} not approved ({decision.reason})",
        {"reviewer": decision.reviewer or "-", "comment": decision.comment or "-"},
    )


def deploy_failed_message(model_name: str, version: str, target: str, error: str) -> Message:
    return Message(
        "deploy_failed",
        f"{model_name} v{version}: rollout failed, the previous champion keeps serving",
        {"target": target, "error": error},
    )


def deployed_message(rollout: Rollout) -> Message:
    return Message(
        "deployed",
        f"{rollout.model_name} v{rollout.version} is live on {rollout.target}",
        {
            "url": rollout.url,
            "image": rollout.image or "-",
            "previous version": rollout.previous_version or "-",
        },
    )


def ks_message(model: str, version: str, decision: KsDecision, window_text: str) -> Message:
    facts = {
        "model": model,
        "version": version,
        "status": decision.status,
        "KS": decision.ks,
        "threshold": decision.threshold,
        "AUC": decision.auc,
        "labelled records": decision.n,
        "window": window_text,
    }
    if decision.status == "degraded":
        return Message(
            "retraining_needed", f"{model} v{version}: KS {decision.ks:.3f} below {decision.threshold}", facts
        )
    return Message("performance_ok", f"{model} v{version}: KS {decision.ks:.3f} is fine", facts)


def monitoring_error_message(model: str, version: str | None, error: str) -> Message:
    return Message(
        "monitoring_error",
        f"KS check of {model} failed",
        {"model": model, "version": version or "champion", "error": error},
    )


def retraining_started_message(
    model: str, ks: float | None, champion: str | None, trigger: str | None
) -> Message:
    return Message(
        "retraining_needed",
        f"{model}: retraining started (KS {ks if ks is not None else 'n/a'})",
        {"champion": champion or "-", "trigger event": trigger or "manual"},
    )


def retrained_message(model: str, version: str, figures: dict[str, dict[str, float]]) -> Message:
    facts = {
        f"{role} v{int(f['version'])} recent KS / AUC": f"{f['ks']:.3f} / {f['auc']:.3f}"
        for role, f in figures.items()
    }
    return Message("retrained", f"{model} v{version} retrained", facts)
