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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from modelops.config import ModelOpsConfig
from modelops.data.generator import generate_training
from modelops.data.loading import load_dataset
from modelops.data.schema import DatasetSchema
from modelops.integrations.database import resolve_database_url
from modelops.integrations.registry import (
    CHALLENGER,
    CHAMPION,
    LoggedDataset,
    client_for,
    download_serving_model,
    evaluate_against_baseline,
    get_alias_version,
    resolve_version,
    set_version_tags,
)
from modelops.integrations.scoring_log import fetch_recent_labelled_records
from modelops.model.metrics import auc, ks_statistic
from modelops.pipeline.prebuild import version_schema

log = logging.getLogger(__name__)

# Recent traffic for retraining: this many KS windows back (the newest behaviour, not all history).
RECENT_WINDOWS = 2
# Records of a time window ("kind: time") when the window has no count of its own.
RECENT_RECORDS_FOR_TIME_WINDOWS = 6000
REFERENCE_SHARE = 0.15

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
        return generate_training(rows=int(generated.group(1)), seed=int(generated.group(2)))
    path = Path(data_source)
    if path.exists():
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
    # modelops.model.export loads TensorFlow: the retrain run pays for it only once it scores.
    from modelops.model.export import score_frame

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


def retraining_data(
    config: ModelOpsConfig, model_name: str, reference_version: str
) -> tuple[DatasetSchema, RetrainingSet]:
    """The schema of ``reference_version`` and the retraining set built by the policy above."""
    schema = version_schema(model_name, reference_version, config.mlflow_uri)
    window = config.monitoring.window
    recent = fetch_recent_labelled_records(
        resolve_database_url(config),
        model_name,
        RECENT_WINDOWS * window.size if window.kind == "count" else RECENT_RECORDS_FOR_TIME_WINDOWS,
        schema=config.database.schema_name,
        label_column=schema.target,
    )
    lineage = resolve_version(client_for(config.mlflow_uri), model_name, reference_version).tags or {}
    dataset = build_retraining_set(
        recent,
        reference_frame(lineage.get("data_source"), schema),
        schema,
        reference_share=REFERENCE_SHARE,
        min_records=max(400, config.monitoring.min_sample),
        seed=config.training.seed,
    )
    return schema, dataset


def retrain_lineage(
    dataset: RetrainingSet,
    champion: str | None,
    ks: float | None,
    trigger_event_id: str | None,
    triggered_version: str | None,
) -> dict[str, Any]:
    """The version tags that say why and from what a retrained version was made."""
    return {
        "trigger": "modelops.performance.degraded" if trigger_event_id else "manual",
        "trigger_event_id": trigger_event_id or "",
        "trigger_ks": "" if ks is None else f"{ks:.4f}",
        "triggered_version": triggered_version or champion or "",
        "retrained_from": champion or "",
        "data_window": dataset.window,
        "n_recent": dataset.n_recent,
        "n_reference": dataset.n_reference,
    }


def holdout_tags(figures: dict[str, dict[str, float]]) -> dict[str, str]:
    """``recent_holdout_<role>_<figure>`` version tags from :func:`compare_on_holdout`'s result."""
    return {
        f"recent_holdout_{role}_{key}": f"{value:.4f}"
        for role, role_figures in figures.items()
        for key, value in role_figures.items()
        if key != "version"
    }


def model_input_types(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """Numbers as float64 (MLflow's signature refuses an int64 column for a double), categories as text.

    Scoring-log records keep the JSON types their callers sent: a column of whole numbers comes back
    as int64.
    """
    typed = frame.reset_index(drop=True).copy()
    for name in schema.numeric:
        typed[name] = pd.to_numeric(typed[name], errors="coerce").astype("float64")
    for name in schema.categorical:
        typed[name] = typed[name].astype(object)
    return typed


def recent_records(dataset: RetrainingSet, schema: DatasetSchema) -> pd.DataFrame:
    """The retrain's recent labelled records: the recent part of the training set, then the hold-out."""
    columns = [*schema.features, schema.target]
    return pd.concat(
        [dataset.train.iloc[: dataset.n_recent][columns], dataset.recent_holdout[columns]], ignore_index=True
    )


def evaluate_against_champion(
    config: ModelOpsConfig,
    model_name: str,
    version: str,
    champion: str,
    schema: DatasetSchema,
    dataset: RetrainingSet,
) -> dict[str, Any]:
    """``mlflow.models.evaluate`` of the retrained version, the champion as baseline, on the recent hold-out.

    Logged on the new version's run with the recent window as a data set (``log_input``); the verdict
    also becomes version tags, so the model card shows it.
    """
    recent = LoggedDataset(
        recent_records(dataset, schema),
        "recent-window",
        "recent_window",
        targets=schema.target,
        tags={"window": dataset.window[:250]},
    )
    holdout = model_input_types(dataset.recent_holdout[[*schema.features, schema.target]], schema)
    outcome = evaluate_against_baseline(
        model_name, version, champion, holdout, schema.target, config.mlflow_uri, datasets=[recent]
    )
    set_version_tags(
        model_name,
        version,
        {"evaluation_vs_champion": outcome["verdict"][:500], "evaluation_baseline_version": champion},
        config.mlflow_uri,
    )
    return outcome
