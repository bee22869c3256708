"""Prefect tasks around the model library: load data, fit, evaluate, log & register.

Tasks pass DataFrames and models in memory: no result persistence and no input-hash caching
(hashing a model or a large frame costs more than it saves).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from modelops.config import TrainingSettings
from modelops.data.schema import DatasetSchema

_TASK = {"cache_policy": NO_CACHE, "persist_result": False}


@task(name="load-training-data", **_TASK)
def load_training_data(
    csv: str | None, schema: DatasetSchema, rows: int, seed: int
) -> tuple[pd.DataFrame, str]:
    """(frame, data_source): the validated CSV, or ``rows`` generated HMEQ-like loans."""
    logger = get_run_logger()
    if csv:
        from modelops.data.loading import load_dataset

        frame = load_dataset(csv, schema)
        source = str(Path(csv).resolve())
    else:
        from modelops.data.generator import generate_training

        frame = generate_training(rows=rows, seed=seed)
        source = f"generated:hmeq(rows={rows},seed={seed})"
    logger.info(
        "training data: %d rows, event rate %.3f, source %s", len(frame), frame[schema.target].mean(), source
    )
    return frame, source


@task(name="fit-model", **_TASK)
def fit(train_frame: pd.DataFrame, schema: DatasetSchema, settings: TrainingSettings):
    from modelops.model.network import fit_model

    logger = get_run_logger()
    logger.info("fitting on %d rows: %s", len(train_frame), settings.model_dump())
    fitted = fit_model(train_frame, schema, settings, progress=logger.info)
    logger.info("fitted in %.1f s (%d epochs)", fitted.fit_seconds, len(fitted.history.get("loss", [])))
    return fitted


@task(name="evaluate-model", **_TASK)
def evaluate(fitted: Any, holdout: pd.DataFrame, threshold: float):
    from modelops.model.evaluation import evaluate as evaluate_holdout

    evaluation = evaluate_holdout(fitted, holdout, threshold)
    m = evaluation.metrics
    get_run_logger().info(
        "hold-out (%d rows): KS %.3f AUC %.3f Gini %.3f accuracy %.3f log-loss %.4f",
        m.n, m.ks, m.auc, m.gini, m.accuracy, m.log_loss,
    )  # fmt: skip
    return evaluation


@task(name="log-and-register", **_TASK)
def register(
    fitted: Any,
    evaluation: Any,
    *,
    tracking_uri: str,
    experiment: str,
    model_name: str,
    data_digest: str,
    data_source: str,
    n_train: int,
    extra_tags: dict[str, Any] | None,
):
    from modelops.model.evaluation import save_curves
    from modelops.model.export import serving_module
    from modelops.integrations.registry import log_and_register

    logger = get_run_logger()
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
    metrics = {k: v for k, v in evaluation.metrics.as_dict().items()}
    metrics["fit_seconds"] = fitted.fit_seconds
    example = _input_example(schema, fitted)
    with tempfile.TemporaryDirectory(prefix="modelops-plots-") as folder:
        plots = save_curves(evaluation, folder)
        registered = log_and_register(
            tracking_uri=tracking_uri,
            experiment=experiment,
            model_name=model_name,
            serving_module=serving_module(fitted),
            schema=schema,
            params=params,
            metrics=metrics,
            history=fitted.history,
            plots=plots,
            artifacts={"schema.json": schema.to_dict(), "preprocessing.json": fitted.spec.to_dict()},
            input_example=example,
            data_digest=data_digest,
            data_source=data_source,
            extra_tags=extra_tags,
        )
    logger.info(
        "registered %s version %s (alias challenger), run %s",
        model_name,
        registered.version,
        registered.run_id,
    )
    from modelops.integrations.events import emit_model_event

    emit_model_event(
        "modelops.model.registered",
        model_name,
        registered.version,
        run_id=registered.run_id,
        alias="challenger",
        ks=evaluation.metrics.ks,
        auc=evaluation.metrics.auc,
        data_source=data_source,
    )
    return registered


def _input_example(schema: DatasetSchema, fitted: Any) -> dict[str, Any]:
    """Two raw records in the signature's wire format: one typical, one with every field missing."""
    import numpy as np

    example: dict[str, Any] = {}
    for spec in fitted.spec.numeric:
        typical = _expm1(spec.mean) if spec.log else spec.mean
        example[spec.name] = np.array([round(typical, 4), np.nan], dtype=np.float32)
    for spec in fitted.spec.categorical:
        known = [v for v in spec.vocabulary if v]
        example[spec.name] = np.array([known[0] if known else "", ""], dtype=object)
    return example


def _expm1(value: float) -> float:
    import math

    return math.expm1(value)
