"""Champion approval against a real (temporary) Prefect server: pause, form, resume, re-pause, timeout."""

from __future__ import annotations

import json
import time

import pytest
from support.approval import finish, in_background, paused_run, read_input, request_approval, unique_model

pytestmark = pytest.mark.slow


def test_approve_via_sdk_resume(prefect_harness):
    from prefect.flow_runs import resume_flow_run

    model = unique_model()
    job = in_background(request_approval, model)
    run = paused_run(model, job=job)
    assert set(run.tags) >= {"modelops", "approval", f"model:{model}"}
    assert run.parameters["model_name"] == model and run.parameters["candidate_version"] == "3"
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "v3", "reviewer": "alice", "comment": "ok"}
    )
    decision = finish(job)
    assert decision.approved and decision.reason == "approved"
    assert (decision.image_tag, decision.reviewer, decision.comment) == ("v3", "alice", "ok")
    assert decision.attempts == 1 and decision.flow_run_id == str(run.id)


def test_reject(prefect_harness):
    from prefect.flow_runs import resume_flow_run

    model = unique_model()
    job = in_background(request_approval, model)
    run = paused_run(model, job=job)
    resume_flow_run(
        run.id, run_input={"approved": False, "image_tag": "", "reviewer": "bob", "comment": "worse KS"}
    )
    decision = finish(job)
    assert not decision.approved and decision.reason == "rejected" and decision.reviewer == "bob"


def test_invalid_answer_pauses_again_then_valid_answer_proceeds(prefect_harness):
    from prefect.flow_runs import resume_flow_run

    from modelops.integrations.prefect_client import prefect_client

    model = unique_model()
    job = in_background(request_approval, model, ("alice", "bob"))
    run = paused_run(model, job=job)
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "bad tag!", "reviewer": "alice", "comment": ""}
    )
    again = paused_run(model, after_pauses=2)
    keyset = again.state.state_details.run_input_keyset
    description = read_input(run.id, keyset["description"])
    assert "not accepted" in description.splitlines()[0]
    assert "'bad tag!'" in description and "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" in description
    schema = read_input(run.id, keyset["schema"])
    assert schema["properties"]["image_tag"]["default"] == "bad tag!"  # the corrected form starts from it
    # a reviewer outside the approvers is refused too
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "v3", "reviewer": "mallory", "comment": ""}
    )
    third = paused_run(model, after_pauses=3)
    text = read_input(run.id, third.state.state_details.run_input_keyset["description"])
    assert "'mallory' is not an approver" in text
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "v3.1", "reviewer": "bob", "comment": ""}
    )
    decision = finish(job)
    assert decision.approved and decision.image_tag == "v3.1" and decision.reviewer == "bob"
    assert decision.attempts == 3 and len(decision.invalid_answers) == 2
    with prefect_client(sync_client=True) as client:
        pauses = [s for s in client.read_flow_run_states(run.id) if s.type.value == "PAUSED"]
    assert len(pauses) == 3


def test_timeout_is_a_rejection(prefect_harness):
    model = unique_model()
    started = time.monotonic()
    decision = request_approval(model, (), 3)
    assert not decision.approved and decision.reason == "timeout"
    assert time.monotonic() - started < 60


def test_form_schema_and_description_as_the_ui_reads_them(prefect_harness):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.flow_runs import resume_flow_run

    from modelops.integrations.prefect_client import prefect_client

    model = unique_model()
    job = in_background(request_approval, model, ("alice",))
    run = paused_run(model, job=job)
    keyset = run.state.state_details.run_input_keyset
    schema = read_input(run.id, keyset["schema"])
    assert set(schema["properties"]) == {"approved", "image_tag", "reviewer", "comment"}
    assert schema["properties"]["approved"]["type"] == "boolean"
    assert schema["properties"]["image_tag"]["default"] == "v3"  # initial data prefilled
    description = read_input(run.id, keyset["description"])
    assert "## Approve champion" in description
    assert "|  | candidate v3 | champion v2 | Δ |" in description
    assert "| window KS | 0.470 | 0.310 | +0.160 |" in description
    assert "[run abc123](http://mlflow.test/#/runs/abc123)" in description
    assert "one of: alice" in description
    # the same comparison is a table artifact on the paused run, there before anyone resumes it
    with prefect_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    (table,) = [a for a in artifacts if a.type == "table"]
    assert table.key == f"approval-{model}"
    rows = json.loads(table.data)
    assert rows[-1] == {
        "figure": "MLflow run",
        "candidate v3": "[run abc123](http://mlflow.test/#/runs/abc123)",
        "champion v2": "[run def456](http://mlflow.test/#/runs/def456)",
        "Δ": "",
    }
    assert {"figure": "window KS", "candidate v3": "0.470", "champion v2": "0.310", "Δ": "+0.160"} in rows
    resume_flow_run(
        run.id, run_input={"approved": False, "image_tag": "", "reviewer": "alice", "comment": ""}
    )
    finish(job)


def test_the_decision_is_an_artifact_on_the_parent_run(prefect_harness):
    """As in the lifecycle: the deployment stage (a subflow) records the decision on its parent run."""
    from prefect import flow
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.flow_runs import resume_flow_run
    from prefect.runtime import flow_run
    from support.approval import evidence

    from modelops.integrations.prefect_client import prefect_client
    from tasks import artifacts

    model = unique_model()

    @flow(name="decision-stage")
    def stage() -> str:
        decision = request_approval(model)
        artifacts.publish_approval_decision(decision, evidence(), flow_run.parent_flow_run_id)
        return str(flow_run.id)

    @flow(name="decision-lifecycle")
    def lifecycle() -> tuple[str, str]:
        return str(flow_run.id), stage()

    job = in_background(lifecycle)
    run = paused_run(model, job=job)
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "v3", "reviewer": "alice", "comment": "a | b"}
    )
    lifecycle_id, stage_id = finish(job)
    with prefect_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"approval-decision-{model}"]))
        )
    assert str(artifact.flow_run_id) == lifecycle_id != stage_id
    assert artifact.task_run_id is None  # listed as the lifecycle run's own artifact, not a task's
    markdown = artifact.data
    assert markdown.startswith(f"# Approval of {model} v3: approved")
    for row in (
        "| reviewer | alice |",
        "| image tag | v3 |",
        r"| comment | a \| b |",
        "| answers received | 1 |",
    ):
        assert row in markdown, row
    assert f"/runs/flow-run/{run.id})" in markdown  # the approval run, in the Prefect UI
    assert "| window KS | 0.470 | 0.310 | +0.160 |" in markdown.split("## Evidence the reviewer saw")[1]
