"""Hold-out split and evaluation of a fitted model: the figures and pictures a version is judged by."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from modelops.data.schema import DatasetSchema
from modelops.model.metrics import BinaryMetrics, binary_metrics
from modelops.model.plots import save_ks_curve, save_roc_curve


@dataclass(frozen=True)
class Evaluation:
    metrics: BinaryMetrics
    scores: np.ndarray
    labels: np.ndarray


def split_holdout(
    frame: pd.DataFrame, schema: DatasetSchema, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified by the target: (train, holdout), each with the same event rate."""
    rng = np.random.default_rng(seed)
    labels = frame[schema.target].to_numpy()
    holdout_rows = []
    for value in (0, 1):
        rows = np.flatnonzero(labels == value)
        take = max(1, int(round(len(rows) * fraction)))
        if take >= len(rows):
            raise ValueError(
                f"only {len(rows)} rows with {schema.target}={value}: too few for a {fraction:.0%} hold-out; "
                "give more data or a smaller holdout_fraction"
            )
        holdout_rows.append(rng.choice(rows, size=take, replace=False))
    holdout_mask = np.zeros(len(frame), dtype=bool)
    holdout_mask[np.concatenate(holdout_rows)] = True
    return frame[~holdout_mask].reset_index(drop=True), frame[holdout_mask].reset_index(drop=True)


def evaluate(fitted, holdout: pd.DataFrame, threshold: float = 0.5) -> Evaluation:
    scores = fitted.score(holdout)
    labels = holdout[fitted.schema.target].to_numpy().astype(int)
    return Evaluation(binary_metrics(scores, labels, threshold=threshold), scores, labels)


def save_curves(evaluation: Evaluation, folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "roc": save_roc_curve(
            evaluation.scores, evaluation.labels, folder / "roc_curve.png", "ROC (hold-out)"
        ),
        "ks": save_ks_curve(evaluation.scores, evaluation.labels, folder / "ks_curve.png", "KS (hold-out)"),
    }
