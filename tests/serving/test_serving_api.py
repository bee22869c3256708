"""The local server speaks the TF Serving REST API: real process, real HTTP, real SavedModels."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import http_client
from support.network import free_port
from support.serving import (
    CATEGORICAL,
    NUMERIC,
    ServerProcess,
    build_model_base,
    expected_score,
    sample_records,
)

from modelops.serving import rest_client

pytestmark = pytest.mark.slow
MODEL = "risk"
BIASES = {1: -1.4, 3: 0.5}  # version 3 is the highest, so the default


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = build_model_base(tmp_path_factory.mktemp("serving") / MODEL, BIASES)
    with ServerProcess(base, free_port(), MODEL, "--max-batch-size", "16") as process:
        yield process


def post(server, path, body, **kwargs):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http_client.post(
        server.url + path, content=content, headers={"Content-Type": "application/json"}, **kwargs
    )


def assert_still_serving(server):
    records = sample_records(2)
    scores = rest_client.predict(server.url, MODEL, records)
    assert scores == pytest.approx([expected_score(r, BIASES[3]) for r in records], abs=1e-5)


def test_status_lists_loaded_versions_highest_first(server):
    answer = http_client.get(f"{server.url}/v1/models/{MODEL}").json()
    assert answer == {
        "model_version_status": [
            {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }
    one = http_client.get(f"{server.url}/v1/models/{MODEL}/versions/1").json()
    assert [s["version"] for s in one["model_version_status"]] == ["1"]


def test_metadata_is_the_signature_def_map(server):
    for path, version in (
        (f"/v1/models/{MODEL}/metadata", "3"),
        (f"/v1/models/{MODEL}/versions/1/metadata", "1"),
    ):
        answer = http_client.get(server.url + path).json()
        assert answer["model_spec"] == {"name": MODEL, "signature_name": "", "version": version}
        signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert {n: signature["inputs"][n]["dtype"] for n in NUMERIC} == {n: "DT_FLOAT" for n in NUMERIC}
        assert {n: signature["inputs"][n]["dtype"] for n in CATEGORICAL} == {
            n: "DT_STRING" for n in CATEGORICAL
        }
        assert signature["inputs"]["LOAN"]["tensor_shape"] == {"dim": [{"size": "-1"}]}
        assert signature["outputs"]["score"]["dtype"] == "DT_FLOAT"


def test_predict_row_format_is_a_flat_list_of_scores(server):
    records = sample_records(5)
    body = json.dumps({"instances": records}).encode()  # NaN tokens for missing numbers
    assert b"NaN" in body
    answer = post(server, f"/v1/models/{MODEL}:predict", body)
    assert answer.status_code == 200
    assert answer.json()["predictions"] == pytest.approx([expected_score(r, 0.5) for r in records], abs=1e-5)


def test_predict_columnar_format_and_signature_name(server):
    records = sample_records(3)
    columns = {name: [r[name] for r in records] for name in (*NUMERIC, *CATEGORICAL)}
    body = {"inputs": columns, "signature_name": "serving_default"}
    answer = post(server, f"/v1/models/{MODEL}:predict", json.dumps(body).encode())
    assert answer.status_code == 200
    assert answer.json()["outputs"] == pytest.approx([expected_score(r, 0.5) for r in records], abs=1e-5)


def test_predict_a_specific_version_by_path(server):
    records = sample_records(3)
    scores = rest_client.predict(server.url, MODEL, records, version=1)
    assert scores == pytest.approx([expected_score(r, BIASES[1]) for r in records], abs=1e-5)


def test_openapi_describes_the_api(server):
    document = http_client.get(f"{server.url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/v1/models/{model_name}:predict" in document["paths"]
    body = document["paths"]["/v1/models/{model_name}:predict"]["post"]["requestBody"]
    instance = body["content"]["application/json"]["schema"]["oneOf"][0]["properties"]["instances"]["items"]
    assert instance["properties"]["LOAN"] == {"type": "number"} and instance["properties"]["JOB"] == {
        "type": "string"
    }


GOOD = sample_records(1)[0]
PREDICT = f"/v1/models/{MODEL}:predict"


def with_value(name, raw_value):
    fields = [f'"{k}": {json.dumps(v)}' for k, v in GOOD.items() if k != name]
    return ("{" + f'"instances": [{{{", ".join(fields)}, "{name}": {raw_value}}}]' + "}").encode()


BAD_REQUESTS = [
    ("malformed JSON", "POST", PREDICT, b'{"instances": [', 400, "not valid JSON"),
    ("not an object", "POST", PREDICT, b"[1, 2]", 400, "JSON object"),
    ("wrong field name", "POST", PREDICT, {"instance": [GOOD]}, 400, "unknown field"),
    (
        "missing field",
        "POST",
        PREDICT,
        {"instances": [{k: v for k, v in GOOD.items() if k != "DEBTINC"}]},
        400,
        "DEBTINC",
    ),
    ("unknown input", "POST", PREDICT, {"instances": [{**GOOD, "BAD": 1}]}, 400, "unknown input"),
    (
        "wrong type number",
        "POST",
        PREDICT,
        {"instances": [{**GOOD, "LOAN": "1000"}]},
        400,
        "expected a number",
    ),
    ("wrong type string", "POST", PREDICT, {"instances": [{**GOOD, "JOB": 4}]}, 400, "expected a string"),
    ("Infinity", "POST", PREDICT, with_value("LOAN", "Infinity"), 400, "Infinity"),
    ("-Infinity", "POST", PREDICT, with_value("LOAN", "-Infinity"), 400, "Infinity"),
    ("null number", "POST", PREDICT, with_value("LOAN", "null"), 400, "null is not accepted"),
    ("null category", "POST", PREDICT, with_value("JOB", "null"), 400, "null is not accepted"),
    ("empty batch", "POST", PREDICT, {"instances": []}, 400, "empty"),
    ("oversized batch", "POST", PREDICT, {"instances": [GOOD] * 17}, 400, "max_batch_size=16"),
    ("empty body", "POST", PREDICT, b"", 400, "empty"),
    (
        "unknown signature",
        "POST",
        PREDICT,
        {"instances": [GOOD], "signature_name": "x"},
        400,
        "signature 'x'",
    ),
    ("unknown model", "POST", "/v1/models/nope:predict", {"instances": [GOOD]}, 404, "'nope' is not served"),
    (
        "unknown version",
        "POST",
        f"/v1/models/{MODEL}/versions/2:predict",
        {"instances": [GOOD]},
        404,
        "no version 2",
    ),
    ("version not a number", "GET", f"/v1/models/{MODEL}/versions/abc", None, 404, "not a number"),
    ("unknown model status", "GET", "/v1/models/nope", None, 404, "not served"),
    ("label", "GET", f"/v1/models/{MODEL}/labels/stable", None, 404, "label"),
    ("unknown verb", "POST", f"/v1/models/{MODEL}:explain", {"instances": [GOOD]}, 404, ":predict"),
    ("classify", "POST", f"/v1/models/{MODEL}:classify", {"examples": []}, 400, "not supported"),
    ("GET predict", "GET", PREDICT, None, 405, "POST"),
    ("POST status", "POST", f"/v1/models/{MODEL}", {}, 405, "GET"),
    ("DELETE metadata", "DELETE", f"/v1/models/{MODEL}/metadata", None, 405, "GET"),
    ("unknown path", "GET", "/v2/whatever", None, 404, "no route"),
    ("no model name", "GET", "/v1/models/", None, 404, "no model name"),
    ("admin route on public port", "POST", "/-/open-public", None, 404, "no route"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_client_mistakes_get_a_4xx_error_and_the_server_keeps_serving(server, case):
    _, method, path, body, status, fragment = case
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    answer = http_client.request(method, server.url + path, content=content)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert fragment in error
    assert_still_serving(server)


def test_missing_values_are_accepted_as_nan_and_empty_string(server):
    record = {name: math.nan for name in NUMERIC} | {name: "" for name in CATEGORICAL}
    answer = post(server, PREDICT, json.dumps({"instances": [record]}).encode())
    assert answer.status_code == 200
    assert answer.json()["predictions"] == pytest.approx([expected_score(record, 0.5)], abs=1e-5)


def test_client_converts_dataframes_with_missing_values_and_extra_columns(server):
    import pandas as pd

    records = sample_records(4)
    frame = pd.DataFrame(records)
    frame.loc[0, "JOB"] = None
    frame.loc[1, "LOAN"] = None
    frame["BAD"] = [0, 1, 0, 1]  # the label is not a model input: dropped by the client
    expected = [dict(r) for r in records]
    expected[0]["JOB"], expected[1]["LOAN"] = "", math.nan
    scores = rest_client.predict(server.url, MODEL, frame)
    assert scores == pytest.approx([expected_score(r, 0.5) for r in expected], abs=1e-5)


def test_client_wait_and_smoke_test(server):
    assert rest_client.wait_until_available(server.url, MODEL, version=3, timeout=5)["version"] == "3"
    assert len(rest_client.smoke_test(server.url, MODEL, sample_records(3), expected_version=3)) == 3
    with pytest.raises(rest_client.SmokeTestError, match="serves version 3, expected 4"):
        rest_client.smoke_test(server.url, MODEL, sample_records(3), expected_version=4)
    with pytest.raises(rest_client.ServingClientError, match="not AVAILABLE"):
        rest_client.wait_until_available(server.url, MODEL, version=2, timeout=0.5)
    with pytest.raises(rest_client.ServingClientError, match="HTTP 404"):
        rest_client.predict(server.url, "nope", sample_records(1))


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=120, deadline=None)
@given(body=JSON_VALUES)
def test_fuzz_any_json_body_is_answered_without_a_5xx(server, body):
    answer = http_client.post(server.url + PREDICT, content=json.dumps(body).encode())
    assert answer.status_code in (200, 400), answer.text
    assert answer.status_code == 200 or "error" in answer.json()


@settings(max_examples=150, deadline=None)
@given(values=st.dictionaries(st.sampled_from([*NUMERIC, *CATEGORICAL, "EXTRA"]), JSON_VALUES, max_size=4))
def test_fuzz_instance_values_are_validated_without_a_5xx(server, values):
    answer = http_client.post(
        server.url + PREDICT, content=json.dumps({"instances": [{**GOOD, **values}]}).encode()
    )
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 200:
        (score,) = answer.json()["predictions"]
        assert 0.0 <= score <= 1.0


def test_deeply_nested_body_is_a_400(server):
    answer = http_client.post(server.url + PREDICT, content=b"[" * 100_000)
    assert answer.status_code == 400 and "error" in answer.json()
    assert_still_serving(server)
