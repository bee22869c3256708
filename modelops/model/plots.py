"""ROC and KS-curve pictures of a scorer on labelled data (PNG files, matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelops.model.metrics import auc


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    y = np.asarray(labels)[order]
    tpr = np.concatenate([[0.0], np.cumsum(y == 1) / max((y == 1).sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(y == 0) / max((y == 0).sum(), 1)])
    return fpr, tpr


def save_roc_curve(scores: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "ROC") -> Path:
    plt = _pyplot()
    fpr, tpr = roc_points(scores, labels)
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(fpr, tpr, label=f"model (AUC {auc(scores, labels):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def save_ks_curve(scores: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "KS") -> Path:
    plt = _pyplot()
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    grid = np.unique(scores)
    events = np.searchsorted(np.sort(scores[labels == 1]), grid, side="right") / max((labels == 1).sum(), 1)
    non_events = np.searchsorted(np.sort(scores[labels == 0]), grid, side="right") / max(
        (labels == 0).sum(), 1
    )
    gap = np.abs(non_events - events)
    at = int(np.argmax(gap))
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.plot(grid, events, label="events (target 1)")
    axes.plot(grid, non_events, label="non-events (target 0)")
    axes.vlines(grid[at], events[at], non_events[at], colors="red", label=f"KS {gap[at]:.3f}")
    axes.set(xlabel="score", ylabel="cumulative share", title=title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)
