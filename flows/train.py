"""The ``train`` flow: load data → split → fit → evaluate → log & register (alias ``challenger``).

The registered version carries its training data set and a training reference (a sample of the
training split with the model's scores), which ``ks-check`` finds for label-free drift.

``train_on_frame`` is the same recipe on a DataFrame, for the retrain flow.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
from prefect.runtime import flow_run

from flows.base import flow
from modelops.config import TrainingSettings, load_config
from modelops.data.loading import dataset_digest, validate_frame
from modelops.data.schema import HMEQ_SCHEMA, DatasetSchema
from modelops.model.evaluation import split_holdout
from tasks import events, registry, runs, training

# Prefect builds a pydantic model of the flow's parameters; the public parameter name ``schema``
# shadows a BaseModel attribute, which pydantic reports once per call. Harmless here.
warnings.filterwarnings("ignore", message='Field name "schema" in "TrainModel"', category=UserWarning)


@dataclass(frozen=True)
class TrainResult:
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    data_digest: str
    data_source: str
    run_url: str | None
    tracking_uri: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_on_frame(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    settings: TrainingSettings,
    model_name: str,
    extra_tags: dict[str, Any] | None = None,
    *,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    data_source: str = "dataframe",
    decision_threshold: float = 0.5,
) -> TrainResult:
    """Fit, evaluate on a stratified hold-out and register a new version of ``model_name``.

    Called inside a flow (``train``, ``retrain``) its steps are that flow's task runs.
    ``tracking_uri`` defaults to the environment config's MLflow.
    """
    tracking_uri = tracking_uri or load_config().mlflow_uri
    frame = validate_frame(frame, schema, source=data_source)
    digest = dataset_digest(frame)
    train_part, holdout = split_holdout(frame, schema, settings.holdout_fraction, settings.seed)
    fitted = training.fit(train_part, schema, settings)
    evaluation = training.evaluate(fitted, holdout, decision_threshold)
    registered = registry.register(
        fitted,
        evaluation,
        tracking_uri=tracking_uri,
        experiment=experiment or model_name,
        model_name=model_name,
        data_digest=digest,
        data_source=data_source,
        n_train=len(train_part),
        extra_tags=extra_tags,
        train_frame=train_part,
        seed=settings.seed,
    )
    events.emit(
        "modelops.model.registered",
        model_name,
        registered.version,
        run_id=registered.run_id,
        alias="challenger",
        ks=evaluation.metrics.ks,
        auc=evaluation.metrics.auc,
        data_source=data_source,
    )
    return TrainResult(
        model_name=model_name,
        version=registered.version,
        run_id=registered.run_id,
        metrics=evaluation.metrics.as_dict(),
        data_digest=digest,
        data_source=data_source,
        run_url=registered.run_url,
        tracking_uri=tracking_uri,
    )


def train_run_name() -> str:
    """``train-<model>``; ``-v<version>`` is added once the version is registered."""
    return f"train-{flow_run.parameters.get('model_name') or 'default-model'}"


@flow(name="train", flow_run_name=train_run_name, log_prints=True)
def train(
    csv: str | None = None,
    schema: str | None = None,
    model_name: str | None = None,
    config: str | None = None,
    extra_tags: dict[str, Any] | None = None,
    rows: int | None = None,
) -> dict[str, Any]:
    """Train on a CSV + schema YAML (or generated HMEQ-like data) and register the model.

    The model's own training settings (``models.<name>.training`` over ``training``) apply.
    """
    base = load_config(config)
    name = model_name or base.model.name
    cfg = base.for_model(name)
    runs.name_this_run(f"train-{name}", name)
    dataset_schema = DatasetSchema.from_yaml(schema) if schema else HMEQ_SCHEMA
    frame, source = training.load_training_data(
        csv, dataset_schema, rows or cfg.training.train_rows, cfg.training.seed
    )
    result = train_on_frame(
        frame,
        dataset_schema,
        cfg.training,
        name,
        extra_tags,
        tracking_uri=cfg.mlflow_uri,
        experiment=cfg.model.experiment if name == cfg.model.name else name,
        data_source=source,
        decision_threshold=cfg.model.decision_threshold,
    )
    runs.name_this_run(f"train-{name}-v{result.version}")
    return result.as_dict()
