"""Prefect artifacts: the KS report a person reads on the run page."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact

from modelops.monitoring.drift import DriftReport
from modelops.monitoring.ks_decision import KsDecision
from modelops.monitoring.report import artifact_key, ks_report_markdown
from tasks.base import task


@task("publish-ks-report")
def publish_ks_report(
    model_name: str,
    version: str,
    decision: KsDecision,
    window_text: str,
    trend: list[dict[str, Any]],
    drift: DriftReport | None,
) -> str:
    """The key of the Markdown artifact ``ks-<model>``: this check, the trend, the drift figures."""
    key = artifact_key(model_name)
    create_markdown_artifact(
        markdown=ks_report_markdown(model_name, version, decision, window_text, trend, drift),
        key=key,
        description=f"KS check of {model_name} v{version}: {decision.status}",
    )
    return key
