"""Everything that talks to MLflow: training runs, the Model Registry, aliases, tags, downloads.

Aliases, not stages: a new version gets ``challenger``; the lifecycle moves ``champion``.
Version tags carry the lineage: ``data_digest``, ``run_id``, ``data_source`` and whatever the
caller adds (e.g. ``retrained_from``).

For a ``sqlite:///…/mlflow.db`` or file tracking URI the artifacts go next to the database
(``…/mlartifacts``), never into the current directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from modelops.config import load_config
from modelops.data.schema import DatasetSchema

# MLflow is imported inside the functions that use it: it takes seconds to import, and every flow
# module imports this one, so a flow run reaches Running before it pays for MLflow.

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

logger = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"
PIP_REQUIREMENTS = ["tensorflow-cpu==2.21.0"]


class RegistryError(LookupError):
    """A model, version or alias the registry does not have; the message says what exists."""


@dataclass(frozen=True)
class RegisteredVersion:
    model_name: str
    version: str
    run_id: str
    model_uri: str
    experiment_id: str
    run_url: str | None


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` when set, else the environment config's MLflow."""
    return os.environ.get("MLFLOW_TRACKING_URI") or load_config().mlflow_uri


def client_for(tracking_uri: str | None = None):
    """An MlflowClient for ``tracking_uri`` (None: :func:`default_tracking_uri`), made current."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def _client(client_or_uri: Any):
    from mlflow import MlflowClient

    if isinstance(client_or_uri, MlflowClient):
        return client_or_uri
    return client_for(client_or_uri)


def local_artifact_root(tracking_uri: str) -> str | None:
    """Where runs of a database/file tracking store keep artifacts: beside the database file."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()  # 4 slashes: absolute
        return (database.parent / "mlartifacts").as_uri()
    if parsed.scheme in ("", "file"):
        return None  # a file store already keeps artifacts inside itself
    return None  # a tracking server decides (--artifacts-destination)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    import mlflow

    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(name, artifact_location=local_artifact_root(tracking_uri))
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, or None when the tracking URI is not a server (sqlite, file)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def log_and_register(
    *,
    tracking_uri: str,
    experiment: str,
    model_name: str,
    serving_module: Any,
    schema: DatasetSchema,
    params: dict[str, Any],
    metrics: dict[str, float],
    history: dict[str, list[float]],
    plots: dict[str, Path],
    artifacts: dict[str, Any],
    input_example: Any,
    data_digest: str,
    data_source: str,
    extra_tags: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> RegisteredVersion:
    """One MLflow run (params, holdout metrics, curves, the model) → a new version aliased challenger."""
    import mlflow
    import mlflow.tensorflow

    from modelops.model.export import SIGNATURE_KEY

    experiment_id = ensure_experiment(tracking_uri, experiment)
    lineage = {"data_digest": data_digest, "data_source": data_source}
    lineage.update({str(k): str(v) for k, v in (extra_tags or {}).items()})
    with mlflow.start_run(run_name=run_name, experiment_id=experiment_id) as run:
        run_id = run.info.run_id
        mlflow.set_tags({**lineage, "model_name": model_name})
        mlflow.log_params({k: _param(v) for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for key, values in history.items():
            for step, value in enumerate(values):
                mlflow.log_metric(f"epoch_{key}", float(value), step=step)
        for path in plots.values():
            mlflow.log_artifact(str(path), artifact_path="plots")
        for file_name, content in artifacts.items():
            mlflow.log_text(content if isinstance(content, str) else json.dumps(content, indent=2), file_name)
        with _quiet("mlflow.models.model"):
            # MLflow checks the example through its pyfunc wrapper, which feeds a tf.Module one
            # tensor, not named inputs, so that check always fails with a warning: silenced here;
            # the serving signature is checked by scoring raw records (tests, lifecycle prebuild).
            info = mlflow.tensorflow.log_model(
                serving_module,
                name=MODEL_ARTIFACT,
                signature=mlflow_signature(schema),
                input_example=input_example,
                pip_requirements=PIP_REQUIREMENTS,
                saved_model_kwargs={"signatures": {SIGNATURE_KEY: serving_module.__call__}},
            )
    version = mlflow.register_model(info.model_uri, model_name, tags={**lineage, "run_id": run_id})
    client = client_for(tracking_uri)
    client.set_registered_model_alias(model_name, CHALLENGER, version.version)
    return RegisteredVersion(
        model_name=model_name,
        version=str(version.version),
        run_id=run_id,
        model_uri=info.model_uri,
        experiment_id=experiment_id,
        run_url=run_url(tracking_uri, experiment_id, run_id),
    )


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    target = logging.getLogger(logger_name)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def mlflow_signature(schema: DatasetSchema):
    """The serving signature in MLflow's terms (the tensorflow flavour needs tensor specs)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs: list[ColSpec | TensorSpec] = [
        TensorSpec(np.dtype(np.float32), (-1,), name) for name in schema.numeric
    ]
    inputs += [TensorSpec(np.dtype(object), (-1,), name) for name in schema.categorical]
    return ModelSignature(
        inputs=Schema(inputs), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "score")])
    )


def _param(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return value


def resolve_version(client_or_uri: Any, model_name: str, version_or_alias: str | int):
    """A ModelVersion by number ("3") or alias ("champion"); RegistryError says what exists."""
    from mlflow.exceptions import MlflowException

    client = _client(client_or_uri)
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise RegistryError(
            f"registered model {model_name!r} does not exist in {client.tracking_uri}; "
            f"registered models: {names or 'none'} (run `modelops train` first)"
        ) from None
    key = str(version_or_alias).strip()
    try:
        if key.isdigit():
            return client.get_model_version(model_name, key)
        return client.get_model_version_by_alias(model_name, key)
    except MlflowException:
        versions = sorted(
            (int(v.version) for v in client.search_model_versions(f"name='{model_name}'")), reverse=True
        )
        aliases = dict(getattr(registered, "aliases", {}) or {})
        raise RegistryError(
            f"model {model_name!r} has no {'version' if key.isdigit() else 'alias'} {key!r}; "
            f"versions: {versions[:20] or 'none'}, aliases: {aliases or 'none'}"
        ) from None


def get_alias_version(model_name: str, alias: str, tracking_uri: str | None = None) -> str | None:
    """The version number an alias points to, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client_for(tracking_uri).get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def set_alias(model_name: str, alias: str, version: str | int, tracking_uri: str | None = None) -> None:
    resolve_version(client_for(tracking_uri), model_name, str(version))
    client_for(tracking_uri).set_registered_model_alias(model_name, alias, str(version))


def delete_alias(model_name: str, alias: str, tracking_uri: str | None = None) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client_for(tracking_uri).delete_registered_model_alias(model_name, alias)
    except MlflowException:
        pass  # already absent


def set_version_tags(
    model_name: str, version: str | int, tags: dict[str, Any], tracking_uri: str | None = None
) -> None:
    client = client_for(tracking_uri)
    resolve_version(client, model_name, str(version))
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), str(key), str(value))


def version_metrics(model_name: str, version: str | int, tracking_uri: str | None = None) -> dict[str, float]:
    """The holdout metrics (ks, auc, gini, accuracy, log_loss, …) of the run that made a version."""
    client = client_for(tracking_uri)
    model_version = resolve_version(client, model_name, str(version))
    if not model_version.run_id:
        return {}
    metrics = client.get_run(model_version.run_id).data.metrics
    return {k: float(v) for k, v in metrics.items() if not k.startswith("epoch_")}


def download_serving_model(
    model_name: str, version: str | int, dest_base: str | Path, tracking_uri: str | None = None
) -> Path:
    """Copy a version's SavedModel to ``<dest_base>/<model_name>/<version>/`` (TF Serving layout)."""
    import mlflow

    client = client_for(tracking_uri)
    model_version = resolve_version(client, model_name, str(version))
    target = Path(dest_base) / model_name / str(model_version.version)
    with tempfile.TemporaryDirectory(prefix="modelops-download-") as scratch:
        local = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{model_name}/{model_version.version}",
                dst_path=scratch,
                tracking_uri=client.tracking_uri,
            )
        )
        found = sorted(local.rglob("saved_model.pb"))
        if not found:
            raise RegistryError(
                f"version {model_version.version} of {model_name!r} holds no SavedModel "
                f"(files: {[str(p.relative_to(local)) for p in local.rglob('*')][:20]})"
            )
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(found[0].parent, target)
    logger.info("SavedModel of %s version %s copied to %s", model_name, model_version.version, target)
    return target
