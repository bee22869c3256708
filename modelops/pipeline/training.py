"""Training data in, registered version out: the train recipe without Prefect.

``tasks/training.py`` and ``tasks/registry.py`` wrap these as the steps the UI shows.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modelops.data.generator import generate_training
from modelops.data.loading import load_dataset
from modelops.data.schema import DatasetSchema
from modelops.integrations.registry import LoggedDataset, RegisteredVersion, log_and_register
from modelops.model.evaluation import Evaluation, save_curves

REFERENCE_ROWS = 2000  # training records (with scores) logged as the version's drift reference

if TYPE_CHECKING:
    from modelops.model.network import FittedModel


def load_training_data(
    csv: str | None, schema: DatasetSchema, rows: int, seed: int
) -> tuple[pd.DataFrame, str]:
    """(frame, data_source): the validated CSV, or ``rows`` generated HMEQ-like loans."""
    if csv:
        return load_dataset(csv, schema), str(Path(csv).resolve())
    return generate_training(rows=rows, seed=seed), f"generated:hmeq(rows={rows},seed={seed})"


def register_fitted_model(
    fitted: FittedModel,
    evaluation: Evaluation,
    *,
    tracking_uri: str,
    experiment: str,
    model_name: str,
    data_digest: str,
    data_source: str,
    n_train: int,
    extra_tags: dict[str, Any] | None,
    train_frame: pd.DataFrame | None = None,
    reference_rows: int = REFERENCE_ROWS,
    seed: int = 42,
) -> RegisteredVersion:
    """One MLflow run with the parameters, hold-out metrics, curves, data sets and the model; a new version.

    ``train_frame`` (the training split) is logged as the run's training data set, and a sample of
    ``reference_rows`` of it with the model's scores as the training reference of the version.
    """
    # The serving module is a tf.Module: importing it loads TensorFlow, which only this step needs.
    from modelops.model.export import serving_module

    schema = fitted.schema
    params = {
        **fitted.settings.model_dump(),
        "epochs_run": len(fitted.history.get("loss", [])),
        "n_train": n_train,
        "n_holdout": evaluation.metrics.n,
        "target": schema.target,
        "numeric": schema.numeric,
        "categorical": schema.categorical,
        "input_width": fitted.spec.width,
    }
    metrics = {**evaluation.metrics.as_dict(), "fit_seconds": fitted.fit_seconds}
    with tempfile.TemporaryDirectory(prefix="modelops-plots-") as folder:
        return log_and_register(
            tracking_uri=tracking_uri,
            experiment=experiment,
            model_name=model_name,
            serving_module=serving_module(fitted),
            schema=schema,
            params=params,
            metrics=metrics,
            history=fitted.history,
            plots=save_curves(evaluation, folder),
            artifacts={"schema.json": schema.to_dict(), "preprocessing.json": fitted.spec.to_dict()},
            input_example=input_example(fitted),
            data_digest=data_digest,
            data_source=data_source,
            extra_tags=extra_tags,
            datasets=training_datasets(train_frame, schema, data_source),
            reference=None
            if train_frame is None
            else reference_sample(fitted, train_frame, reference_rows, seed),
        )


def input_example(fitted: FittedModel) -> pd.DataFrame:
    """Raw records as a caller sends them: one typical, one with every value missing, one unseen category."""
    # modelops.model.pyfunc imports MLflow: only the registration step needs it.
    from modelops.model.pyfunc import example_frame

    typical: dict[str, Any] = {}
    for spec in fitted.spec.numeric:
        typical[spec.name] = round(math.expm1(spec.mean) if spec.log else spec.mean, 4)
    for category in fitted.spec.categorical:
        known = [v for v in category.vocabulary if v]
        typical[category.name] = known[0] if known else ""
    return example_frame(typical, fitted.schema)


def reference_sample(fitted: FittedModel, train_frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Up to ``rows`` records of the training split: their features and the model's ``score``.

    ``modelops ks-check`` compares the live window with it (score KS, PSI per feature).
    """
    sample = train_frame.sample(n=min(rows, len(train_frame)), random_state=seed)
    reference = sample[list(fitted.schema.features)].reset_index(drop=True)
    reference["score"] = np.asarray(fitted.score(reference), dtype=float)
    return reference


def training_datasets(
    train_frame: pd.DataFrame | None, schema: DatasetSchema, data_source: str
) -> list[LoggedDataset]:
    """The training split as an MLflow data set (``log_input``, context ``training``)."""
    if train_frame is None:
        return []
    frame = train_frame[[*schema.features, schema.target]].reset_index(drop=True)
    return [
        LoggedDataset(
            frame, "training", "training", targets=schema.target, tags={"source": data_source[:250]}
        )
    ]
