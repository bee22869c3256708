"""The seed's KS gateway: ok, degraded (KS below the threshold) or insufficient data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from modelops.model.metrics import auc, ks_statistic

Status = Literal["ok", "degraded", "insufficient_data"]


@dataclass(frozen=True)
class KsDecision:
    status: Status
    ks: float | None
    auc: float | None
    threshold: float
    n: int
    n_events: int
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def decide_ks(scores: np.ndarray, labels: np.ndarray, threshold: float, min_sample: int) -> KsDecision:
    """KS = ks_2samp(score[y==1], score[y==0]).statistic; too few records or one class → never degraded."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    n, n_events = int(len(scores)), int((labels == 1).sum())
    n_non_events = n - n_events
    if n < min_sample:
        return KsDecision(
            "insufficient_data",
            None,
            None,
            threshold,
            n,
            n_events,
            f"{n} labelled records, fewer than monitoring.min_sample={min_sample}",
        )
    if n_events == 0 or n_non_events == 0:
        missing = "events (label 1)" if n_events == 0 else "non-events (label 0)"
        return KsDecision(
            "insufficient_data",
            None,
            None,
            threshold,
            n,
            n_events,
            f"no {missing} among {n} labelled records: KS needs both classes",
        )
    ks = ks_statistic(scores, labels)
    area = auc(scores, labels)
    if ks < threshold:
        return KsDecision(
            "degraded", ks, area, threshold, n, n_events, f"KS {ks:.4f} is below the threshold {threshold}"
        )
    return KsDecision(
        "ok", ks, area, threshold, n, n_events, f"KS {ks:.4f} is at or above the threshold {threshold}"
    )
