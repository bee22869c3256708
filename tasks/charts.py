"""MLflow's monitoring run: each KS check's charts, drawn with matplotlib and stored as run artifacts."""

from __future__ import annotations

from typing import Any

from modelops.config import ModelOpsConfig
from modelops.monitoring.charts import MonitoringCharts
from modelops.monitoring.drift import DriftReport
from modelops.monitoring.figures import publish_check_charts
from modelops.monitoring.ks_decision import KsDecision
from tasks.base import task


@task("draw-ks-charts")
def draw_ks_charts(
    config: ModelOpsConfig,
    dsn: str,
    model_name: str,
    version: str,
    check_id: int,
    decision: KsDecision,
    reference: Any = None,
    drift: DriftReport | None = None,
) -> MonitoringCharts:
    """KS over time (threshold, approvals, retrains) and the drift figures, stored in the model's
    MLflow monitoring run; the URLs to embed them, or why they are missing (never fails the check)."""
    return publish_check_charts(config, dsn, model_name, version, check_id, decision, reference, drift)
