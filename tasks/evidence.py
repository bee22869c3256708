"""MLflow + the scoring log: versions scored side by side, for a reviewer and for the retrain."""

from __future__ import annotations

from prefect import get_run_logger

from modelops.approval import ApprovalEvidence
from modelops.config import ModelOpsConfig
from modelops.data.schema import DatasetSchema
from modelops.integrations.database import DatabaseUnavailable, resolve_database_url
from modelops.pipeline import evidence
from modelops.pipeline.retraining import RetrainingSet, compare_on_holdout
from tasks.base import task


@task("collect-evidence")
def collect_evidence(config: ModelOpsConfig, model_name: str, version: str) -> ApprovalEvidence:
    """The candidate next to the champion: training figures, and both scored on the recent window."""
    try:
        database_url: str | None = resolve_database_url(config)
    except DatabaseUnavailable:
        database_url = None
    return evidence.collect_evidence(config, model_name, version, database_url)


@task("compare-on-recent-holdout")
def compare_on_recent_holdout(
    config: ModelOpsConfig,
    model_name: str,
    versions: dict[str, str],
    schema: DatasetSchema,
    dataset: RetrainingSet,
) -> dict[str, dict[str, float]]:
    """{role: {version, ks, auc, n}} for each ``role -> version`` on the retrain's recent hold-out."""
    figures = compare_on_holdout(model_name, versions, dataset.recent_holdout, schema, config.mlflow_uri)
    get_run_logger().info(
        "recent hold-out: %s",
        ", ".join(f"{role} v{int(f['version'])} KS {f['ks']:.3f}" for role, f in figures.items()),
    )
    return figures
