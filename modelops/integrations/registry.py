"""Everything that talks to MLflow: training runs, the Model Registry, aliases, tags, downloads.

Aliases, not stages: a new version gets ``challenger``; the lifecycle moves ``champion``.
Version tags carry the lineage: ``data_digest``, ``run_id``, ``data_source`` and whatever the
caller adds (e.g. ``retrained_from``), and ``validation_status`` (pending, approved, rejected,
superseded). The version's description is its model card (:mod:`modelops.model.card`),
re-rendered whenever its tags change.

A version's model is MLflow's ``python_function`` around the TF Serving SavedModel
(``mlflow.pyfunc.load_model`` and ``mlflow models serve`` work; :func:`download_serving_model`
lays the SavedModel out for TF Serving); its run also holds the training data set and the
training reference (``reference/reference.parquet``: features and scores) for label-free drift.

For a ``sqlite:///…/mlflow.db`` or file tracking URI the artifacts go next to the database
(``…/mlartifacts``), never into the current directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from modelops.config import load_config
from modelops.data.schema import DatasetSchema
from modelops.model.card import render_model_card
from modelops.model.metrics import auc, ks_statistic

# MLflow is imported inside the functions that use it: it takes seconds to import, and every flow
# module imports this one, so a flow run reaches Running before it pays for MLflow.

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

logger = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_ARTIFACT = "model"
REFERENCE_ARTIFACT = "reference/reference.parquet"  # run artifact: training features + scores
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


@dataclass(frozen=True)
class LoggedDataset:
    """A data set logged on a run with ``mlflow.log_input`` (``context``: training, reference, …)."""

    frame: pd.DataFrame
    name: str
    context: str
    targets: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def log_dataset(dataset: LoggedDataset) -> None:
    """``mlflow.log_input`` of ``dataset`` into the active run (digest, schema and row count in MLflow)."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    with _no_integer_column_hint():
        data = from_pandas(dataset.frame, name=dataset.name, targets=dataset.targets)
        mlflow.log_input(data, context=dataset.context, tags=dataset.tags or None)


