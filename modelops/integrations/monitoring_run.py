"""MLflow as the record of a model's monitoring: one run per model keeps every KS check's figures.

The run lives in the experiment ``<model>-monitoring`` and is found again by its tag
``modelops.monitoring_of=<model>``, so each check adds to the same run: metrics (``ks``, ``auc``,
``score_ks``, ``psi.<feature>``, step = the check's id) and the check's PNGs under
``ks-checks/<check id>/``. A tracking *server* serves those PNGs at ``/get-artifact``, which is the
URL the Prefect artifact embeds; it answers 200 with ``image/png`` (``/ajax-api/2.0/mlflow/get-artifact``
answers 404 on MLflow 3.17).

Also here: the registry's record of retrains (versions carrying the retrain lineage tags), drawn on
the KS history. MLflow is imported inside the functions (seconds to import); probe a server with
:func:`modelops.integrations.registry.tracking_server_unreachable` first (the client retries a dead
one for minutes).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from modelops.integrations.registry import client_for, local_artifact_root, run_url

MONITORING_TAG = "modelops.monitoring_of"
RETRAIN_TAG = "retrained_from"  # set on every version a retrain registers (modelops.pipeline.retraining)


@dataclass(frozen=True)
class MonitoringRun:
    run_id: str
    experiment_id: str
    url: str | None  # the run in the MLflow UI (None for a database/file tracking URI)


@dataclass(frozen=True)
class RetrainedVersion:
    version: str
    registered_at: datetime
    retrained_from: str


def experiment_name(model_name: str) -> str:
    return f"{model_name}-monitoring"


def monitoring_run(tracking_uri: str, model_name: str) -> MonitoringRun:
    """The model's monitoring run, created (with its experiment) the first time."""
    client = client_for(tracking_uri)
    name = experiment_name(model_name)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(
            name, artifact_location=local_artifact_root(tracking_uri), tags={MONITORING_TAG: model_name}
        )
    else:
        experiment_id = experiment.experiment_id
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{MONITORING_TAG}` = '{_quoted(model_name)}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if runs:
        run_id = runs[0].info.run_id
    else:
        run = client.create_run(experiment_id, run_name=name, tags={MONITORING_TAG: model_name})
        run_id = run.info.run_id
        client.set_terminated(run_id)  # a record, not a job: it stays FINISHED and keeps growing
    return MonitoringRun(run_id, experiment_id, run_url(tracking_uri, experiment_id, run_id))


def log_png(tracking_uri: str, run_id: str, artifact_path: str, png: bytes) -> None:
    """Store ``png`` in the run at ``artifact_path`` (``folder/name.png``)."""
    folder, _, filename = artifact_path.rpartition("/")
    with tempfile.TemporaryDirectory(prefix="modelops-chart-") as scratch:
        local = Path(scratch) / filename
        local.write_bytes(png)
        client_for(tracking_uri).log_artifact(run_id, str(local), artifact_path=folder or None)


def log_check_metrics(tracking_uri: str, run_id: str, step: int, figures: dict[str, float | None]) -> None:
    """One value per figure at ``step`` (the check's id): MLflow's own charts of the same history."""
    from mlflow.entities import Metric

    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [Metric(key, float(value), now, step) for key, value in figures.items() if value is not None]
    if metrics:
        client_for(tracking_uri).log_batch(run_id, metrics=metrics)


def artifact_image_url(tracking_uri: str, run_id: str, artifact_path: str) -> str | None:
    """The URL a browser loads the stored PNG from (the server's ``/get-artifact``); None without a server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/get-artifact?path={quote(artifact_path)}&run_uuid={run_id}"


def retrained_versions(tracking_uri: str, model_name: str) -> list[RetrainedVersion]:
    """Versions a retrain registered (they carry ``retrained_from``), oldest first."""
    client = client_for(tracking_uri)
    found = [
        RetrainedVersion(
            version=str(v.version),
            registered_at=datetime.fromtimestamp(v.creation_timestamp / 1000, tz=UTC),
            retrained_from=str((v.tags or {}).get(RETRAIN_TAG, "")),
        )
        for v in client.search_model_versions(f"name = '{_quoted(model_name)}'")
        if RETRAIN_TAG in (v.tags or {})
    ]
    return sorted(found, key=lambda v: v.registered_at)


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")
