"""Validation of TF Serving ``:predict`` bodies (no TensorFlow, no server)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelops.serving.errors import BadRequest
from modelops.serving.predict_request import InputSpec, parse_json, parse_predict_request

SPECS = {"serving_default": (InputSpec("LOAN", "float32", (None,)), InputSpec("JOB", "string", (None,)))}


def parse(payload, max_batch_size=4):
    return parse_predict_request(payload, SPECS, max_batch_size)


def test_row_and_columnar_give_the_same_columns():
    rows = parse({"instances": [{"LOAN": 1, "JOB": "Mgr"}, {"LOAN": 2.5, "JOB": ""}]})
    cols = parse({"inputs": {"LOAN": [1, 2.5], "JOB": ["Mgr", ""]}})
    assert not rows.columnar and cols.columnar and rows.rows == cols.rows == 2
    for name in ("LOAN", "JOB"):
        assert list(rows.columns[name]) == list(cols.columns[name])
    assert rows.columns["LOAN"].dtype == np.float32


def test_nan_token_is_a_missing_number_and_empty_string_a_missing_category():
    payload = parse_json(b'{"instances": [{"LOAN": NaN, "JOB": ""}]}')
    request = parse(payload)
    assert math.isnan(request.columns["LOAN"][0]) and request.columns["JOB"][0] == ""


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b'{"instances": [{"LOAN": Infinity, "JOB": ""}]}', "Infinity"),
        (b'{"instances": [{"LOAN": -Infinity, "JOB": ""}]}', "Infinity"),
        (b'{"instances": [', "not valid JSON"),
        (b"", "empty"),
        (b'{"instances": [{"LOAN": 1e39, "JOB": ""}]}', "float32"),
    ],
)
def test_bad_json_and_non_finite_numbers(body, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse(parse_json(body))


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ([], "JSON object"),
        ({"instance": []}, "unknown field"),
        ({}, "exactly one of"),
        ({"instances": [], "inputs": {}}, "exactly one of"),
        ({"instances": []}, "empty"),
        ({"instances": [{"LOAN": 1, "JOB": "x"}] * 5}, "max_batch_size=4"),
        ({"instances": [{"LOAN": 1}]}, r"missing input\(s\) \['JOB'\]"),
        ({"instances": [{"LOAN": 1, "JOB": "", "X": 1}]}, r"unknown input\(s\) \['X'\]"),
        ({"instances": [{"LOAN": "12", "JOB": ""}]}, "expected a number"),
        ({"instances": [{"LOAN": True, "JOB": ""}]}, "expected a number"),
        ({"instances": [{"LOAN": None, "JOB": ""}]}, "null is not accepted"),
        ({"instances": [{"LOAN": 1, "JOB": 3}]}, "expected a string"),
        ({"instances": [{"LOAN": 1, "JOB": None}]}, "null is not accepted"),
        ({"instances": [[1, "x"]]}, "instance 0 must be a JSON object"),
        ({"instances": {"LOAN": 1}}, "must be a JSON list"),
        ({"inputs": {"LOAN": [1, 2], "JOB": ["a"]}}, "different lengths"),
        ({"inputs": [1, 2]}, "JSON object"),
        ({"instances": [{"LOAN": 1, "JOB": ""}], "signature_name": "nope"}, "signature 'nope' not found"),
        ({"instances": [{"LOAN": 1, "JOB": ""}], "signature_name": 3}, "non-empty string"),
    ],
)
def test_client_mistakes_are_named(payload, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse(payload)


def test_single_input_signature_accepts_bare_values_and_b64_strings():
    specs = {"serving_default": (InputSpec("text", "string", (None,)),)}
    request = parse_predict_request({"instances": ["a", {"b64": "aGk="}]}, specs, 8)
    assert list(request.columns["text"]) == ["a", b"hi"]


def test_nested_shapes_are_checked():
    specs = {"serving_default": (InputSpec("x", "float32", (None, 2)),)}
    assert parse_predict_request({"inputs": {"x": [[1, 2], [3, 4]]}}, specs, 8).columns["x"].shape == (2, 2)
    with pytest.raises(BadRequest, match="shape"):
        parse_predict_request({"inputs": {"x": [[1, 2, 3]]}}, specs, 8)
