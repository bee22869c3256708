"""The real ``retrain`` flow leaves MLflow a record: data sets, evaluation against the champion, model card.

A tiny champion is registered in a sqlite MLflow; PostgreSQL's scoring log holds labelled recent
traffic as callers send it (whole numbers as JSON integers, missing values as null); the flow runs
on a real Prefect test server, without starting the review.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pytest
from support.scoring_log import insert_scores
from support.stack import TINY_TRAINING, write_config

from modelops.data.generator import generate_period
from modelops.data.schema import HMEQ_SCHEMA

pytestmark = pytest.mark.slow


def _as_sent(value: Any) -> Any:
    """A JSON value as a caller sends it: null for missing, an integer for a whole number."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def test_retrain_logs_data_sets_and_evaluates_against_the_champion(prefect_harness, scoring_db, tmp_path):
    from mlflow import MlflowClient

    from flows.retrain import retrain
    from flows.train import train
    from modelops.integrations.registry import CHAMPION, resolve_version, set_alias

    name = f"retrain-{uuid.uuid4().hex[:6]}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = write_config(
        tmp_path / "config",
        model={"name": name, "experiment": name},
        mlflow={"tracking_uri": uri},
        database={"url": scoring_db},
        training={**TINY_TRAINING, "train_rows": 1500},
        monitoring={"window": {"kind": "count", "size": 400}, "min_sample": 100},
    )
    champion = train(config=str(config))
    set_alias(name, CHAMPION, champion["version"], uri)

    recent = generate_period(3, rows=800, seed=21)
    features = [
        {k: _as_sent(v) for k, v in row.items()}
        for row in recent[list(HMEQ_SCHEMA.features)].to_dict("records")
    ]
    assert any(isinstance(f["DELINQ"], int) for f in features)
    insert_scores(
        scoring_db, name, champion["version"], [0.5] * 800, recent["BAD"].tolist(), features=features
    )

    result = retrain(model_name=name, config=str(config), start_review=False)
    version = result["version"]
    assert version == "2" and result["evaluation"]["verdict"].startswith(("passed", "failed"))

    client = MlflowClient(uri)
    run = client.get_run(result["run_id"])
    contexts = {
        {t.key: t.value for t in d.tags}["mlflow.data.context"]: json.loads(d.dataset.profile)["num_rows"]
        for d in run.inputs.dataset_inputs
    }
    assert contexts["recent_window"] == 800 and contexts["reference"] == contexts["training"] > 500
    assert "recent_holdout_ks" in run.data.metrics and "recent_holdout_auc" in run.data.metrics
    assert run.info.status == "FINISHED"
    model_version = resolve_version(uri, name, version)
    assert model_version.tags["validation_status"] == "pending"
    assert model_version.tags["evaluation_baseline_version"] == champion["version"]
    card = model_version.description
    assert f"retrained from version {champion['version']}" in card
    assert "recent hold-out, candidate: KS" in card and "recent hold-out, champion: KS" in card
    assert f"`mlflow.models.evaluate` against champion version {champion['version']}" in card
