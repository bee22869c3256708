"""The seed's retrain step: build a training set from the scoring log and compare new vs champion.

Data policy (documented in the README):

1. take the latest labelled records of the model from the scoring log (any version): two KS
   windows (``2 × monitoring.window.size``), the newest behaviour rather than all history;
2. the newest ``holdout_fraction`` of them (by scoring time) is the *recent hold-out*: never trained
   on, used to compare the new model with the champion on the same records;
3. the training set is the rest of the recent records plus a random sample of the reference training
   data (the data the champion was trained on, found through its ``data_source`` lineage tag) of at
   most ``reference_share`` of the total (15 % in the retrain flow), so recent behaviour dominates while
   rare patterns from the
   reference are not forgotten.
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelops.data.schema import DatasetSchema

if TYPE_CHECKING:  # pandas costs ~0.5 s to import: the retrain run imports it only when it trains
    import pandas as pd

log = logging.getLogger(__name__)

_GENERATED = re.compile(r"^generated:hmeq\(rows=(\d+),seed=(\d+)\)$")


class RetrainDataError(RuntimeError):
    """Not enough labelled traffic to retrain; the message says how much there is and how much is needed."""


@dataclass(frozen=True)
class RetrainingSet:
    train: pd.DataFrame
    recent_holdout: pd.DataFrame
    n_recent: int
    n_reference: int
    window: str


def reference_frame(data_source: str | None, schema: DatasetSchema) -> pd.DataFrame | None:
    """The champion's training data from its lineage tag, or None when it cannot be found again."""
    if not data_source:
        return None
    generated = _GENERATED.match(data_source)
    if generated:
        from modelops.data.generator import generate_training

        return generate_training(rows=int(generated.group(1)), seed=int(generated.group(2)))
    path = Path(data_source)
    if path.exists():
        from modelops.data.loading import load_dataset

        return load_dataset(path, schema)
    log.warning("reference data %s is not available here: retraining on recent records only", data_source)
    return None


def build_retraining_set(
    recent: pd.DataFrame,
    reference: pd.DataFrame | None,
    schema: DatasetSchema,
    *,
    holdout_fraction: float = 0.25,
    reference_share: float = 0.5,
    min_records: int = 400,
    seed: int = 42,
) -> RetrainingSet:
    """Apply the data policy above to ``recent`` (oldest first, with a ``schema.target`` column)."""
    if len(recent) < min_records:
        raise RetrainDataError(
            f"only {len(recent)} labelled records in the scoring log; retraining needs at least {min_records}"
        )
    cut = int(round(len(recent) * (1 - holdout_fraction)))
    recent_train, holdout = recent.iloc[:cut], recent.iloc[cut:]
    if holdout[schema.target].nunique() < 2 or recent_train[schema.target].nunique() < 2:
        raise RetrainDataError("the recent labelled records hold a single class: cannot train or compare")
    import pandas as pd

    parts = [recent_train[list(schema.features) + [schema.target]]]
    n_reference = 0
    if reference is not None and reference_share > 0:
        n_reference = min(len(reference), int(len(recent_train) * reference_share / (1 - reference_share)))
        sample = reference.sample(n=n_reference, random_state=seed)
        parts.append(sample[list(schema.features) + [schema.target]])
    train = pd.concat(parts, ignore_index=True)
    window = f"latest {len(recent)} labelled records ({len(holdout)} held out as the recent hold-out)"
    return RetrainingSet(train, holdout.reset_index(drop=True), len(recent_train), n_reference, window)


def compare_on_holdout(
    model_name: str, versions: dict[str, str], holdout: pd.DataFrame, schema: DatasetSchema, tracking_uri: str
) -> dict[str, dict[str, float]]:
    """{role: {ks, auc}} for each ``role -> version`` scored on the same recent hold-out."""
    from modelops.model.export import score_frame
    from modelops.model.metrics import auc, ks_statistic
    from modelops.integrations.registry import download_serving_model

    labels = holdout[schema.target].to_numpy().astype(int)
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="modelops-retrain-") as scratch:
        for role, version in versions.items():
            model_dir = download_serving_model(model_name, version, scratch, tracking_uri)
            scores = score_frame(model_dir, holdout, schema)
            figures[role] = {
                "version": float(version),
                "ks": ks_statistic(scores, labels),
                "auc": auc(scores, labels),
                "n": float(len(labels)),
            }
    return figures


def retrain_guard(
    model_name: str, tracking_uri: str, triggered_version: str | None = None, cooldown_s: float = 0
) -> str | None:
    """Why a retrain should not start now, or None.

    Skips when a retrained challenger already awaits review, when the event that triggered the run
    was about a version that is no longer the champion (a check that read the old champion moments
    before a new one went live), and within ``cooldown_s`` of the last retrained version.
    """
    import time

    from modelops.integrations.registry import CHALLENGER, CHAMPION, client_for, get_alias_version

    challenger = get_alias_version(model_name, CHALLENGER, tracking_uri)
    champion = get_alias_version(model_name, CHAMPION, tracking_uri)
    if challenger and (champion is None or int(challenger) > int(champion)):
        return f"version {challenger} (alias challenger) already awaits review; approve or reject it first"
    if triggered_version and champion and str(triggered_version) != champion:
        return f"the degraded version {triggered_version} is no longer the champion (now version {champion})"
    if cooldown_s > 0:
        retrained = [
            v
            for v in client_for(tracking_uri).search_model_versions(f"name='{model_name}'")
            if (v.tags or {}).get("trigger")
        ]
        if retrained:
            newest = max(retrained, key=lambda v: v.creation_timestamp)
            age_s = time.time() - newest.creation_timestamp / 1000
            if age_s < cooldown_s:
                return (
                    f"version {newest.version} was retrained {age_s:.0f} s ago "
                    f"(monitoring.retrain_cooldown_s = {cooldown_s:.0f})"
                )
    return None
