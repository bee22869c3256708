"""What a reviewer needs to decide: the candidate next to the champion, on the same recent window.

Both models score the most recent labelled records of the scoring log (whatever version scored
them live), so their KS/AUC are comparable. Without a database or enough labels the evidence
holds the training metrics only, and says why.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from modelops.approval import ApprovalEvidence, ModelEvidence
from modelops.config import ModelOpsConfig
from modelops.integrations.registry import (
    CHAMPION,
    client_for,
    download_serving_model,
    get_alias_version,
    resolve_version,
    run_url,
    version_metrics,
)
from modelops.integrations.scoring_log import fetch_recent_labelled_records
from modelops.model.metrics import auc, ks_statistic, two_sample_ks
from modelops.pipeline.prebuild import version_schema

log = logging.getLogger(__name__)
REVIEW_METRICS = ("ks", "auc", "gini", "accuracy", "log_loss")  # the hold-out figures a reviewer weighs


def _model_evidence(config: ModelOpsConfig, model_name: str, version: str) -> ModelEvidence:
    client = client_for(config.mlflow_uri)
    model_version = resolve_version(client, model_name, version)
    run = client.get_run(model_version.run_id) if model_version.run_id else None
    return ModelEvidence(
        version=str(model_version.version),
        run_id=model_version.run_id,
        run_url=run_url(config.mlflow_uri, run.info.experiment_id, run.info.run_id) if run else None,
        training_metrics={
            name: value
            for name, value in version_metrics(model_name, version, config.mlflow_uri).items()
            if name in REVIEW_METRICS
        },
    )


def _window_figures(
    config: ModelOpsConfig, database_url: str, model_name: str, versions: list[str]
) -> tuple[dict[str, tuple[float, float, float]], str | None, float | None]:
    """(ks, auc, mean score) per version on the latest labelled window, the window's description, and
    the two-sample KS between the first two versions' scores (the score shift), when both scored."""
    # modelops.model.export loads TensorFlow: only a lifecycle that scores the window pays for it.
    from modelops.model.export import score_frame

    size = config.monitoring.window.size if config.monitoring.window.kind == "count" else 5000
    frame = fetch_recent_labelled_records(
        database_url, model_name, size, schema=config.database.schema_name, label_column="__label__"
    )
    labels = frame["__label__"].to_numpy() if len(frame) else np.zeros(0)
    n_events = int(labels.sum())
    if len(frame) < config.monitoring.min_sample or n_events in (0, len(frame)):
        return {}, f"not enough labelled traffic yet ({len(frame)} records, {n_events} events)", None
    figures: dict[str, tuple[float, float, float]] = {}
    scored: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="modelops-evidence-") as scratch:
        for version in versions:
            model_dir = download_serving_model(model_name, version, Path(scratch), config.mlflow_uri)
            schema = version_schema(model_name, version, config.mlflow_uri)
            scores = score_frame(model_dir, frame, schema)
            scored.append(np.asarray(scores, dtype=float))
            figures[version] = (ks_statistic(scores, labels), auc(scores, labels), float(np.mean(scores)))
    shift = two_sample_ks(scored[0], scored[1]) if len(scored) > 1 else None
    return figures, f"latest {len(frame)} labelled records of the scoring log ({n_events} events)", shift


def collect_evidence(
    config: ModelOpsConfig, model_name: str, candidate_version: str, database_url: str | None
) -> ApprovalEvidence:
    candidate = _model_evidence(config, model_name, candidate_version)
    champion_version = get_alias_version(model_name, CHAMPION, config.mlflow_uri)
    champion = (
        _model_evidence(config, model_name, champion_version)
        if champion_version and champion_version != candidate.version
        else None
    )
    window = "no scoring log configured"
    figures: dict[str, tuple[float, float, float]] = {}
    shift: float | None = None
    if database_url:
        versions = [candidate.version] + ([champion.version] if champion else [])
        try:
            figures, described, shift = _window_figures(config, database_url, model_name, versions)
            window = described or window
        except Exception as exc:  # noqa: BLE001 - evidence is best effort; the reviewer is told why
            log.warning("could not score the recent window: %s", exc)
            window = f"recent window unavailable ({type(exc).__name__}: {exc})"

    def with_window(model: ModelEvidence | None) -> ModelEvidence | None:
        if model is None or model.version not in figures:
            return model
        ks, area, mean = figures[model.version]
        return replace(model, window_ks=ks, window_auc=area, window_score_mean=mean)

    model_url = f"{config.mlflow_uri.rstrip('/')}/#/models/{model_name}"
    return ApprovalEvidence(
        candidate=with_window(candidate),  # type: ignore[arg-type]
        champion=with_window(champion),
        window=window,
        model_url=model_url if config.mlflow_uri.startswith("http") else None,
        score_shift_ks=shift,
    )
