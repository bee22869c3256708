"""MLflow's Model Registry: register, resolve versions and aliases, prebuild, promote, tag."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import get_run_logger

from modelops.config import ModelOpsConfig
from modelops.data.schema import DatasetSchema
from modelops.integrations.registry import (
    CHAMPION,
    RegisteredVersion,
    champions,
    client_for,
    get_alias_version,
    resolve_version,
    tracking_server_unreachable,
)
from modelops.integrations.registry import set_version_tags as set_tags
from modelops.integrations.registry import training_reference as find_training_reference
from modelops.model.evaluation import Evaluation
from modelops.pipeline import prebuild as prebuild_steps
from modelops.pipeline import retraining, rollout
from modelops.pipeline.retraining import RetrainingSet, retrain_guard
from modelops.pipeline.training import register_fitted_model
from modelops.targets import Rollout
from tasks.base import task


@task("log-and-register")
def register(fitted: Any, evaluation: Evaluation, **run: Any) -> RegisteredVersion:
    """One MLflow run and a new version of ``run["model_name"]`` with the alias ``challenger``."""
    registered = register_fitted_model(fitted, evaluation, **run)
    get_run_logger().info(
        "registered %s version %s (alias challenger), run %s",
        run["model_name"],
        registered.version,
        registered.run_id,
    )
    return registered


@task("resolve-candidate", retries=2, retry_delay_seconds=3)
def resolve_candidate(config: ModelOpsConfig, model_name: str, candidate_version: str) -> str:
    """The version number behind a number or an alias (``challenger``)."""
    return str(resolve_version(client_for(config.mlflow_uri), model_name, candidate_version).version)


@task("read-champion-alias")
def current_champion(model_name: str, tracking_uri: str) -> str | None:
    """The version the ``champion`` alias points to, or None."""
    return get_alias_version(model_name, CHAMPION, tracking_uri)


@task("list-champions", retries=2, retry_delay_seconds=3)
def list_champions(tracking_uri: str) -> dict[str, str]:
    """``{model: version}`` of every registered model with a ``champion`` alias (what ks-check watches)."""
    unreachable = tracking_server_unreachable(tracking_uri)
    if unreachable:  # MLflow's client would retry for minutes
        raise ConnectionError(f"cannot list the champions: {unreachable}")
    return champions(tracking_uri)


@task("retrain-guard")
def why_not_retrain(
    model_name: str, tracking_uri: str, triggered_version: str | None, cooldown_s: float
) -> str | None:
    """Why a retrain should not start now (a challenger awaits review, …), or None."""
    return retrain_guard(model_name, tracking_uri, triggered_version, cooldown_s)


@task("prebuild", retries=1, retry_delay_seconds=5)
def prebuild(config: ModelOpsConfig, model_name: str, version: str) -> prebuild_steps.PrebuiltModel:
    """Download the version's SavedModel and prove it serves (signature, smoke scores)."""
    return prebuild_steps.prebuild(config, model_name, version)


@task("promote-champion", retries=2, retry_delay_seconds=3)
def promote_champion(
    config: ModelOpsConfig, deployed: Rollout, reviewer: str, image_tag: str, comment: str = ""
) -> None:
    """Move ``champion`` to the healthy rollout's version (approved); the previous champion is superseded."""
    rollout.promote_champion(config, deployed, reviewer, image_tag, comment)


@task("mark-rejected")
def mark_rejected(
    config: ModelOpsConfig, model_name: str, version: str, reviewer: str, reason: str, comment: str = ""
) -> None:
    """Tag the version rejected and free the ``challenger`` alias."""
    rollout.mark_rejected(config, model_name, version, reviewer, reason, comment)


@task("find-training-reference")
def training_reference(model_name: str, version: str, tracking_uri: str) -> pd.DataFrame | None:
    """The version's training reference (features and scores) from its MLflow run, or None (logged why)."""
    log = get_run_logger()
    unreachable = tracking_server_unreachable(tracking_uri)
    if unreachable:
        log.warning("no training reference for %s v%s: %s", model_name, version, unreachable)
        return None
    try:
        reference = find_training_reference(model_name, version, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - drift is extra: the KS check goes on without it
        log.warning("no training reference for %s v%s: %s", model_name, version, exc)
        return None
    if reference is None:
        log.info(
            "%s v%s logged no training reference (trained before references were logged)", model_name, version
        )
    else:
        log.info(
            "training reference of %s v%s: %d rows from its MLflow run", model_name, version, len(reference)
        )
    return reference


@task("evaluate-against-champion")
def evaluate_against_champion(
    config: ModelOpsConfig,
    model_name: str,
    version: str,
    champion: str | None,
    schema: DatasetSchema,
    dataset: RetrainingSet,
) -> dict[str, Any] | None:
    """``mlflow.models.evaluate`` of the new version with the champion as baseline, on the recent hold-out."""
    log = get_run_logger()
    if not champion:
        log.info("no champion: the evaluation against a baseline (mlflow.models.evaluate) is skipped")
        return None
    try:
        outcome = retraining.evaluate_against_champion(config, model_name, version, champion, schema, dataset)
    except Exception as exc:  # noqa: BLE001 - a record for MLflow: the challenger still goes to review
        log.warning("mlflow.models.evaluate of v%s against champion v%s failed: %s", version, champion, exc)
        return None
    log.info("mlflow.models.evaluate of v%s against champion v%s: %s", version, champion, outcome["verdict"])
    return outcome


@task("tag-version")
def tag_version(model_name: str, version: str, tags: dict[str, Any], tracking_uri: str) -> None:
    set_tags(model_name, version, tags, tracking_uri)
