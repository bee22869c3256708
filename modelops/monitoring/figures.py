"""The KS check's figures, from the records to MLflow: read the history, draw, store, give the URLs.

    scoring log (ks_checks, approvals) + registry (retrained versions)
        → charts.ks_history_png / charts.drift_png
        → the model's MLflow monitoring run (PNGs under ks-checks/<check id>/, metrics at step <check id>)
        → MonitoringCharts (the URLs the Prefect artifact embeds)

Pictures are extra: when MLflow is down the check still completes and the report says why the
charts are missing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelops.config import ModelOpsConfig
from modelops.integrations import monitoring_run, performance_store
from modelops.integrations.registry import tracking_server_unreachable
from modelops.monitoring.charts import (
    MARKER_REACH,
    ChartMarker,
    MarkerKind,
    MonitoringCharts,
    drift_png,
    ks_history_png,
)
from modelops.monitoring.drift import DriftReport, load_reference
from modelops.monitoring.ks_decision import KsDecision

log = logging.getLogger(__name__)
CHART_CHECKS = 200  # checks drawn on the KS history (at the default 10-minute schedule: ~33 hours)
KS_HISTORY = "ks-history.png"
DRIFT = "drift.png"


def publish_check_charts(
    config: ModelOpsConfig,
    dsn: str,
    model_name: str,
    version: str,
    check_id: int,
    decision: KsDecision,
    reference: Any = None,
    drift: DriftReport | None = None,
) -> MonitoringCharts:
    """Draw this check's charts and store them in the model's monitoring run; never raises."""
    try:
        return _publish(config, dsn, model_name, version, check_id, decision, reference, drift)
    except Exception as exc:  # noqa: BLE001 - the check's result must not depend on its pictures
        log.warning("KS check charts of %s not stored: %s: %s", model_name, type(exc).__name__, exc)
        return MonitoringCharts(note=f"charts not stored ({type(exc).__name__}: {exc})")


def _publish(
    config: ModelOpsConfig,
    dsn: str,
    model_name: str,
    version: str,
    check_id: int,
    decision: KsDecision,
    reference: Any,
    drift: DriftReport | None,
) -> MonitoringCharts:
    uri, schema = config.mlflow_uri, config.database.schema_name
    checks = performance_store.read_recent_checks(dsn, model_name, CHART_CHECKS, schema=schema)
    problem = tracking_server_unreachable(uri)
    markers = decision_markers(
        performance_store.read_decisions(dsn, model_name, _since(checks), schema=schema)
    )
    if problem is None:
        markers += retrain_markers(monitoring_run.retrained_versions(uri, model_name))
    pictures = {KS_HISTORY: ks_history_png(checks, markers, model_name)}
    if drift is not None:
        reference_scores = _reference_scores(reference)
        window_scores = (
            performance_store.read_window_scores(
                dsn, model_name, version, config.monitoring.window, schema=schema
            )
            if reference_scores is not None
            else None
        )
        pictures[DRIFT] = drift_png(drift, reference_scores, window_scores)
    if problem is not None:
        return MonitoringCharts(note=f"charts not stored: {problem}")
    run = monitoring_run.monitoring_run(uri, model_name)
    folder = f"ks-checks/{check_id}"
    for name, png in pictures.items():
        monitoring_run.log_png(uri, run.run_id, f"{folder}/{name}", png)
    monitoring_run.log_check_metrics(uri, run.run_id, check_id, check_metrics(decision, drift))
    urls = {name: monitoring_run.artifact_image_url(uri, run.run_id, f"{folder}/{name}") for name in pictures}
    return MonitoringCharts(
        ks_history_url=urls.get(KS_HISTORY),
        drift_url=urls.get(DRIFT),
        run_url=run.url,
        run_id=run.run_id,
        paths=tuple(f"{folder}/{name}" for name in pictures),
        note=None if urls[KS_HISTORY] else f"stored in MLflow ({uri}) but no tracking server serves them",
    )


def decision_markers(decisions: Sequence[Mapping[str, Any]]) -> list[ChartMarker]:
    """Approvals (and rejections) from the approvals audit, as vertical marks."""
    markers = []
    for row in decisions:
        kind: MarkerKind = "approved" if row["approved"] else "rejected"
        reviewer = str(row.get("reviewer") or "")
        who = f" ({reviewer})" if reviewer and not reviewer.startswith("(nobody") else ""
        markers.append(
            ChartMarker(
                row["decided_at"], str(row["model_version"]), kind, f"v{row['model_version']} {kind}{who}"
            )
        )
    return markers


def retrain_markers(retrains: Sequence[monitoring_run.RetrainedVersion]) -> list[ChartMarker]:
    return [ChartMarker(r.registered_at, r.version, "retrained", f"v{r.version} retrained") for r in retrains]


def check_metrics(decision: KsDecision, drift: DriftReport | None) -> dict[str, float | None]:
    """The figures logged to the monitoring run at the check's step."""
    figures: dict[str, float | None] = {"ks": decision.ks, "auc": decision.auc, "n": float(decision.n)}
    if drift is not None:
        figures["score_ks"] = drift.score_ks
        figures.update({f"psi.{name}": value for name, value in drift.psi.items()})
    return figures


def _since(checks: Sequence[Mapping[str, Any]]) -> Any:
    if not checks:
        return None
    first, last = checks[0]["checked_at"], checks[-1]["checked_at"]
    return first - (last - first) * MARKER_REACH


def _reference_scores(reference: Any) -> np.ndarray | None:
    frame = load_reference(reference) if isinstance(reference, str | Path) else reference
    if not isinstance(frame, pd.DataFrame) or "score" not in frame.columns:
        return None
    scores: np.ndarray = frame["score"].to_numpy(dtype=float)
    return scores
