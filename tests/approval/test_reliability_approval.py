"""Reliability of the human approval step: nobody answers, a wrong answer then silence, two answers.

* The whole ``lifecycle`` flow against a real MLflow registry (sqlite) with a freshly trained
  version and a 3 s approval timeout: it ends Completed (not Failed), nothing deployed, the
  version tagged rejected, the challenger alias freed, ``modelops.champion.rejected`` stored.
* An invalid answer is asked again; if nobody corrects it, the timeout is a rejection.
* A second answer to an approval that already has one is refused, and the first one stands.
"""

from __future__ import annotations

import time
import uuid

import pytest
from support.approval import finish, in_background, paused_run, request_approval, unique_model
from support.stack import TINY_TRAINING, model_events, wait_for, write_config

pytestmark = pytest.mark.slow
TIMEOUT_S = 3


@pytest.fixture
def trained(prefect_harness, postgres_url, tmp_path, monkeypatch):
    """A temp MLflow, a fresh database (no migrations applied) and a version trained on 600 rows."""
    from flows.train import train

    name = f"approval-{uuid.uuid4().hex[:6]}"
    (tmp_path / "mlflow").mkdir()
    config = write_config(
        tmp_path / "config",
        model={"name": name, "experiment": name},
        training=TINY_TRAINING,
        mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"},
        database={"url": postgres_url},
        stack={"home": str(tmp_path / "home")},
    )
    result = train(config=str(config))
    assert result["version"] == "1"
    return name, str(config), result


def test_lifecycle_ends_cleanly_when_nobody_approves(trained, postgres_url, monkeypatch):
    import psycopg2

    from flows.lifecycle import lifecycle
    from modelops.config import load_config
    from modelops.integrations.registry import CHALLENGER, CHAMPION, get_alias_version, resolve_version

    name, config_path, _ = trained
    uri = load_config(config_path).mlflow_uri
    assert get_alias_version(name, CHALLENGER, uri) == "1"
    monkeypatch.setenv("MODELOPS_APPROVAL__TIMEOUT_S", str(TIMEOUT_S))
    started = time.monotonic()
    state = lifecycle(model_name=name, config=config_path, return_state=True)
    took = time.monotonic() - started

    assert state.is_completed(), f"the lifecycle ended {state.type.value}: {state.message}"
    outcome = state.result()
    assert outcome["deployed"] is False and "production" not in outcome
    assert outcome["decision"]["reason"] == "timeout" and outcome["decision"]["approved"] is False
    tags = resolve_version(uri, name, "1").tags
    assert tags["validation_status"] == "rejected" and tags["rejected_by"] == "(nobody)"
    assert tags["rejection_reason"] == "timeout"
    assert get_alias_version(name, CHALLENGER, uri) is None, "the challenger alias is freed for a retrain"
    assert get_alias_version(name, CHAMPION, uri) is None, "nothing was promoted"
    rejected = wait_for(lambda: model_events(name, "modelops.champion.rejected"), 30, "rejected event")
    assert [(e["payload"]["version"], e["payload"]["reason"]) for e in rejected] == [("1", "timeout")]
    assert not model_events(name, "modelops.model.deployed")
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT approved, reviewer FROM modelops.approvals WHERE model_name = %s", (name,))
        assert cursor.fetchall() == [(False, "(nobody: timeout)")], "the audit row says nobody answered"
    connection.close()
    # the lifecycle run's page records the decision (the approval happened in its deployment stage)
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        (record,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"approval-decision-{name}"]))
        )
    assert record.flow_run_id == state.state_details.flow_run_id and record.task_run_id is None
    assert record.data.startswith(f"# Approval of {name} v1: not answered in time")
    print(f"\napproval timeout ({TIMEOUT_S} s): lifecycle Completed in {took:.1f} s, version tagged rejected")


def test_an_invalid_answer_then_silence_is_a_rejection(prefect_harness):
    from prefect.flow_runs import resume_flow_run

    model = unique_model()
    job = in_background(request_approval, model, ("alice",), 8)
    run = paused_run(model, job=job)
    resume_flow_run(run.id, run_input={"approved": True, "image_tag": "v3", "reviewer": "eve", "comment": ""})
    paused_run(model, after_pauses=2)  # asked again, with the reason
    decision = finish(job)
    assert not decision.approved and decision.reason == "timeout"


def test_a_second_answer_is_refused_and_the_first_stands(prefect_harness):
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    from modelops.integrations.prefect_client import prefect_client

    model = unique_model()
    job = in_background(request_approval, model)
    run = paused_run(model, job=job)
    first = {"approved": True, "image_tag": "v3", "reviewer": "alice", "comment": "first"}
    resume_flow_run(run.id, run_input=first)
    second = {"approved": False, "image_tag": "", "reviewer": "mallory", "comment": "second"}
    with pytest.raises(NotPausedError):  # the SDK (and `modelops approve`) refuse before sending
        resume_flow_run(run.id, run_input=second)
    with prefect_client(sync_client=True) as client:  # the REST call the UI makes is refused by the server
        response = client.resume_flow_run(run.id, run_input=second)
    assert response.status != SetStateStatus.ACCEPT, "Prefect accepted a second answer to the same approval"
    decision = finish(job)
    assert decision.approved and decision.reviewer == "alice" and decision.comment == "first"
    print(f"\nsecond answer refused: SDK NotPausedError; REST {response.status.value} ({response.details})")
