"""Prefect artifacts: what a person reads on a run page (approval evidence, decision, KS report)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.artifacts import MarkdownArtifact, create_markdown_artifact, create_table_artifact

from modelops.approval import (
    ApprovalDecision,
    ApprovalEvidence,
    decision_markdown,
    evidence_table,
    form_url,
)
from modelops.monitoring.charts import MonitoringCharts
from modelops.monitoring.drift import DriftReport
from modelops.monitoring.ks_decision import KsDecision
from modelops.monitoring.report import artifact_key, ks_report_markdown
from tasks.base import task


def publish_approval_evidence(model_name: str, evidence: ApprovalEvidence) -> str:
    """The table artifact ``approval-<model>`` on the paused run: the comparison the form shows.

    Not a task: an artifact made inside a task belongs to the task run, and the run page lists it
    below the flow run's own; this one is the first thing on the approval run's Artifacts tab.
    """
    key = artifact_key(model_name, "approval")
    champion = f" next to champion v{evidence.champion.version}" if evidence.champion else ""
    window = evidence.window or "none"
    create_table_artifact(
        table=evidence_table(evidence),
        key=key,
        description=f"Candidate v{evidence.candidate.version}{champion}. Window: {window}.",
    )
    return key


def publish_approval_decision(
    decision: ApprovalDecision, evidence: ApprovalEvidence, on_flow_run: str | None
) -> str:
    """The Markdown artifact ``approval-decision-<model>``: who decided what, when, on which evidence.

    ``on_flow_run``: the run whose page shows it (the lifecycle run, parent of the deployment
    stage); None: the current flow run. Not a task, for the same reason as
    :func:`publish_approval_evidence`: it is listed as the run's own artifact.
    """
    key = artifact_key(decision.model_name, "approval-decision")
    MarkdownArtifact(
        markdown=decision_markdown(decision, evidence, form_url(decision.flow_run_id)),
        key=key,
        description=f"{decision.model_name} v{decision.model_version}: {decision.reason}",
        flow_run_id=UUID(on_flow_run) if on_flow_run else None,
    ).create()
    return key


@task("publish-ks-report")
def publish_ks_report(
    model_name: str,
    version: str,
    decision: KsDecision,
    window_text: str,
    trend: list[dict[str, Any]],
    drift: DriftReport | None,
    charts: MonitoringCharts | None = None,
) -> str:
    """The key of the Markdown artifact ``ks-<model>``: this check, its charts, the trend, drift figures."""
    key = artifact_key(model_name)
    create_markdown_artifact(
        markdown=ks_report_markdown(model_name, version, decision, window_text, trend, drift, charts),
        key=key,
        description=f"KS check of {model_name} v{version}: {decision.status}",
    )
    return key
