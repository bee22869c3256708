"""What the loop tells people at each stage: the title and facts of every notification.

The flows decide *when* to notify (``tasks.notify``); this module decides *what* is said, so the
wording is in one place and the flows stay a list of steps.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from modelops.approval import ApprovalDecision
from modelops.monitoring.ks_decision import KsDecision
from modelops.targets import Rollout


class Message(NamedTuple):
    stage: str  # one of modelops.integrations.notify.STAGES
    title: str
    facts: dict[str, Any]


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
