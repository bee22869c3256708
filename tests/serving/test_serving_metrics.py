"""The server's Prometheus endpoint (TF Serving's path) counts exactly what it answered: real process,
real SavedModels, the exposition parsed with prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import http_client
from support.network import free_port
from support.serving import ServerProcess, build_model_base, sample_records

from modelops.serving import rest_client
from modelops.serving.metrics import METRICS_PATH

pytestmark = pytest.mark.slow
MODEL = "risk"
PREDICTIONS = 5
ROWS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = build_model_base(tmp_path_factory.mktemp("metrics") / MODEL, {1: -1.4, 2: 0.5})
    with ServerProcess(base, free_port(), MODEL) as process:
        yield process


def samples(server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = http_client.get(server.url + METRICS_PATH)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_counts_latencies_batches_and_errors_by_model_and_version(server):
    before = samples(server)
    for _ in range(PREDICTIONS):
        rest_client.predict(server.url, MODEL, sample_records(ROWS))
    rest_client.predict(server.url, MODEL, sample_records(1), version=1)
    bad = http_client.post(
        f"{server.url}/v1/models/{MODEL}:predict", content=b'{"instances": [{"LOAN": "x"}]}'
    )
    assert bad.status_code == 400
    missing = http_client.get(f"{server.url}/v1/models/{MODEL}/versions/9")
    assert missing.status_code == 404
    after = samples(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    v2 = {"model_name": MODEL, "version": "2"}
    v1 = {"model_name": MODEL, "version": "1"}
    requests = "modelops_serving_requests_total"
    assert delta(requests, **v2, api="predict", status="200") == PREDICTIONS
    assert delta(requests, **v1, api="predict", status="200") == 1
    assert delta(requests, **v2, api="predict", status="400") == 1
    assert delta(requests, model_name=MODEL, version="", api="status", status="404") == 1
    errors = "modelops_serving_request_errors_total"
    assert delta(errors, **v2, api="predict", kind="client") == 1
    assert delta(errors, model_name=MODEL, version="", api="status", kind="client") == 1
    assert delta(errors, **v2, api="predict", kind="server") == 0

    latency = "modelops_serving_request_latency_seconds"
    assert delta(f"{latency}_count", **v2, api="predict") == PREDICTIONS + 1
    assert delta(f"{latency}_bucket", **v2, api="predict", le="+Inf") == PREDICTIONS + 1
    assert delta(f"{latency}_sum", **v2, api="predict") > 0

    # Sequential requests are never merged: one signature call each, the bad one never reaches the model.
    batch = "modelops_serving_batch_size"
    default = {**v2, "signature": "serving_default"}
    assert delta(f"{batch}_count", **default) == PREDICTIONS
    assert delta(f"{batch}_sum", **default) == PREDICTIONS * ROWS
    assert delta(f"{batch}_bucket", **default, le="2.0") == 0
    assert delta(f"{batch}_bucket", **default, le="4.0") == PREDICTIONS
    assert delta(f"{batch}_count", **v1, signature="serving_default") == 1


def test_client_chosen_paths_do_not_create_series(server):
    for path in ("/v1/models/other-model", "/v1/models/risk/versions/x", "/v1/models/risk:explode"):
        http_client.get(server.url + path)
    found = samples(server)
    labels = {dict(key[1]).get(name) for key in found for name in ("model_name", "version", "api")}
    assert labels <= {None, MODEL, "", "1", "2", "predict", "status", "metadata", "other"}
