"""``ks-check`` finds the training reference from the registry: no ``reference`` argument needed.

A real (tiny) model is trained and registered in a sqlite MLflow with its training reference; the
scoring log in PostgreSQL holds a window of its scores and inputs; the flow runs on a real Prefect
test server.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.scoring_log import insert_scores
from support.stack import TINY_TRAINING

from modelops.config import ModelOpsConfig, TrainingSettings
from modelops.data.generator import generate_period, generate_training
from modelops.data.schema import HMEQ_SCHEMA

pytestmark = pytest.mark.slow

REFERENCE_ROWS = 400


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> dict[str, Any]:
    """A registered model whose version 1 (with a training reference) is the champion."""
    from modelops.integrations.registry import CHAMPION, set_alias
    from modelops.model.evaluation import evaluate, split_holdout
    from modelops.model.network import fit_model
    from modelops.pipeline.training import register_fitted_model

    folder: Path = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    name = f"ks-ref-{uuid.uuid4().hex[:6]}"
    frame = generate_training(rows=1600, seed=3)
    train, holdout = split_holdout(frame, HMEQ_SCHEMA, 0.25, 3)
    settings = {k: v for k, v in TINY_TRAINING.items() if k != "train_rows"}
    fitted = fit_model(train, HMEQ_SCHEMA, TrainingSettings(**settings), progress=None)
    registered = register_fitted_model(
        fitted,
        evaluate(fitted, holdout),
        tracking_uri=uri,
        experiment=name,
        model_name=name,
        data_digest="0" * 64,
        data_source="generated:hmeq(rows=1600,seed=3)",
        n_train=len(train),
        extra_tags=None,
        train_frame=train,
        reference_rows=REFERENCE_ROWS,
    )
    set_alias(name, CHAMPION, registered.version, uri)
    recent = generate_period(3, rows=600, seed=8)  # drifted traffic, scored by the champion
    scores = fitted.score(recent)
    features = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in recent[list(HMEQ_SCHEMA.features)].to_dict(orient="records")
    ]
    return {"uri": uri, "name": name, "version": registered.version, "scores": scores,
            "labels": recent["BAD"].to_numpy(), "features": features}  # fmt: skip


def _config(dsn: str, uri: str) -> ModelOpsConfig:
    monitoring = {"ks_threshold": 0.1, "min_sample": 100, "window": {"kind": "count", "size": 500}}
    return ModelOpsConfig(database={"url": dsn}, mlflow={"tracking_uri": uri}, monitoring=monitoring)


def _latest_markdown(key: str) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return max(artifacts, key=lambda a: a.created).data


def test_ks_check_finds_the_champions_training_reference(prefect_harness, scoring_db, champion):
    from flows.ks_check import ks_check

    name, version = champion["name"], champion["version"]
    insert_scores(
        scoring_db, name, version, champion["scores"], champion["labels"], features=champion["features"]
    )
    result = ks_check(model_name=name, config=_config(scoring_db, champion["uri"]))
    assert result["version"] == version and result["status"] in ("ok", "degraded")
    drift = result["drift"]
    assert drift is not None, "the reference logged with the champion was found"
    assert drift["n_reference"] == REFERENCE_ROWS and drift["n_current"] == 500
    assert drift["score_ks"] is not None and 0 <= drift["score_ks"] <= 1
    assert set(drift["psi"]) == set(HMEQ_SCHEMA.features)
    markdown = _latest_markdown(result["artifact"])
    assert "No training reference was given" not in markdown
    assert f"reference n={REFERENCE_ROWS}" in markdown


def test_an_explicit_reference_still_wins(prefect_harness, scoring_db, champion):
    import pandas as pd

    from flows.ks_check import ks_check

    name, version = champion["name"], champion["version"]
    insert_scores(
        scoring_db, name, version, champion["scores"], champion["labels"], features=champion["features"]
    )
    given = pd.DataFrame(champion["features"][:250]).assign(score=champion["scores"][:250])
    result = ks_check(
        model_name=name, version=version, config=_config(scoring_db, champion["uri"]), reference=given
    )
    assert result["drift"]["n_reference"] == 250