@contextmanager
def _no_integer_column_hint() -> Iterator[None]:
    """Without MLflow's hint that integer columns cannot hold missing values when it profiles a data
    set (the 0/1 target is one): the hint is about model signatures, which come from the input example."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Hint: Inferred schema contains integer", category=UserWarning
        )
        yield


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
    input_example: pd.DataFrame | None,
    data_digest: str,
    data_source: str,
    extra_tags: dict[str, Any] | None = None,
    run_name: str | None = None,
    datasets: Sequence[LoggedDataset] = (),
    reference: pd.DataFrame | None = None,
) -> RegisteredVersion:
    """One MLflow run (params, metrics, curves, data sets, the model) → a new version, alias challenger.

    The model is MLflow's ``python_function`` around the serving SavedModel
    (:mod:`modelops.model.pyfunc`); its input example (raw records with missing values and unseen
    categories, default :func:`default_example`) must score through MLflow's serving path exactly
    as the SavedModel scores it, or nothing is registered. ``reference``: features and scores of a
    sample of the training split, logged as ``reference/reference.parquet`` (label-free drift).
    """
    import mlflow

    # modelops.model.export loads TensorFlow: only the registration step needs it.
    from modelops.model.export import save_serving_module

    experiment_id = ensure_experiment(tracking_uri, experiment)
    lineage = {"data_digest": data_digest, "data_source": data_source}
    lineage.update({str(k): str(v) for k, v in (extra_tags or {}).items()})
    example = input_example if input_example is not None else default_example(schema)
    version_tags = {**lineage, "validation_status": "pending"}
    with (
        tempfile.TemporaryDirectory(prefix="modelops-register-") as scratch,
        mlflow.start_run(run_name=run_name, experiment_id=experiment_id) as run,
    ):
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
        for dataset in datasets:
            log_dataset(dataset)
        if reference is not None:
            version_tags |= log_reference(reference, Path(scratch))
        saved_model = save_serving_module(serving_module, Path(scratch) / "saved_model")
        info = log_serving_model(saved_model, schema, example, Path(scratch))
    version = register_logged_model(
        info.model_uri, model_name, {**version_tags, "run_id": run_id}, tracking_uri
    )
    return RegisteredVersion(
        model_name=model_name,
        version=version,
        run_id=run_id,
        model_uri=info.model_uri,
        experiment_id=experiment_id,
        run_url=run_url(tracking_uri, experiment_id, run_id),
    )


def log_serving_model(saved_model: Path, schema: DatasetSchema, example: pd.DataFrame, scratch: Path) -> Any:
    """Log the SavedModel as the active run's MLflow model (``python_function``); MLflow's ModelInfo.

    Its input example must score through MLflow's serving path as the SavedModel scores it
    (:func:`check_example_serves`), or this raises and nothing is registered.
    """
    # modelops.model.pyfunc imports MLflow: only the registration step needs it.
    from modelops.model.pyfunc import log_pyfunc_model

    info = log_pyfunc_model(
        saved_model,
        name=MODEL_ARTIFACT,
        input_example=example,
        schema=schema,
        pip_requirements=PIP_REQUIREMENTS,
    )
    check_example_serves(info.model_uri, example, saved_model, schema, scratch)
    return info


def register_logged_model(model_uri: str, model_name: str, tags: dict[str, str], tracking_uri: str) -> str:
    """A new version of ``model_name`` from a logged model, aliased ``challenger``, with its model card."""
    import mlflow

    version = mlflow.register_model(model_uri, model_name, tags=tags)
    client_for(tracking_uri).set_registered_model_alias(model_name, CHALLENGER, version.version)
    refresh_model_card(model_name, version.version, tracking_uri)
    return str(version.version)


def default_example(schema: DatasetSchema) -> pd.DataFrame:
    """An input example from the schema alone (typical values unknown): ones and empty categories."""
    from modelops.model.pyfunc import example_frame  # imports MLflow

    typical: dict[str, Any] = {name: 1.0 for name in schema.numeric} | {
        name: "" for name in schema.categorical
    }
    return example_frame(typical, schema)


def log_reference(reference: pd.DataFrame, scratch: Path) -> dict[str, str]:
    """Log the training reference as an artifact and a data set of the active run; its version tags."""
    import mlflow

    path = scratch / REFERENCE_ARTIFACT.rpartition("/")[2]
    reference.to_parquet(path, index=False)
    mlflow.log_artifact(str(path), artifact_path=REFERENCE_ARTIFACT.rpartition("/")[0])
    log_dataset(LoggedDataset(reference, "reference", "reference", tags={"artifact": REFERENCE_ARTIFACT}))
    return {"reference_artifact": REFERENCE_ARTIFACT, "reference_rows": str(len(reference))}


def check_example_serves(
    model_uri: str, example: pd.DataFrame, saved_model: Path, schema: DatasetSchema, scratch: Path
) -> None:
    """Score the input example through MLflow's serving path; it must equal the SavedModel's scores.

    ``mlflow.models.predict`` (local environment) sends the example as a serving request would:
    JSON with missing values, parsed and checked against the signature, then the model's predict.
    """
    import mlflow.models

    from modelops.model.export import score_frame  # TensorFlow: loaded already by this step

    output = scratch / "example-scores.json"
    mlflow.models.predict(
        model_uri=model_uri, input_data=example, env_manager="local", output_path=str(output)
    )
    served = np.asarray(json.loads(output.read_text())["predictions"], dtype=float)
    expected = score_frame(saved_model, example, schema)
    if served.shape != expected.shape or not np.allclose(served, expected, rtol=0, atol=1e-6):
        raise RegistryError(
            f"the logged model {model_uri} scores its input example {served.tolist()} through MLflow's "
            f"serving path, but the SavedModel scores it {expected.tolist()}: not registered"
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


def champions(tracking_uri: str | None = None) -> dict[str, str]:
    """``{model name: version}`` of every registered model whose ``champion`` alias is set, by name."""
    client = client_for(tracking_uri)
    found: dict[str, str] = {}
    page_token = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=page_token)
        for model in page:
            version = dict(getattr(model, "aliases", None) or {}).get(CHAMPION)
            if version is not None:
                found[model.name] = str(version)
        page_token = page.token
        if not page_token:
            return dict(sorted(found.items()))


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
    """Set version tags, then re-render the version's model card from them."""
    client = client_for(tracking_uri)
    resolve_version(client, model_name, str(version))
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), str(key), str(value))
    refresh_model_card(model_name, version, tracking_uri)


def refresh_model_card(model_name: str, version: str | int, tracking_uri: str | None = None) -> str:
    """Re-render the version's description (its model card) from its tags, aliases and run; returns it."""
    from mlflow.exceptions import MlflowException

    client = client_for(tracking_uri)
    model_version = resolve_version(client, model_name, str(version))
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    if model_version.run_id:
        try:
            data = client.get_run(model_version.run_id).data
        except MlflowException:
            logger.warning(
                "run %s of %s v%s is gone: card without its figures",
                model_version.run_id,
                model_name,
                version,
            )
        else:
            metrics = {k: float(v) for k, v in data.metrics.items() if not k.startswith("epoch_")}
            params = dict(data.params)
    card = render_model_card(
        model_name,
        str(model_version.version),
        dict(model_version.tags or {}),
        metrics,
        params,
        list(getattr(model_version, "aliases", None) or []),
    )
    client.update_model_version(model_name, str(model_version.version), description=card)
    return card


