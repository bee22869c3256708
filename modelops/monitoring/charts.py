"""The KS check's pictures, drawn with matplotlib (Agg) into PNG bytes: no file, no server, no I/O.

* :func:`ks_history_png`: KS over time, one line per model version, the threshold, and vertical
  marks where a version was approved (or rejected) and where one was retrained.
* :func:`drift_png`: label-free drift: PSI per feature against its limit, and the score
  distribution of the training reference next to the window's.

Where they are stored and shown (MLflow, the Prefect artifact) is :mod:`modelops.monitoring.figures`.
matplotlib is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from modelops.monitoring.drift import DriftReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MarkerKind = Literal["approved", "rejected", "retrained"]
WIDTH_IN, HEIGHT_IN, DPI = 7.2, 3.4, 100  # 720 x 340 px: fits the Prefect artifact page at 1280 px
MAX_FEATURES = 12  # PSI bars drawn (the highest)
MIN_SPAN = timedelta(minutes=4)  # the shortest time axis drawn
MARKER_REACH = 0.1  # marks this share of the checks' span before or after them are drawn too
_MARK_STYLE: dict[str, dict[str, Any]] = {
    "approved": {"color": "#2e8b57", "linestyle": "-", "linewidth": 1.2, "zorder": 1.5},
    "rejected": {"color": "#808080", "linestyle": ":", "linewidth": 1.2, "zorder": 1.5},
    "retrained": {"color": "#e08a00", "linestyle": "-.", "linewidth": 1.4, "zorder": 1.6},  # over an approval
}


@dataclass(frozen=True)
class ChartMarker:
    """Something that happened to the model, drawn as a vertical line on the KS history."""

    at: datetime
    version: str
    kind: MarkerKind
    label: str  # e.g. "v3 approved (alice)"


@dataclass(frozen=True)
class MonitoringCharts:
    """Where one check's pictures are: image URLs to embed, the MLflow run, or why there are none."""

    ks_history_url: str | None = None
    drift_url: str | None = None
    run_url: str | None = None  # the model's monitoring run in the MLflow UI
    run_id: str | None = None
    paths: tuple[str, ...] = ()  # artifact paths inside the run
    note: str | None = None  # why a picture is missing (MLflow unreachable, no HTTP server, ...)


def ks_history_png(
    checks: Sequence[Mapping[str, Any]],
    markers: Sequence[ChartMarker] = (),
    model_name: str = "",
) -> bytes:
    """KS over time per version, the threshold (as stored with each check) and the markers.

    ``checks`` are ``ks_checks`` rows oldest first (``checked_at``, ``model_version``, ``ks``,
    ``status``, ``threshold``); checks without a KS (too little data) are left out. Markers outside
    the checks' time span (beyond :data:`MARKER_REACH` of it) are not drawn.
    """
    figure, axes = _figure()
    try:
        drawn = [c for c in checks if c.get("ks") is not None]
        if not drawn:
            _empty(axes, "no KS computed yet (too few labelled records)")
            return _png(figure)
        _draw_versions(axes, drawn)
        times = [c["checked_at"] for c in checks]
        axes.step(
            times,
            [c["threshold"] for c in checks],
            where="post",
            color="#c0392b",
            linestyle="--",
            linewidth=1.2,
            label=f"threshold {checks[-1]['threshold']:.2f}",
        )
        start, end = min(times), max(times)
        reach = (end - start) * MARKER_REACH  # e.g. the approval just before the first check
        near = [m for m in markers if start - reach <= m.at <= end + reach]
        start, end = min([start] + [m.at for m in near]), max([end] + [m.at for m in near])
        # 4 % either side; a few checks seconds apart still get a readable axis of MIN_SPAN
        pad = max((end - start) * 0.04, (MIN_SPAN - (end - start)) / 2)
        axes.set_xlim(start - pad, end + pad)
        _draw_markers(axes, near, start - pad, end + pad)
        top = max(max(c["ks"] for c in drawn), max(c["threshold"] for c in checks))
        axes.set_ylim(0, min(1.0, top * 1.25 + 0.02))
        axes.set_ylabel("KS")
        axes.set_xlabel("checked at (UTC)", fontsize=8)
        axes.set_title(f"KS of {model_name} over the last {len(checks)} checks", fontsize=10)
        _time_axis(axes)
        axes.legend(loc="lower left", fontsize=7, ncol=4, framealpha=0.85)
        axes.grid(alpha=0.3)
        return _png(figure)
    finally:
        _close(figure)


def drift_png(
    drift: DriftReport,
    reference_scores: np.ndarray | None = None,
    window_scores: np.ndarray | None = None,
) -> bytes:
    """Two panels: PSI per feature (limit marked, drifted bars red) and reference vs window scores."""
    figure, (psi_axes, score_axes) = _figure(columns=2)
    try:
        _draw_psi(psi_axes, drift)
        _draw_scores(score_axes, drift, reference_scores, window_scores)
        return _png(figure)
    finally:
        _close(figure)


