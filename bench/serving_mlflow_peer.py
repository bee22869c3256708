"""The peer for the serving benchmark: the registered model behind MLflow's own model server.

The benchmark's SavedModel is registered as the train flow registers every version
(:func:`modelops.integrations.registry.log_serving_model`: MLflow's ``python_function`` model
around the SavedModel, its input example checked through MLflow's serving path) in a throwaway
sqlite registry, aliased ``champion``. ``mlflow models serve`` then serves the files of
``models:/hmeq-risk@champion``, downloaded from that registry (what ``-m models:/…`` downloads
itself): no wrapper of the benchmark's own.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import mlflow

from modelops.data.schema import HMEQ_SCHEMA
from modelops.integrations.registry import (
    CHAMPION,
    default_example,
    ensure_experiment,
    log_serving_model,
    register_logged_model,
    set_alias,
)

MODEL = "hmeq-risk"


def register_peer_model(saved_model_dir: Path, tracking_uri: str) -> str:
    """Register the SavedModel in ``tracking_uri`` as ``MODEL`` (alias champion); its ``models:/`` URI."""
    experiment_id = ensure_experiment(tracking_uri, "serving-benchmark")
    with (
        tempfile.TemporaryDirectory(prefix="bench-peer-") as scratch,
        mlflow.start_run(run_name="serving benchmark peer", experiment_id=experiment_id) as run,
    ):
        info = log_serving_model(saved_model_dir, HMEQ_SCHEMA, default_example(HMEQ_SCHEMA), Path(scratch))
    version = register_logged_model(
        info.model_uri, MODEL, {"data_source": "serving benchmark", "run_id": run.info.run_id}, tracking_uri
    )
    set_alias(MODEL, CHAMPION, version, tracking_uri)
    return f"models:/{MODEL}@{CHAMPION}"


def save_peer_model(saved_model_dir: Path, destination: Path) -> Path:
    """The registered champion's model files, downloaded into ``destination`` (for ``-m``)."""
    registry = destination.parent / f"{destination.name}-registry"
    shutil.rmtree(registry, ignore_errors=True)
    registry.mkdir(parents=True)
    tracking_uri = f"sqlite:///{registry.resolve()}/mlflow.db"
    model_uri = register_peer_model(saved_model_dir, tracking_uri)
    destination.mkdir(parents=True, exist_ok=True)
    local = Path(
        mlflow.artifacts.download_artifacts(model_uri, dst_path=str(destination), tracking_uri=tracking_uri)
    )
    if local.resolve() != destination.resolve():  # MLflow put the model in a sub-folder: lift it
        for item in local.iterdir():
            shutil.move(str(item), destination / item.name)
        local.rmdir()
    if not (destination / "MLmodel").is_file():
        raise RuntimeError(f"{model_uri} downloaded without an MLmodel file into {destination}")
    return destination
