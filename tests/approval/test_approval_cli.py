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
    read_input,
    request_approval,
    unique_model,
)

from modelops.approval import approval_description
from modelops.cli import main
from modelops.integrations.approvals import ApprovalError, refusal_reason, resume_approval, watch_for_refusal


def _approve(*args: str) -> int:
    return main(["approve", *args])


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
    from prefect import flow
    from prefect.states import Paused

    from modelops.integrations.prefect_client import prefect_client

    @flow(name="approval-form-gap")
    def placeholder() -> None: ...

    problem = "reviewer 'mallory' is not an approver: approval.approvers is alice"
    with prefect_client(sync_client=True) as client:
        run = client.create_flow_run(placeholder)
        paused = Paused(timeout_seconds=600, pause_key="2")
        paused.state_details.run_input_keyset = {
            "description": "paused-2-description",
            "response": "paused-2-response",
            "schema": "paused-2-schema",
        }
        client.set_flow_run_state(run.id, paused, force=True)
        form = json.dumps(approval_description("m", evidence(), ["alice"], problem))
        later = threading.Timer(1.5, client.create_flow_run_input, (run.id, "paused-2-description", form))
        later.start()
        try:
            assert watch_for_refusal(str(run.id), "paused-1-description", seconds=5) == problem
        finally:
            later.join()


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
    read_input(run.id, run.state.state_details.run_input_keyset["schema"])  # the schema is stored
    with pytest.raises(ApprovalError, match="Prefect refused the answer .*REJECT"):
        resume_approval(str(run.id), {"approved": "maybe", "image_tag": 7})
    resume_approval(str(run.id), {"approved": False, "image_tag": "", "reviewer": "x", "comment": ""})
    assert finish(job).reason == "rejected"
