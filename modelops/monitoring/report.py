"""The KS check's Markdown artifact: this check, its charts (images stored in MLflow), the recent
checks, drift figures."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from modelops.monitoring.charts import MonitoringCharts
from modelops.monitoring.drift import DriftReport
from modelops.monitoring.ks_decision import KsDecision

_STATUS_MARK = {"ok": "ok", "degraded": "**DEGRADED**", "insufficient_data": "insufficient data"}


def artifact_key(model_name: str, prefix: str = "ks") -> str:
    """``<prefix>-<model>``: Prefect artifact keys allow lower-case letters, digits and dashes only.

    A name that had to change to fit (``Credit_Risk``) gets a short hash of itself, so two models
    whose names fit to the same key (``credit_risk``, ``credit-risk``) never share artifacts.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-") or "model"
    if slug != model_name:
        slug += "-" + hashlib.sha256(model_name.encode()).hexdigest()[:6]
    return f"{prefix}-{slug}"


def ks_report_markdown(
    model_name: str,
    version: str,
    decision: KsDecision,
    window_text: str,
    trend: list[dict[str, Any]],
    drift: DriftReport | None = None,
    charts: MonitoringCharts | None = None,
) -> str:
    """This check's figures, the KS chart (embedded from MLflow), the recent checks, label-free drift."""
    lines = [
        f"# KS check: {model_name} v{version}",
        "",
        f"**Status: {_STATUS_MARK.get(decision.status, decision.status)}** — {decision.reason}.",
        "",
        "## KS over time",
        "",
    ]
    lines += _picture(
        charts,
        "ks_history_url",
        "KS over time per version, with the threshold, approvals and retrains marked",
    )
    lines += [
        "## This check",
        "",
        "| figure | value |",
        "|---|---|",
        f"| KS | {_fmt(decision.ks)} |",
        f"| threshold | {decision.threshold} |",
        f"| AUC | {_fmt(decision.auc)} |",
        f"| labelled records | {decision.n} ({decision.n_events} events) |",
        f"| window | {window_text} |",
        "",
        f"## KS trend (last {len(trend)} checks)",
        "",
        "| checked at (UTC) | version | status | KS | AUC | n |",
        "|---|---|---|---|---|---|",
    ]
    for row in trend:
        checked = row["checked_at"]
        when = checked.strftime("%Y-%m-%d %H:%M:%S") if isinstance(checked, datetime) else str(checked)
        lines.append(
            f"| {when} | {row['model_version']} | {_STATUS_MARK.get(row['status'], row['status'])} "
            f"| {_fmt(row['ks'])} | {_fmt(row['auc'])} | {row['n']} |"
        )
    lines += ["", "## Label-free drift (training reference vs. this window)", ""]
    if drift is None:
        lines.append("No training reference was given: score and feature drift not computed.")
    else:
        verdict = "**drift detected**" if drift.detected else "no drift above the limits"
        lines += [
            f"{verdict} (reference n={drift.n_reference}, window n={drift.n_current}).",
            "",
        ]
        lines += _picture(
            charts, "drift_url", "PSI per feature, and the score distribution: reference vs window"
        )
        lines += [
            "| measure | value | limit | drift |",
            "|---|---|---|---|",
            f"| score KS (reference vs. window) | {_fmt(drift.score_ks)} | {drift.score_ks_limit} "
            f"| {'yes' if drift.score_drift else 'no'} |",
        ]
        for name, value in sorted(drift.psi.items(), key=lambda kv: -kv[1]):
            lines.append(
                f"| PSI {name} | {_fmt(value)} | {drift.psi_limit} "
                f"| {'yes' if name in drift.drifted_features else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def _picture(charts: MonitoringCharts | None, field: str, alt: str) -> list[str]:
    """A picture stored in MLflow, embedded by URL, with a link to its run; or why there is none."""
    if charts is None:
        return ["No chart was drawn for this check.", ""]
    url = getattr(charts, field)
    lines = [f"![{alt}]({url})", ""] if url else []
    where = (
        f"[monitoring run {charts.run_id[:7]}]({charts.run_url})"
        if charts.run_id and charts.run_url
        else None
    )
    if url and where:
        lines += [f"Stored in MLflow: {where}.", ""]
    if charts.note:
        lines += [f"_{charts.note}_" + (f" ({where})" if where and not url else "") + ".", ""]
    return lines


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