def _figure(columns: int = 1) -> tuple[Figure, Any]:
    import matplotlib  # lazy: the heavy plotting stack loads only when a check draws

    matplotlib.use("Agg")  # no display: PNGs only
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, columns)
    return figure, axes


def _draw_versions(axes: Axes, checks: Sequence[Mapping[str, Any]]) -> None:
    versions = sorted({str(c["model_version"]) for c in checks}, key=_version_order)
    colours = ["#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#ff7f0e"]
    for index, version in enumerate(versions):
        rows = [c for c in checks if str(c["model_version"]) == version]
        colour = colours[index % len(colours)]
        axes.plot(
            [c["checked_at"] for c in rows],
            [c["ks"] for c in rows],
            marker="o",
            markersize=3.5,
            linewidth=1.4,
            color=colour,
            label=f"v{version}",
        )
        degraded = [c for c in rows if c.get("status") == "degraded"]
        if degraded:
            first = index == next(i for i, v in enumerate(versions) if _has_degraded(checks, v))
            axes.scatter(
                [c["checked_at"] for c in degraded],
                [c["ks"] for c in degraded],
                s=40,
                facecolors="none",
                edgecolors="#c0392b",
                linewidths=1.4,
                zorder=3,
                label="degraded" if first else None,
            )


def _has_degraded(checks: Sequence[Mapping[str, Any]], version: str) -> bool:
    return any(str(c["model_version"]) == version and c.get("status") == "degraded" for c in checks)


def _draw_markers(axes: Axes, markers: Sequence[ChartMarker], left: datetime, right: datetime) -> None:
    """Vertical lines with rotated labels; a label that would overlap the previous one moves right."""
    width_pt = WIDTH_IN * 72 * 0.85  # the plot area, roughly, in points
    shown: set[str] = set()
    last_label = float("-inf")
    for marker in sorted(markers, key=lambda m: m.at):
        if not (left <= marker.at <= right):
            continue
        style = _MARK_STYLE[marker.kind]
        axes.axvline(marker.at, label=marker.kind if marker.kind not in shown else None, **style)  # type: ignore[arg-type]
        shown.add(marker.kind)
        at_pt = (marker.at - left) / (right - left) * width_pt
        label_pt = max(at_pt + 2, last_label + 9)  # 7-point text, rotated: ~9 points wide
        last_label = label_pt
        axes.annotate(
            marker.label,
            xy=(marker.at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(label_pt - at_pt, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize=7,
            color=style["color"],
        )


def _draw_psi(axes: Axes, drift: DriftReport) -> None:
    if not drift.psi:
        _empty(axes, "no feature compared")
        return
    ranked = sorted(drift.psi.items(), key=lambda kv: kv[1], reverse=True)[:MAX_FEATURES][::-1]
    names = [name for name, _ in ranked]
    values = [value for _, value in ranked]
    colours = ["#c0392b" if name in drift.drifted_features else "#1f77b4" for name in names]
    axes.barh(names, values, color=colours)
    axes.axvline(
        drift.psi_limit, color="#c0392b", linestyle="--", linewidth=1.2, label=f"limit {drift.psi_limit}"
    )
    axes.set_xlabel("PSI (training reference vs window)", fontsize=8)
    axes.set_title("feature drift", fontsize=10)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, loc="lower right")


def _draw_scores(
    axes: Axes, drift: DriftReport, reference: np.ndarray | None, window: np.ndarray | None
) -> None:
    if reference is None or window is None or not len(reference) or not len(window):
        _empty(axes, "no reference scores to compare")
        return
    bins = [i / 30 for i in range(31)]
    axes.hist(
        np.clip(reference, 0, 1), bins=bins, density=True, alpha=0.45, color="#7f7f7f", label="reference"
    )
    axes.hist(
        np.clip(window, 0, 1),
        bins=bins,
        density=True,
        histtype="step",
        linewidth=1.6,
        color="#1f77b4",
        label="window",
    )
    ks = "–" if drift.score_ks is None else f"{drift.score_ks:.3f}"
    colour = "#c0392b" if drift.score_drift else "black"
    axes.set_title(f"scores: KS {ks} (limit {drift.score_ks_limit})", fontsize=10, color=colour)
    axes.set_xlabel("score", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7)


def _time_axis(axes: Axes) -> None:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(minticks=3, maxticks=8)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    axes.tick_params(labelsize=7)


def _empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, fontsize=9, color="#555555")
    axes.set_xticks([])
    axes.set_yticks([])


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _close(figure: Figure) -> None:
    figure.clear()  # a Figure made without pyplot is not registered anywhere: clearing frees it
