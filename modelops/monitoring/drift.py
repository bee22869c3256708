"""Label-free early warning: has the score distribution or any input feature moved from training?

Score drift is the two-sample KS between reference (training) scores and the window's scores;
feature drift is the PSI per feature (deciles of the reference for numbers, categories otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelops.config import ModelOpsConfig
from modelops.integrations import performance_store
from modelops.model.metrics import psi, psi_categorical, two_sample_ks

# Columns of a reference sample that are not model inputs.
NOT_FEATURES = {"score", "label", "BAD", "target", "request_id", "scored_at"}


@dataclass(frozen=True)
class DriftReport:
    score_ks: float | None
    score_ks_limit: float
    psi: dict[str, float]
    psi_limit: float
    n_reference: int
    n_current: int
    drifted_features: tuple[str, ...] = field(default=())

    @property
    def score_drift(self) -> bool:
        return self.score_ks is not None and self.score_ks > self.score_ks_limit

    @property
    def detected(self) -> bool:
        return self.score_drift or bool(self.drifted_features)

    def event_payload(self) -> dict[str, Any]:
        """What ``modelops.drift.detected`` carries."""
        return {
            "score_ks": self.score_ks,
            "score_ks_limit": self.score_ks_limit,
            "psi": self.psi,
            "psi_limit": self.psi_limit,
            "drifted_features": list(self.drifted_features),
        }

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(
            drifted_features=list(self.drifted_features), score_drift=self.score_drift, detected=self.detected
        )
        return data


def drift_report(
    reference_scores: np.ndarray | None,
    current_scores: np.ndarray | None,
    reference_features=None,
    current_features=None,
    psi_limit: float = 0.25,
    score_ks_limit: float = 0.2,
) -> DriftReport:
    """Compare a training reference with the current window; features are pandas DataFrames."""
    score_ks = None
    if (
        reference_scores is not None
        and current_scores is not None
        and len(reference_scores)
        and len(current_scores)
    ):
        score_ks = two_sample_ks(reference_scores, current_scores)
    psis: dict[str, float] = {}
    if reference_features is not None and current_features is not None and len(current_features):
        for column in reference_features.columns:
            if column not in current_features.columns:
                continue
            ref, cur = reference_features[column], current_features[column]
            if _numeric(ref):
                psis[column] = psi(ref.to_numpy(dtype=float, na_value=np.nan), _as_float(cur))
            else:
                psis[column] = psi_categorical(
                    ref.fillna("").to_numpy(dtype=object), cur.fillna("").to_numpy(dtype=object)
                )
    drifted = tuple(sorted(name for name, value in psis.items() if value > psi_limit))
    return DriftReport(
        score_ks=score_ks,
        score_ks_limit=score_ks_limit,
        psi=psis,
        psi_limit=psi_limit,
        n_reference=_size(reference_scores, reference_features),
        n_current=_size(current_scores, current_features),
        drifted_features=drifted,
    )


def load_reference(path: str | Path) -> pd.DataFrame:
    """A reference sample (training features, optional ``score`` column) from CSV or Parquet."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"drift reference {path} does not exist: pass a CSV/Parquet of training rows")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series)


def _as_float(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _size(scores, features) -> int:
    if scores is not None:
        return int(len(scores))
    return int(len(features)) if features is not None else 0


def drift_against_reference(
    dsn: str, model_name: str, version: str, reference: Any, config: ModelOpsConfig
) -> DriftReport:
    """Label-free drift of the version's latest window against a training reference.

    ``reference``: a CSV/Parquet path or a DataFrame of training rows (feature columns and, when
    known, the ``score`` the model gave them).
    """
    frame = load_reference(reference) if isinstance(reference, str | Path) else reference
    schema, window = config.database.schema_name, config.monitoring.window
    reference_scores = frame["score"].to_numpy(dtype=float) if "score" in frame.columns else None
    feature_columns = [c for c in frame.columns if c not in NOT_FEATURES]
    current_scores = (
        performance_store.read_window_scores(dsn, model_name, version, window, schema=schema)
        if reference_scores is not None
        else None
    )
    current_features = (
        performance_store.read_window_features(dsn, model_name, version, window, schema=schema)
        if feature_columns
        else None
    )
    return drift_report(
        reference_scores,
        current_scores,
        frame[feature_columns] if feature_columns else None,
        current_features,
        psi_limit=config.monitoring.psi_limit,
        score_ks_limit=config.monitoring.score_ks_limit,
    )
