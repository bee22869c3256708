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
from modelops.integrations.registry import RegisteredVersion, log_and_register
from modelops.model.evaluation import Evaluation, save_curves

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
) -> RegisteredVersion:
    """One MLflow run with the parameters, hold-out metrics, curves and the model; a new version."""
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
        )


def input_example(fitted: FittedModel) -> dict[str, Any]:
    """Two raw records in the signature's wire format: one typical, one with every field missing."""
    example: dict[str, Any] = {}
    for spec in fitted.spec.numeric:
        typical = math.expm1(spec.mean) if spec.log else spec.mean
        example[spec.name] = np.array([round(typical, 4), np.nan], dtype=np.float32)
    for category in fitted.spec.categorical:
        known = [v for v in category.vocabulary if v]
        example[category.name] = np.array([known[0] if known else "", ""], dtype=object)
    return example
