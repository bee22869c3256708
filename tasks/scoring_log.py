"""PostgreSQL's scoring log: labelled windows, KS checks, drift, the approvals audit, retraining data."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from modelops.approval import ApprovalDecision, ApprovalEvidence
from modelops.config import ModelOpsConfig
from modelops.data.schema import DatasetSchema
from modelops.integrations import performance_store
from modelops.integrations.database import DatabaseUnavailable, resolve_database_url
from modelops.monitoring.drift import DriftReport, drift_against_reference
from modelops.monitoring.ks_decision import KsDecision
from modelops.pipeline.retraining import RetrainingSet, retraining_data
from tasks.base import task


@task("read-labelled-window")
def read_labelled_window(
    dsn: str, model_name: str, version: str, config: ModelOpsConfig
) -> performance_store.LabelledWindow:
    """Scores and true labels of the version's latest window (``monitoring.window``)."""
    return performance_store.read_labelled_window(
        dsn, model_name, version, config.monitoring.window, schema=config.database.schema_name
    )


@task("score-drift")
def measure_drift(
    dsn: str, model_name: str, version: str, reference: Any, config: ModelOpsConfig
) -> DriftReport:
    """Score KS and PSI per feature of the window against the training reference."""
    return drift_against_reference(dsn, model_name, version, reference, config)


@task("store-ks-check")
def store_ks_check(
    dsn: str,
    model_name: str,
    version: str,
    decision: KsDecision,
    window: performance_store.LabelledWindow,
    details: dict[str, Any],
    config: ModelOpsConfig,
) -> int:
    """The id of the new ``ks_checks`` row (the trend the report draws)."""
    return performance_store.store_ks_check(
        dsn,
        model_name=model_name,
        model_version=version,
        status=decision.status,
        ks=decision.ks,
        auc=decision.auc,
        threshold=decision.threshold,
        n=decision.n,
        n_events=decision.n_events,
        window_start=window.start,
        window_end=window.end,
        details=details,
        schema=config.database.schema_name,
    )


@task("read-ks-trend")
def read_ks_trend(dsn: str, model_name: str, length: int, config: ModelOpsConfig) -> list[dict[str, Any]]:
    """The latest ``length`` KS checks of the model, oldest first."""
    return performance_store.read_recent_checks(dsn, model_name, length, schema=config.database.schema_name)


@task("record-decision")
def record_decision(config: ModelOpsConfig, decision: ApprovalDecision, evidence: ApprovalEvidence) -> None:
    """The approvals audit row; a database that is down is logged, never fails the lifecycle."""
    try:
        performance_store.record_approval(
            resolve_database_url(config), decision, evidence, schema=config.database.schema_name
        )
    except DatabaseUnavailable as exc:
        get_run_logger().warning("approval not written to the audit table: %s", exc)


@task("extract-retraining-data")
def extract_retraining_data(
    config: ModelOpsConfig, model_name: str, reference_version: str
) -> tuple[DatasetSchema, RetrainingSet]:
    """Recent labelled traffic plus a share of the reference version's training data (README policy)."""
    schema, dataset = retraining_data(config, model_name, reference_version)
    get_run_logger().info(
        "retraining set: %d recent + %d reference records; %s",
        dataset.n_recent,
        dataset.n_reference,
        dataset.window,
    )
    return schema, dataset
