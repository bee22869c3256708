"""Validation of TF Serving ``:predict`` bodies (no TensorFlow, no server)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelops.serving.errors import BadRequest
from modelops.serving.predict_request import (
    InputSpec,
    decode_predict_request,
    parse_json,
    parse_predict_request,
)
from modelops.serving.typed_rows import row_decoder

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


# -- decode_predict_request: the server's fast path must give the standard parser's answer ---------

WIDE = {
    "serving_default": (
        InputSpec("LOAN", "float32", (None,)),
        InputSpec("DEBTINC", "float32", (None,)),
        InputSpec("VALUE", "float64", (None,)),
        InputSpec("DELINQ", "int64", (None,)),
        InputSpec("NINQ", "int64", (None,)),
        InputSpec("FLAG", "bool", (None,)),
        InputSpec("OK", "bool", (None,)),
        InputSpec("JOB", "string", (None,)),
        InputSpec("XY", "float32", (None, 2)),
    )
}
ROW = (
    '"LOAN": %s, "DEBTINC": %s, "VALUE": 1.5, "DELINQ": %s, "NINQ": 0, "FLAG": %s, "OK": false, '
    '"JOB": %s, "XY": %s'
)


def wide_body(loan="1", debtinc="NaN", delinq="2", flag="true", job='"Mgr"', xy="[1, NaN]", rows=3) -> bytes:
    row = "{" + ROW % (loan, debtinc, delinq, flag, job, xy) + "}"
    return ('{"instances": [' + ", ".join([row] * rows) + "]}").encode()


def standard(body: bytes, specs=WIDE):
    return parse_predict_request(parse_json(body), specs, 16)


def assert_same_answer(body: bytes, specs=WIDE) -> None:
    try:
        expected = standard(body, specs)
    except BadRequest as error:
        with pytest.raises(BadRequest) as got:
            decode_predict_request(body, specs, 16)
        assert got.value.message == error.message
        return
    request = decode_predict_request(body, specs, 16)
    assert (request.signature_name, request.columnar, request.rows) == (
        expected.signature_name,
        expected.columnar,
        expected.rows,
    )
    assert request.columns.keys() == expected.columns.keys()
    for name, column in expected.columns.items():
        assert request.columns[name].dtype == column.dtype, name
        assert request.columns[name].shape == column.shape, name
        if column.dtype == object:
            assert list(request.columns[name]) == list(column), name
        else:
            np.testing.assert_array_equal(request.columns[name], column, err_msg=name)


@pytest.mark.parametrize(
    "body",
    [
        wide_body(),
        wide_body(debtinc="2.5", xy="[1, 2]"),  # no NaN: plain orjson
        wide_body(loan="NaN", debtinc="NaN", rows=1),
        wide_body(job='"NaN"'),  # a NaN inside a string stays a string
        wide_body(job='"a, NaN]"'),  # ... even where it looks like a token
        wide_body(job='"nullable"'),  # a "null" in the body: the standard parser decides
        wide_body(loan="null"),  # a client's null next to NaN tokens: refused as null
        wide_body(delinq="NaN"),  # NaN where an integer is expected
        wide_body(flag="NaN"),
        wide_body(job="NaN"),  # NaN where a string is expected
        wide_body(loan='"12"'),
        wide_body(loan="true"),
        wide_body(loan="1e39"),  # beyond float32
        wide_body(loan="Infinity"),
        wide_body(delinq="99999999999999999999999"),  # beyond int64
        wide_body(delinq="1.5"),
        wide_body(xy="[1, NaN, 3]"),
        wide_body(xy="[null, NaN]"),
        b'{"instances": [{"LOAN": NaN}], "signature_name": "NaN"}',
        b'{"inputs": {"LOAN": [NaN, 1], "DEBTINC": [2, NaN], "VALUE": [NaN, NaN], "DELINQ": [1, 2], '
        b'"NINQ": [0, 0], "FLAG": [true, false], "OK": [false, false], "JOB": ["", "NaN"], '
        b'"XY": [[NaN, 1], [2, 3]]}}',
        b'{"instances": [{"NaN": 1}]}',
        b'{"instances": [NaN]}',
        b"NaN",
        b'{"instances": [{"LOAN": NaN, "DEBTINC": 1, ',
    ],
)
def test_fast_path_gives_the_standard_answer(body):
    assert_same_answer(body)


def test_fast_path_counts_every_nan_token():
    request = decode_predict_request(wide_body(loan="NaN", debtinc="NaN", xy="[NaN, NaN]", rows=4), WIDE, 16)
    assert all(np.isnan(request.columns[name]).all() for name in ("LOAN", "DEBTINC", "XY"))
    assert request.columns["VALUE"].dtype == np.float64 and (request.columns["VALUE"] == 1.5).all()


def test_grouped_columns_are_independent_contiguous_arrays():
    request = decode_predict_request(wide_body(debtinc="7"), WIDE, 16)
    loan, debtinc = request.columns["LOAN"], request.columns["DEBTINC"]
    assert loan.flags.c_contiguous and debtinc.flags.c_contiguous
    assert list(loan) == [1, 1, 1] and list(debtinc) == [7, 7, 7]


# -- the typed row path (modelops.serving.typed_rows): scalar inputs only, the standard answer or none

SCALAR = {"serving_default": WIDE["serving_default"][:-1]}  # WIDE without its nested input
SCALAR_ROW = (
    '"LOAN": %s, "DEBTINC": %s, "VALUE": %s, "DELINQ": %s, "NINQ": 0, "FLAG": %s, "OK": false, "JOB": %s'
)


def scalar_body(
    loan="1", debtinc="NaN", value="1.5", delinq="2", flag="true", job='"Mgr"', rows=3, tail=""
) -> bytes:
    row = "{" + SCALAR_ROW % (loan, debtinc, value, delinq, flag, job) + tail + "}"
    return ('{"instances": [' + ", ".join([row] * rows) + "]}").encode()


def typed(body: bytes) -> bool:
    """Whether the typed path answered this body itself (else the standard parser did)."""
    decoder = row_decoder(SCALAR)
    assert decoder is not None
    return decoder.decode(body, 16) is not None


@pytest.mark.parametrize(
    "body",
    [
        scalar_body(),
        scalar_body(debtinc="2.5"),
        scalar_body(loan="NaN", debtinc="NaN", value="NaN", rows=1),
        scalar_body(loan="-0", value="100000000000000000000000", delinq="-3"),  # ints where floats go
        scalar_body(job='"\\u00e9t\\u00e9"', rows=16),
        scalar_body(tail=', "LOAN": 7'),  # a repeated key: the last one counts, as in every parser here
        b'{"signature_name": "serving_default", "instances": [{"LOAN": 1, "DEBTINC": NaN, "VALUE": 2, '
        b'"DELINQ": 0, "NINQ": 0, "FLAG": false, "OK": true, "JOB": ""}]}',
    ],
)
def test_typed_path_answers_well_formed_rows_as_the_standard_parser(body):
    assert typed(body)
    assert_same_answer(body, SCALAR)


@pytest.mark.parametrize(
    "body",
    [
        scalar_body(job='"NaN"'),  # a NaN inside a string stays a string
        scalar_body(job='"nullable"'),
        scalar_body(loan="null"),  # a client's null: refused by name
        scalar_body(loan="null", job='"NaN"'),  # ... even when a NaN in a string balances the count
        scalar_body(delinq="NaN"),
        scalar_body(flag="NaN"),
        scalar_body(flag="1"),
        scalar_body(job="NaN"),
        scalar_body(job="7"),
        scalar_body(job='{"b64": "TWdy"}'),  # base64 strings: the standard parser decodes them
        scalar_body(job='"\\ud800"'),  # a lone surrogate
        scalar_body(loan='"12"'),
        scalar_body(loan="true"),
        scalar_body(loan="1e39"),  # beyond float32
        scalar_body(loan="1e400"),
        scalar_body(loan="Infinity"),
        scalar_body(delinq="99999999999999999999999"),  # beyond int64
        scalar_body(delinq="1.5"),
        scalar_body(rows=17),  # more than max_batch_size
        scalar_body(rows=0),
        scalar_body(tail=', "EXTRA": 1'),
        scalar_body().replace(b'"NINQ": 0, ', b""),  # a missing input
        scalar_body()[:-3],  # truncated
        scalar_body() + b" x",
        b'{"instances": [{"LOAN": NaN}], "signature_name": "NaN"}',
        b'{"instances": [{"LOAN": 1}], "signature_name": "other"}',
        b'{"inputs": {"LOAN": [1]}}',
        b'{"instances": [1, 2]}',
        b"[]",
        b"",
    ],
)
def test_typed_path_leaves_everything_else_to_the_standard_parser(body):
    assert not typed(body)
    assert_same_answer(body, SCALAR)


def test_signatures_with_a_nested_input_have_no_typed_path():
    assert row_decoder(WIDE) is None
    assert row_decoder({"other": SCALAR["serving_default"]}) is None


TOKENS = {
    "float": st.sampled_from(["1", "-2.5", "0", "NaN", "null", "1e39", "Infinity", "true", '"3"', "1e-50"]),
    "int": st.sampled_from(["1", "-7", "NaN", "2.0", "99999999999999999999", "false", "null"]),
    "bool": st.sampled_from(["true", "false", "0", "NaN", "null"]),
    "string": st.sampled_from(
        ['""', '"Mgr"', '"NaN"', '"null"', '"x NaN, y"', "NaN", "null", "1", '"\\u00e9"']
    ),
}


@st.composite
def scalar_bodies(draw) -> bytes:
    specs = SCALAR["serving_default"]
    rows = []
    for _ in range(draw(st.integers(1, 4))):
        fields = [f'"{spec.name}": {draw(TOKENS[spec.kind])}' for spec in specs if draw(st.integers(0, 30))]
        rows.append("{" + ", ".join(fields) + "}")
    return ('{"instances": [' + ", ".join(rows) + "]}").encode()


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(scalar_bodies())
def test_typed_path_and_standard_parser_agree_on_generated_rows(body):
    assert_same_answer(body, SCALAR)
