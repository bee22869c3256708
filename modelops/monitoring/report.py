"""The KS check's Markdown artifact: this check, the KS trend of recent checks, drift figures."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from modelops.monitoring.drift import DriftReport
from modelops.monitoring.ks_decision import KsDecision

_BAR_WIDTH = 30
_STATUS_MARK = {"ok": "ok", "degraded": "**DEGRADED**", "insufficient_data": "insufficient data"}


def artifact_key(model_name: str) -> str:
    """Prefect artifact keys allow lower-case letters, digits and dashes only."""
    return "ks-" + (re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-") or "model")


def ks_bar(ks: float | None, threshold: float) -> str:
    """A fixed-width text bar with the threshold marked ('|'), readable in any Markdown renderer."""
    if ks is None:
        return ""
    filled = round(max(0.0, min(1.0, ks)) * _BAR_WIDTH)
    mark = round(threshold * _BAR_WIDTH)
    cells = ["#" if i < filled else "." for i in range(_BAR_WIDTH)]
    if 0 <= mark < _BAR_WIDTH:
        cells[mark] = "|"
    return "`" + "".join(cells) + "`"


def ks_report_markdown(
    model_name: str,
    version: str,
    decision: KsDecision,
    window_text: str,
    trend: list[dict[str, Any]],
    drift: DriftReport | None = None,
) -> str:
    lines = [
        f"# KS check: {model_name} v{version}",
        "",
        f"**Status: {_STATUS_MARK.get(decision.status, decision.status)}** — {decision.reason}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| KS | {_fmt(decision.ks)} |",
        f"| threshold | {decision.threshold} |",
        f"| AUC | {_fmt(decision.auc)} |",
        f"| labelled records | {decision.n} ({decision.n_events} events) |",
        f"| window | {window_text} |",
        "",
        f"## KS trend (last {len(trend)} checks; `|` marks the threshold)",
        "",
        "| checked at (UTC) | version | status | KS | AUC | n | KS bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in trend:
        checked = row["checked_at"]
        when = checked.strftime("%Y-%m-%d %H:%M:%S") if isinstance(checked, datetime) else str(checked)
        lines.append(
            f"| {when} | {row['model_version']} | {_STATUS_MARK.get(row['status'], row['status'])} "
            f"| {_fmt(row['ks'])} | {_fmt(row['auc'])} | {row['n']} | {ks_bar(row['ks'], row['threshold'])} |"
        )
    lines += ["", "## Label-free drift (training reference vs. this window)", ""]
    if drift is None:
        lines.append("No training reference was given: score and feature drift not computed.")
    else:
        verdict = "**drift detected**" if drift.detected else "no drift above the limits"
        lines += [
            f"{verdict} (reference n={drift.n_reference}, window n={drift.n_current}).",
            "",
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


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"
