"""Repeated ``degraded`` events for one model start no second retrain while a challenger awaits review.

Once a retrain has registered a challenger, later triggers find it awaiting review and skip
(``modelops.pipeline.retraining.retrain_guard``, called first by the real ``retrain`` flow), tested
against a real MLflow registry with aliases. Runs of one model that overlap are kept apart by the
model's retrain slot: ``tests/monitoring/test_retrain_per_model.py`` (a burst for two models against
a real worker and the automation from ``prefect.yaml``).
"""

from __future__ import annotations

import uuid

import pytest
from support.stack import write_config

EVENTS = 5


# --------------------------------------------------------------------------------------- the guard
@pytest.fixture
def registry(tmp_path):
    """A real MLflow registry (sqlite) with three versions of a model, no aliases yet."""
    from mlflow import MlflowClient

    from modelops.integrations.registry import client_for

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client: MlflowClient = client_for(uri)
    name = f"guard-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    source = tmp_path / "model"
    source.mkdir()
    for _ in range(3):
        client.create_model_version(name, str(source))
    return uri, name, client


def test_retrain_guard_follows_the_aliases(registry):
    from modelops.pipeline.retraining import retrain_guard

    uri, name, client = registry
    assert retrain_guard(name, uri) is None, "no champion, no challenger: retrain"
    client.set_registered_model_alias(name, "champion", "1")
    assert retrain_guard(name, uri) is None, "a champion alone: retrain"
    client.set_registered_model_alias(name, "challenger", "2")
    reason = retrain_guard(name, uri)
    assert reason and "version 2 (alias challenger) already awaits review" in reason
    client.set_registered_model_alias(name, "champion", "2")  # approved and promoted, alias not yet removed
    assert retrain_guard(name, uri) is None, "the challenger is the champion now: nothing awaits review"
    client.set_registered_model_alias(name, "challenger", "3")
    client.delete_registered_model_alias(name, "champion")
    assert "version 3" in retrain_guard(name, uri), "a first candidate awaiting review, no champion yet"
    client.delete_registered_model_alias(name, "challenger")  # rejected: the alias is freed
    assert retrain_guard(name, uri) is None
    assert retrain_guard(f"{name}-absent", uri) is None, "an unknown model: nothing awaits review"
    client.set_registered_model_alias(name, "champion", "2")
    assert "no longer the champion" in retrain_guard(name, uri, triggered_version="1"), "a stale event"
    assert retrain_guard(name, uri, triggered_version="2") is None
    client.set_model_version_tag(
        name, "3", "trigger", "modelops.performance.degraded"
    )  # v3 came from a retrain
    assert "retrained" in retrain_guard(name, uri, triggered_version="2", cooldown_s=300), (
        "inside the cooldown"
    )
    assert retrain_guard(name, uri, triggered_version="2", cooldown_s=0) is None


@pytest.mark.slow
def test_the_retrain_flow_skips_while_a_challenger_awaits_review(prefect_harness, registry, tmp_path):
    """The real retrain flow: five triggers in a row while v2 awaits review all skip, touching no data."""
    from flows.retrain import retrain

    uri, name, client = registry
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    config = write_config(tmp_path / "config", model={"name": name}, mlflow={"tracking_uri": uri})
    outcomes = [retrain(model_name=name, ks=0.2, config=str(config)) for _ in range(EVENTS)]
    assert all("version 2 (alias challenger) already awaits review" in o["skipped"] for o in outcomes)
    assert sorted(str(v.version) for v in client.search_model_versions(f"name='{name}'")) == ["1", "2", "3"]
