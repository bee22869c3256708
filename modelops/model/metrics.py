"""Performance and drift figures for a binary scorer: KS, AUC, Gini, accuracy, log-loss, PSI.

Pure NumPy/SciPy: used by training, the KS check, retraining and the benchmarks alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_EPS = 1e-7


def two_sample_ks(first: np.ndarray, second: np.ndarray) -> float:
    """The two-sample KS statistic: max |F_first(s) - F_second(s)|."""
    from scipy.stats import ks_2samp  # lazy: scipy.stats costs ~0.5 s, before a flow run is Running

    return float(ks_2samp(np.asarray(first, dtype=float), np.asarray(second, dtype=float)).statistic)


def ks_statistic(scores: np.ndarray, labels: np.ndarray) -> float:
    """max |F_event(s) - F_non_event(s)|, i.e. ``ks_2samp(score[y==1], score[y==0]).statistic``."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    events, non_events = scores[labels == 1], scores[labels == 0]
    if len(events) == 0 or len(non_events) == 0:
        raise ValueError(f"KS needs both classes: got {len(events)} events and {len(non_events)} non-events")
    return two_sample_ks(events, non_events)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula; ties count one half."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    n_events = int((labels == 1).sum())
    n_non_events = int((labels == 0).sum())
    if n_events == 0 or n_non_events == 0:
        raise ValueError("AUC needs both classes")
    from scipy.stats import rankdata  # lazy: see two_sample_ks

    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - n_events * (n_events + 1) / 2) / (n_events * n_non_events))


def log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(np.asarray(scores, dtype=float), _EPS, 1 - _EPS)
    y = np.asarray(labels, dtype=float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class BinaryMetrics:
    ks: float
    auc: float
    gini: float
    accuracy: float
    log_loss: float
    n: int
    event_rate: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def binary_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> BinaryMetrics:
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels).astype(int)
    area = auc(scores, labels)
    return BinaryMetrics(
        ks=ks_statistic(scores, labels),
        auc=area,
        gini=2 * area - 1,
        accuracy=float(((scores >= threshold).astype(int) == labels).mean()),
        log_loss=log_loss(scores, labels),
        n=int(len(labels)),
        event_rate=float(labels.mean()),
    )


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index of a numeric feature, deciles of the reference; NaN is its own bin."""
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    finite = reference[np.isfinite(reference)]
    if len(finite) == 0:
        edges = np.array([])
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))

    def shares(values: np.ndarray) -> np.ndarray:
        missing = ~np.isfinite(values)
        counts = np.bincount(np.searchsorted(edges, values[~missing], side="right"), minlength=len(edges) + 1)
        counts = np.append(counts, missing.sum()).astype(float)
        return np.clip(counts / max(len(values), 1), _EPS, None)

    ref, cur = shares(reference), shares(current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi_categorical(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of a categorical feature; every category seen in either sample (and missing) is a bin."""
    ref = np.asarray(reference, dtype=object)
    cur = np.asarray(current, dtype=object)
    categories = sorted({str(v) for v in np.concatenate([ref, cur])})
    ref_share = np.clip(np.array([(ref.astype(str) == c).mean() for c in categories]), _EPS, None)
    cur_share = np.clip(np.array([(cur.astype(str) == c).mean() for c in categories]), _EPS, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))
