"""Champion approval against a real (temporary) Prefect server: pause, form, resume, re-pause, timeout."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow


def _evidence():
    from modelops.approval import ApprovalEvidence, ModelEvidence

    return ApprovalEvidence(
        candidate=ModelEvidence(
            version="3",
            run_id="abc123",
            run_url="http://mlflow.test/#/runs/abc123",
            training_metrics={"ks": 0.52, "auc": 0.87},
            window_ks=0.47,
            window_auc=0.85,
        ),
        champion=ModelEvidence(
            version="2",
            run_id="def456",
            run_url="http://mlflow.test/#/runs/def456",
            training_metrics={"ks": 0.49, "auc": 0.86},
            window_ks=0.31,
            window_auc=0.78,
        ),
        window="latest 2000 labelled records (n=2000, events=430)",
        model_url="http://mlflow.test/#/models/m",
    )


def _model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _paused_run(model_name: str, after_pauses: int = 1, timeout: float = 60.0, job: dict | None = None):
    """Wait until the approval run of ``model_name`` has paused ``after_pauses`` times and is paused."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if job is not None and not job["thread"].is_alive():
                raise AssertionError(f"approval flow ended before pausing: {job}")
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"model:{model_name}"]))
            )
            for run in runs:
                states = client.read_flow_run_states(run.id)
                pauses = [s for s in states if s.type.value == "PAUSED"]
                if run.state.type.value == "PAUSED" and len(pauses) >= after_pauses:
                    return run
            time.sleep(0.2)
    raise AssertionError(f"no paused approval run for {model_name} after {timeout}s")


def _in_background(target, *args) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def body():
        try:
            out["value"] = target(*args)
        except BaseException as exc:  # surfaced by the test
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    out["thread"] = thread
    return out


def _request(model_name: str, approvers=(), timeout_s: int = 120):
    from flows.approval import request_champion_approval

    return request_champion_approval(model_name, "3", _evidence(), approvers=approvers, timeout_s=timeout_s)


def _finish(job: dict[str, Any]):
    job["thread"].join(90)
    assert not job["thread"].is_alive(), "approval flow did not finish"
    if "error" in job:
        raise job["error"]
    return job["value"]


def test_approve_via_sdk_resume(prefect_harness):
    from prefect.flow_runs import resume_flow_run

    model = _model()
    job = _in_background(_request, model)
    run = _paused_run(model, job=job)
    assert set(run.tags) >= {"modelops", "approval", f"model:{model}"}
    assert run.parameters["model_name"] == model and run.parameters["candidate_version"] == "3"
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "v3", "reviewer": "alice", "comment": "ok"}
    )
    decision = _finish(job)
    assert decision.approved and decision.reason == "approved"
    assert (decision.image_tag, decision.reviewer, decision.comment) == ("v3", "alice", "ok")
    assert decision.attempts == 1 and decision.flow_run_id == str(run.id)


def test_reject(prefect_harness):
    from prefect.flow_runs import resume_flow_run

    model = _model()
    job = _in_background(_request, model)
    run = _paused_run(model, job=job)
    resume_flow_run(
        run.id, run_input={"approved": False, "image_tag": "", "reviewer": "bob", "comment": "worse KS"}
    )
    decision = _finish(job)
    assert not decision.approved and decision.reason == "rejected" and decision.reviewer == "bob"


def test_invalid_answer_pauses_again_then_valid_answer_proceeds(prefect_harness):
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run

    model = _model()
    job = _in_background(_request, model, ("alice", "bob"))
    run = _paused_run(model, job=job)
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "bad tag!", "reviewer": "alice", "comment": ""}
    )
    again = _paused_run(model, after_pauses=2)
    keyset = again.state.state_details.run_input_keyset
    description = _read_input(run.id, keyset["description"])
    assert "not accepted" in description.splitlines()[0]
    assert "'bad tag!'" in description and "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" in description
    schema = _read_input(run.id, keyset["schema"])
    assert schema["properties"]["image_tag"]["default"] == "bad tag!"  # the corrected form starts from it
    # a reviewer outside the approvers is refused too
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "v3", "reviewer": "mallory", "comment": ""}
    )
    third = _paused_run(model, after_pauses=3)
    text = _read_input(run.id, third.state.state_details.run_input_keyset["description"])
    assert "'mallory' is not an approver" in text
    resume_flow_run(
        run.id, run_input={"approved": True, "image_tag": "v3.1", "reviewer": "bob", "comment": ""}
    )
    decision = _finish(job)
    assert decision.approved and decision.image_tag == "v3.1" and decision.reviewer == "bob"
    assert decision.attempts == 3 and len(decision.invalid_answers) == 2
    with get_client(sync_client=True) as client:
        pauses = [s for s in client.read_flow_run_states(run.id) if s.type.value == "PAUSED"]
    assert len(pauses) == 3


def test_timeout_is_a_rejection(prefect_harness):
    model = _model()
    started = time.monotonic()
    decision = _request(model, (), 3)
    assert not decision.approved and decision.reason == "timeout"
    assert time.monotonic() - started < 60


def test_form_schema_and_description_as_the_ui_reads_them(prefect_harness):
    from prefect.flow_runs import resume_flow_run

    model = _model()
    job = _in_background(_request, model, ("alice",))
    run = _paused_run(model, job=job)
    keyset = run.state.state_details.run_input_keyset
    schema = _read_input(run.id, keyset["schema"])
    assert set(schema["properties"]) == {"approved", "image_tag", "reviewer", "comment"}
    assert schema["properties"]["approved"]["type"] == "boolean"
    assert schema["properties"]["image_tag"]["default"] == "v3"  # initial data prefilled
    description = _read_input(run.id, keyset["description"])
    assert "## Approve champion" in description
    assert "| | candidate v3 | champion v2 |" in description
    assert "| KS on the labelled window | 0.4700 | 0.3100 |" in description
    assert "[abc123](http://mlflow.test/#/runs/abc123)" in description
    assert "one of: alice" in description
    resume_flow_run(
        run.id, run_input={"approved": False, "image_tag": "", "reviewer": "alice", "comment": ""}
    )
    _finish(job)


def _read_input(run_id, key: str) -> Any:
    """A run-input value as the UI reads it (the flow writes it just after entering Paused)."""
    for _ in range(100):
        response = httpx.get(f"{_api()}/flow_runs/{run_id}/input/{key}")
        if response.status_code == 200:
            value = response.json()
            try:
                return json.loads(value)  # the schema is stored JSON-encoded, the description as text
            except (TypeError, ValueError):
                return value
        time.sleep(0.1)
    raise AssertionError(f"run input {key} never appeared: HTTP {response.status_code}")


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()
