"""Driving the champion-approval flow on a real (temporary) Prefect server from a test.

``request_approval`` runs ``flows.approval.request_champion_approval`` (usually via ``in_background``),
``paused_run`` waits for it to pause, ``read_input`` reads the form as the UI does, ``finish`` joins.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.settings import PREFECT_API_URL

from flows.approval import request_champion_approval
from modelops.approval import ApprovalEvidence, ModelEvidence
from modelops.integrations.prefect_client import prefect_client
from support import http_client


def evidence() -> ApprovalEvidence:
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


def unique_model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def paused_run(model_name: str, after_pauses: int = 1, timeout: float = 120.0, job: dict | None = None):
    """Wait until the approval run of ``model_name`` has paused ``after_pauses`` times and is paused,
    with its form stored: Prefect refuses an answer sent between the Paused state and the form's
    schema ("Run input schema not found"), and the UI shows no form before it is there."""
    deadline = time.monotonic() + timeout
    with prefect_client(sync_client=True) as client:
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
                    read_input(run.id, run.state.state_details.run_input_keyset["schema"])
                    return run
            time.sleep(0.2)
    raise AssertionError(f"no paused approval run for {model_name} after {timeout}s")


def in_background(target: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Run ``target(*args)`` in a daemon thread; ``finish`` returns its value or raises its error."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = target(*args)
        except BaseException as exc:  # surfaced by the test
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    out["thread"] = thread
    return out


def request_approval(model_name: str, approvers: tuple[str, ...] = (), timeout_s: int = 120):
    return request_champion_approval(model_name, "3", evidence(), approvers=approvers, timeout_s=timeout_s)


def finish(job: dict[str, Any]) -> Any:
    job["thread"].join(180)
    assert not job["thread"].is_alive(), "approval flow did not finish"
    if "error" in job:
        raise job["error"]
    return job["value"]


def read_input(run_id: Any, key: str, timeout: float = 60.0) -> Any:
    """A run-input value as the UI reads it (the flow writes it just after entering Paused)."""
    deadline = time.monotonic() + timeout
    while True:
        response = http_client.get(f"{prefect_api()}/flow_runs/{run_id}/input/{key}")
        if response.status_code == 200:
            value = response.json()
            try:
                return json.loads(value)  # the schema is stored JSON-encoded, the description as text
            except (TypeError, ValueError):
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"run input {key} never appeared: HTTP {response.status_code}")
        time.sleep(0.1)


def prefect_api() -> str:
    return PREFECT_API_URL.value()