def tracking_server_unreachable(tracking_uri: str, timeout_s: float = 2.0) -> str | None:
    """Why an HTTP tracking server is unreachable now (MLflow's client would retry for minutes), or None."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"MLflow at {tracking_uri} is not reachable ({exc})"


def training_reference(
    model_name: str, version: str | int, tracking_uri: str | None = None
) -> pd.DataFrame | None:
    """The training reference logged with the version (features and scores), or None when it has none."""
    import mlflow

    client = client_for(tracking_uri)
    model_version = resolve_version(client, model_name, str(version))
    artifact = (model_version.tags or {}).get("reference_artifact")
    if not artifact or not model_version.run_id:
        return None
    with tempfile.TemporaryDirectory(prefix="modelops-reference-") as scratch:
        local = mlflow.artifacts.download_artifacts(
            run_id=model_version.run_id,
            artifact_path=artifact,
            dst_path=scratch,
            tracking_uri=client.tracking_uri,
        )
        return pd.read_parquet(local)


EVALUATION_PREFIX = "recent_holdout_"


def evaluate_against_baseline(
    model_name: str,
    candidate_version: str,
    baseline_version: str,
    data: pd.DataFrame,
    target: str,
    tracking_uri: str | None = None,
    datasets: Sequence[LoggedDataset] = (),
) -> dict[str, Any]:
    """``mlflow.models.evaluate`` of the candidate, the baseline evaluated beside it, on the candidate's run.

    Both registered versions are loaded by MLflow (``models:/<name>/<version>``) and score ``data``
    (raw records and the ``target`` column). The candidate's figures (``recent_holdout_ks``,
    ``recent_holdout_auc``) and evaluation table go to its run, the baseline's to a nested run
    "baseline: version N"; ``mlflow.validate_evaluation_results`` then says whether the candidate
    beats the baseline on both. Returns {candidate, baseline, passed, verdict}.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import MetricThreshold, make_metric

    client = client_for(tracking_uri)
    candidate = resolve_version(client, model_name, candidate_version)
    baseline = resolve_version(client, model_name, baseline_version)
    extra_metrics = [
        make_metric(eval_fn=_ks_metric, greater_is_better=True, name="ks"),
        make_metric(eval_fn=_auc_metric, greater_is_better=True, name="auc"),
    ]
    settings: dict[str, Any] = {
        "data": data,
        "targets": target,
        "extra_metrics": extra_metrics,
        "evaluator_config": {"metric_prefix": EVALUATION_PREFIX},
    }
    # Not a `with` block: a failed evaluation must not mark the (successful) training run FAILED.
    mlflow.start_run(run_id=candidate.run_id)
    try:
        with _no_integer_column_hint():
            for dataset in datasets:
                log_dataset(dataset)
            candidate_result = mlflow.models.evaluate(
                model=f"models:/{model_name}/{candidate.version}", **settings
            )
            with mlflow.start_run(run_name=f"baseline: {model_name} version {baseline.version}", nested=True):
                mlflow.set_tags({"model_name": model_name, "baseline_version": str(baseline.version)})
                baseline_result = mlflow.models.evaluate(
                    model=f"models:/{model_name}/{baseline.version}", **settings
                )
            thresholds = {
                f"{EVALUATION_PREFIX}{name}": MetricThreshold(
                    min_absolute_change=1e-9, greater_is_better=True
                )
                for name in ("ks", "auc")
            }
            try:
                mlflow.validate_evaluation_results(thresholds, candidate_result, baseline_result)
                passed = True
            except MlflowException as exc:
                passed = False
                logger.info(
                    "candidate v%s against baseline v%s: %s", candidate.version, baseline.version, exc.message
                )
            mine, theirs = candidate_result.metrics, baseline_result.metrics
            figures = ", ".join(
                f"{name.upper()} {mine[key]:.4f} vs {theirs[key]:.4f}"
                for name in ("ks", "auc")
                if (key := f"{EVALUATION_PREFIX}{name}") in mine and key in theirs
            )
            outcome = "passed" if passed else "failed"
            verdict = f"{outcome}: {figures} on {len(data)} recent records (must beat the baseline on both)"
            mlflow.set_tags(
                {"evaluation_vs_champion": verdict, "evaluation_baseline_version": str(baseline.version)}
            )
    finally:
        mlflow.end_run()
    return {
        "candidate": {k: float(v) for k, v in candidate_result.metrics.items()},
        "baseline": {k: float(v) for k, v in baseline_result.metrics.items()},
        "passed": passed,
        "verdict": verdict,
    }


def _ks_metric(predictions: pd.Series, targets: pd.Series) -> float:
    labels = np.asarray(targets, dtype=int)
    if len(np.unique(labels)) < 2:  # MLflow tries each metric on the first row alone
        return float("nan")
    return ks_statistic(np.asarray(predictions, dtype=float), labels)


def _auc_metric(predictions: pd.Series, targets: pd.Series) -> float:
    labels = np.asarray(targets, dtype=int)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return auc(np.asarray(predictions, dtype=float), labels)


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
