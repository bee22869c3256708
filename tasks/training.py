"""TensorFlow: the training data, the fit and the hold-out evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
from prefect import get_run_logger

from modelops.config import TrainingSettings
from modelops.data.schema import DatasetSchema
from modelops.model.evaluation import Evaluation
from modelops.model.evaluation import evaluate as evaluate_on_holdout
from modelops.pipeline import training
from tasks.base import task

if TYPE_CHECKING:
    from modelops.model.network import FittedModel


@task("load-training-data")
def load_training_data(
    csv: str | None, schema: DatasetSchema, rows: int, seed: int
) -> tuple[pd.DataFrame, str]:
    frame, source = training.load_training_data(csv, schema, rows, seed)
    get_run_logger().info(
        "training data: %d rows, event rate %.3f, source %s", len(frame), frame[schema.target].mean(), source
    )
    return frame, source


@task("fit-model")
def fit(train_frame: pd.DataFrame, schema: DatasetSchema, settings: TrainingSettings) -> FittedModel:
    # modelops.model.network imports TensorFlow (seconds): only the runs that fit pay for it.
    from modelops.model.network import fit_model

    log = get_run_logger()
    log.info("fitting on %d rows: %s", len(train_frame), settings.model_dump())
    fitted = fit_model(train_frame, schema, settings, progress=log.info)
    log.info("fitted in %.1f s (%d epochs)", fitted.fit_seconds, len(fitted.history.get("loss", [])))
    return fitted


@task("evaluate-model")
def evaluate(fitted: FittedModel, holdout: pd.DataFrame, threshold: float) -> Evaluation:
    evaluation = evaluate_on_holdout(fitted, holdout, threshold)
    m = evaluation.metrics
    get_run_logger().info(
        "hold-out (%d rows): KS %.3f AUC %.3f Gini %.3f accuracy %.3f log-loss %.4f",
        m.n, m.ks, m.auc, m.gini, m.accuracy, m.log_loss,
    )  # fmt: skip
    return evaluation
