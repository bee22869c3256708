"""The seed's KS gateway: ok, degraded (KS below the threshold) or insufficient data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

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

    def figures(self) -> dict[str, float | int | None]:
        """What a ``modelops.performance.*`` event carries."""
        return {
            "ks": self.ks,
            "threshold": self.threshold,
            "n": self.n,
            "n_events": self.n_events,
            "auc": self.auc,
        }


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
    ks, area = ks_and_auc(scores, labels)
    if ks < threshold:
        return KsDecision(
            "degraded", ks, area, threshold, n, n_events, f"KS {ks:.4f} is below the threshold {threshold}"
        )
    return KsDecision(
        "ok", ks, area, threshold, n, n_events, f"KS {ks:.4f} is at or above the threshold {threshold}"
    )


def ks_and_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """KS and AUC from one sort: the same figures as ``ks_2samp(score[y==1], score[y==0]).statistic`` and
    :func:`modelops.model.metrics.auc` (ties count one half), about 3x faster on a 1 M-record window.
    """
    scores = np.asarray(scores, dtype=float)
    is_event = np.asarray(labels) == 1
    order = np.argsort(scores)
    ordered, events = scores[order], is_event[order]
    n_events = int(events.sum())
    n_non_events = len(ordered) - n_events
    if n_events == 0 or n_non_events == 0:
        raise ValueError(f"KS needs both classes: got {n_events} events and {n_non_events} non-events")
    # tied scores form one step of both empirical distribution functions
    group_end = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))
    cum_events = np.cumsum(events)[group_end]
    cum_all = group_end + 1
    cum_non_events = cum_all - cum_events
    ks = float(np.max(np.abs(cum_events / n_events - cum_non_events / n_non_events)))
    # rank-sum AUC: every member of a tie group gets the group's average rank
    group_start = np.append(0, cum_all[:-1])
    average_rank = (group_start + 1 + cum_all) / 2.0
    events_per_group = np.diff(np.append(0, cum_events))
    rank_sum = float(np.dot(events_per_group, average_rank))
    area = (rank_sum - n_events * (n_events + 1) / 2) / (n_events * n_non_events)
    return ks, float(area)
