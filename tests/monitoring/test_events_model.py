"""Model events: names validated, resource modelops.model.<name>, payload stored by a real Prefect server."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from support import http_client

from modelops.integrations.events import MODEL_EVENTS, emit_model_event, model_resource


def test_unknown_event_name_is_refused():
    with pytest.raises(ValueError, match="'modelops.model.deploy' is not a modelops event: use one of"):
        emit_model_event("modelops.model.deploy", "m", "1")


def test_resource_names_model_and_version():
    assert model_resource("hmeq-risk", 3) == {
        "prefect.resource.id": "modelops.model.hmeq-risk",
        "prefect.resource.name": "hmeq-risk",
        "modelops.model.version": "3",
    }
    assert len(MODEL_EVENTS) == 10 and "modelops.drift.detected" in MODEL_EVENTS


@pytest.mark.slow
def test_every_event_reaches_the_server(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    model = f"ev-{uuid.uuid4().hex[:8]}"
    for name in MODEL_EVENTS:
        event = emit_model_event(
            name, model, "5", ks=np.float64(0.42), missing=float("nan"), figures={"n": np.int64(7)}
        )
        assert event is not None
    body = {"filter": {"resource": {"id": [f"modelops.model.{model}"]}}, "limit": 50}
    deadline = time.monotonic() + 60  # events are stored asynchronously
    while True:
        events = http_client.post(f"{PREFECT_API_URL.value()}/events/filter", json=body).json()["events"]
        if len(events) == len(MODEL_EVENTS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(e["event"] for e in events) == sorted(MODEL_EVENTS)
    sample = events[0]
    assert sample["resource"]["prefect.resource.name"] == model
    assert sample["payload"] == {
        "model": model,
        "version": "5",
        "ks": 0.42,
        "missing": None,
        "figures": {"n": 7},
    }
