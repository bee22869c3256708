"""``modelops approve`` against a paused approval on a real (temporary) Prefect server."""

from __future__ import annotations

import json
import threading

import pytest
from support.approval import (
    evidence,
    finish,
    in_background,
    paused_run,
    request_approval,
    unique_model,
)

from modelops.approval import ChampionApproval, approval_description
from modelops.cli import main
from modelops.integrations.approvals import ApprovalError, refusal_reason, resume_approval, watch_for_refusal


def _approve(*args: str) -> int:
    return main(["approve", *args])


def _paused_placeholder_run(client, pause: int = 1):
    """A flow run put in the state ``pause_flow_run`` proposes, before the flow has stored its form."""
    from prefect import flow
    from prefect.states import Paused

    @flow(name="approval-form-gap")
    def placeholder() -> None: ...

    run = client.create_flow_run(placeholder)
    paused = Paused(timeout_seconds=600, pause_key=str(pause))
    paused.state_details.run_input_keyset = {
        "description": f"paused-{pause}-description",
        "response": f"paused-{pause}-response",
        "schema": f"paused-{pause}-schema",
    }
    client.set_flow_run_state(run.id, paused, force=True)
    return run


APPROVED = {"approved": True, "image_tag": "v3", "reviewer": "alice", "comment": ""}


def test_the_refusal_reason_is_read_from_the_form_the_flow_shows_again():
    problem = "reviewer 'mallory' is not an approver: approval.approvers is alice"
    assert refusal_reason(approval_description("m", evidence(), ["alice"], problem)) == problem
    assert refusal_reason(approval_description("m", evidence(), ["alice"])).startswith(
        "see the approval form"
    )


@pytest.mark.slow
def test_a_new_pause_seen_before_its_form_is_stored_shows_the_forms_reason(prefect_harness):
    """Prefect proposes the Paused state first and stores the new form after it; a loaded machine
    widened that gap enough for `approve` to read the state in between (a clean-clone run printed
    "see the approval form" instead of the reason). Staged here: the form is stored 1.5 s later."""
    from modelops.integrations.prefect_client import prefect_client

    problem = "reviewer 'mallory' is not an approver: approval.approvers is alice"
    with prefect_client(sync_client=True) as client:
        run = _paused_placeholder_run(client, pause=2)
        form = json.dumps(approval_description("m", evidence(), ["alice"], problem))
        later = threading.Timer(1.5, client.create_flow_run_input, (run.id, "paused-2-description", form))
        later.start()
        try:
            assert watch_for_refusal(str(run.id), "paused-1-description", seconds=5) == problem
        finally:
            later.join()


@pytest.mark.slow
def test_an_answer_to_a_pause_seen_before_its_schema_is_stored_waits_for_the_schema(prefect_harness):
    """Prefect refuses an answer whose form schema is not stored yet ("REJECT: Run input schema not
    found"); the demo's auto-approval met that gap in a loaded CI run. Staged: the schema comes 1.5 s
    after the Paused state, and the answer is sent once it is there."""
    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        run = _paused_placeholder_run(client)
        schema = json.dumps(ChampionApproval.model_json_schema())
        later = threading.Timer(1.5, client.create_flow_run_input, (run.id, "paused-1-schema", schema))
        later.start()
        try:
            assert resume_approval(str(run.id), APPROVED) == "paused-1-description"
        finally:
            later.join()
        assert client.read_flow_run(run.id).state.type.value == "RUNNING"
        assert json.loads(client.read_flow_run_input(run.id, "paused-1-response")) == APPROVED


@pytest.mark.slow
def test_an_answer_whose_form_never_comes_is_not_sent(prefect_harness):
    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        run = _paused_placeholder_run(client)
        with pytest.raises(
            ApprovalError, match="'paused-1-schema'. was not stored within 1 s; nothing was sent"
        ):
            resume_approval(str(run.id), APPROVED, form_wait_s=1)
        assert client.read_flow_run(run.id).state.type.value == "PAUSED"


@pytest.mark.slow
def test_cli_approves_the_paused_run_found_by_model(prefect_harness, capsys):
    model = unique_model()
    job = in_background(request_approval, model)
    run = paused_run(model, job=job)
    assert _approve("--model", model, "--tag", "v3", "--reviewer", "alice", "--comment", "better KS") == 0
    assert f"approval run {run.id}: approved with image tag v3 by alice" in capsys.readouterr().out
    decision = finish(job)
    assert decision.approved and decision.image_tag == "v3" and decision.comment == "better KS"
    # a second answer to the same run is refused with a clear message
    assert _approve("--run", str(run.id), "--tag", "v4", "--reviewer", "bob", "--no-wait") == 2
    assert "is not waiting for an answer (state Completed)" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_reject_by_run_id(prefect_harness, capsys):
    model = unique_model()
    job = in_background(request_approval, model)
    run = paused_run(model, job=job)
    assert _approve("--run", str(run.id), "--reject", "--reviewer", "bob", "--comment", "no") == 0
    decision = finish(job)
    assert not decision.approved and decision.reason == "rejected" and decision.reviewer == "bob"


@pytest.mark.slow
def test_cli_refuses_a_bad_tag_before_sending(prefect_harness, capsys):
    assert _approve("--model", "nobody", "--tag=-bad", "--reviewer", "alice") == 2
    err = capsys.readouterr().err
    assert "answer not sent: image tag '-bad' is invalid" in err


@pytest.mark.slow
def test_cli_without_paused_run_names_the_model(prefect_harness, capsys):
    assert _approve("--model", "no-such-model", "--tag", "v1", "--reviewer", "alice") == 2
    assert "no paused approval for model 'no-such-model'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_reports_when_the_flow_pauses_again(prefect_harness, capsys):
    model = unique_model()
    job = in_background(request_approval, model, ("alice",))  # the flow's approvers; the CLI has none
    run = paused_run(model, job=job)
    assert _approve("--model", model, "--tag", "v3", "--reviewer", "mallory") == 1
    assert "'mallory' is not an approver" in capsys.readouterr().out
    assert _approve("--run", str(run.id), "--tag", "v3", "--reviewer", "alice") == 0
    assert finish(job).reviewer == "alice"


@pytest.mark.slow
def test_rest_reject_status_is_surfaced(prefect_harness):
    """Prefect answers HTTP 200 with status REJECT for input that fails the form's schema."""
    model = unique_model()
    job = in_background(request_approval, model)
    run = paused_run(model, job=job)
    with pytest.raises(ApprovalError, match="Prefect refused the answer .*REJECT"):
        resume_approval(str(run.id), {"approved": "maybe", "image_tag": 7})
    resume_approval(str(run.id), {"approved": False, "image_tag": "", "reviewer": "x", "comment": ""})
    assert finish(job).reason == "rejected"
