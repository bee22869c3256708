"""Whether a Deployment's rollout is done, read from its status the way ``kubectl rollout status`` does."""

from __future__ import annotations

from typing import Any


def rollout_state(deployment: dict[str, Any], generation: int) -> tuple[str, str]:
    """``("done"|"waiting"|"failed", reason)`` for one read of the Deployment.

    Reads ``observedGeneration``, the ``Progressing`` condition, ``updatedReplicas``, ``replicas``
    and ``availableReplicas``.
    """
    status = deployment.get("status") or {}
    wanted = deployment["spec"].get("replicas", 1)
    # Conditions describe the observed generation only: an older one's verdict says nothing about this one.
    if status.get("observedGeneration", 0) < generation:
        return "waiting", "the controller has not seen the new generation yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"progress deadline exceeded: {condition.get('message', '')}"
    updated = status.get("updatedReplicas", 0)
    if updated < wanted:
        return "waiting", f"{updated} of {wanted} new replicas updated"
    if status.get("replicas", 0) > updated:
        return "waiting", f"{status.get('replicas', 0) - updated} old replicas pending termination"
    available = status.get("availableReplicas", 0)
    if available < updated:
        return "waiting", f"{available} of {updated} updated replicas available"
    return "done", f"{available} replicas available"
