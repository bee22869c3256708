"""Prebuild: resolve a registered version, download its SavedModel, prove it can serve.

Fails with a message that says which problem it met: a missing version, a broken artifact
(no SavedModel, does not load) or a wrong signature (inputs differ from the model's schema).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelops.config import ModelOpsConfig
from modelops.data.schema import DatasetSchema
from modelops.integrations.registry import RegistryError, client_for, download_serving_model, resolve_version
from modelops.pipeline.saved_model_check import SavedModelReport, check_saved_model

log = logging.getLogger(__name__)


class PrebuildError(RuntimeError):
    """The candidate cannot be built or served; the message names the version and the problem."""


@dataclass(frozen=True)
class PrebuiltModel:
    model_name: str
    version: str
    model_dir: Path  # <stack_home>/models/<name>/<version>, the TF Serving layout
    schema: DatasetSchema
    report: SavedModelReport


def version_schema(model_name: str, version: str, tracking_uri: str) -> DatasetSchema:
    """The dataset schema the version was trained with (``schema.json`` of its MLflow run)."""
    import mlflow  # heavy (seconds): loaded only by the runs that read a version's artifacts

    model_version = resolve_version(client_for(tracking_uri), model_name, version)
    try:
        text = mlflow.artifacts.load_text(f"runs:/{model_version.run_id}/schema.json")
    except Exception as exc:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        raise PrebuildError(
            f"broken artifact: version {version} of {model_name!r} has no schema.json in run "
            f"{model_version.run_id} ({type(exc).__name__}); retrain it with `modelops train`"
        ) from None
    raw = json.loads(text)
    return DatasetSchema.from_dict(
        {k: raw[k] for k in ("target", "numeric", "categorical", "separator") if k in raw}
    )


def smoke_records(schema: DatasetSchema) -> list[dict[str, Any]]:
    """A typical record, an all-missing record and one with unseen categories: all three must score."""
    typical = {name: 1.0 for name in schema.numeric} | {name: "" for name in schema.categorical}
    missing = {name: float("nan") for name in schema.numeric} | {name: "" for name in schema.categorical}
    unseen = {name: 0.0 for name in schema.numeric} | {name: "__unseen__" for name in schema.categorical}
    return [typical, missing, unseen]


def prebuild(config: ModelOpsConfig, model_name: str, version: str) -> PrebuiltModel:
    tracking_uri = config.mlflow_uri
    try:
        model_dir = download_serving_model(model_name, version, config.stack_home / "models", tracking_uri)
    except RegistryError as exc:
        raise PrebuildError(f"missing version: {exc}") from None
    schema = version_schema(model_name, version, tracking_uri)
    try:
        report = check_saved_model(model_dir, schema, smoke_records(schema))
    except RuntimeError as exc:
        raise PrebuildError(f"{model_name} version {version}: {exc}") from None
    log.info(
        "prebuild: %s v%s ok: %d inputs, smoke scores %s",
        model_name,
        version,
        len(report.inputs),
        ", ".join(f"{s:.3f}" for s in report.scores),
    )
    return PrebuiltModel(model_name, str(version), model_dir, schema, report)
