"""Turn a TF Serving ``:predict`` body into validated, typed input columns.

Both TF Serving request formats are accepted: row format ``{"instances": [{name: value}, ...]}``
and columnar format ``{"inputs": {name: [values]}}``, with an optional ``signature_name``.
Validation follows TF Serving's JSON rules and is driven by the signature, never by a data set:

- a missing number travels as the JSON token ``NaN`` (accepted for float inputs);
- a missing category travels as ``""`` (just a string);
- ``Infinity`` / ``-Infinity`` and numbers beyond float32 range are rejected;
- ``null`` is rejected, as TF Serving does, so a client that works here works against the real
  ``tensorflow/serving`` too; the message says to send ``NaN`` or ``""`` instead;
- every input must be present, unknown names are rejected, batches must hold 1..max_batch_size rows.

:func:`decode_predict_request` is the server's entry point, tuned because it runs once per request:

- a body with ``NaN`` tokens (most credit records have a missing number) is parsed by orjson after
  ``NaN`` -> ``null``, and each ``null`` a float column receives becomes NaN; the answer is kept only
  when every ``NaN`` in the body is accounted for that way (a ``NaN`` inside a string, or a ``null``
  the client sent, sends the body through the standard parser instead, with its exact messages);
- the scalar inputs of one dtype are converted to NumPy together, one array per dtype rather than
  one per input, which is what a single-record request spends most of its time on.

This module imports no TensorFlow, so it is cheap to test and to reuse in clients.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import numpy as np
import orjson

from modelops.serving.errors import BadRequest
from modelops.serving.typed_rows import all_valid_unicode, row_decoder

Kind = Literal["float", "int", "string", "bool"]
_NUMPY_DTYPES: dict[str, Any] = {
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "string": np.object_,
    "bool": np.bool_,
}
_KIND_BY_DTYPE: dict[str, Kind] = {
    "float16": "float",
    "float32": "float",
    "float64": "float",
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "uint8": "int",
    "string": "string",
    "bool": "bool",
}
_EXPECTED = {
    "float": "a number (NaN for a missing value)",
    "int": "an integer",
    "string": 'a string ("" for a missing category)',
    "bool": "true or false",
}
_ALLOWED_TYPES: dict[Kind, frozenset[type]] = {
    "float": frozenset({float, int}),
    "int": frozenset({int}),
    "string": frozenset({str}),
    "bool": frozenset({bool}),
}
SUPPORTED_DTYPES = tuple(_NUMPY_DTYPES)


@dataclass(frozen=True)
class InputSpec:
    """One named input of a signature: TF dtype name (``float32``, ``string``...) and shape."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]  # shape[0] is the batch dimension

    @property
    def kind(self) -> Kind:
        return _KIND_BY_DTYPE[self.dtype]

    @property
    def numpy_dtype(self) -> Any:
        return _NUMPY_DTYPES[self.dtype]


@dataclass(frozen=True)
class PredictRequest:
    signature_name: str
    columnar: bool  # True: answer with "outputs", False: with "predictions"
    columns: dict[str, np.ndarray]
    rows: int


def decode_predict_request(
    body: bytes, inputs_by_signature: dict[str, tuple[InputSpec, ...]], max_batch_size: int
) -> PredictRequest:
    """Parse and validate a ``:predict`` body; the same answer as
    ``parse_predict_request(parse_json(body), ...)``, faster for well-formed row bodies and for
    bodies with ``NaN`` tokens."""
    typed = row_decoder(inputs_by_signature)
    if typed is not None:
        decoded = typed.decode(body, max_batch_size)
        if decoded is not None:
            return PredictRequest("serving_default", False, *decoded)
    nan_tokens = body.count(b"NaN")
    if nan_tokens and b"null" not in body and b"Infinity" not in body:
        try:
            payload = orjson.loads(body.replace(b"NaN", b"null"))
            request, nulls_read_as_nan = _parse(payload, inputs_by_signature, max_batch_size, True)
        except (orjson.JSONDecodeError, BadRequest):
            pass  # the standard parser below gives the exact message
        else:
            if nulls_read_as_nan == nan_tokens:
                return request
    return parse_predict_request(parse_json(body), inputs_by_signature, max_batch_size)


def parse_json(body: bytes) -> Any:
    """orjson for speed; the stdlib parser only when the body carries NaN/Infinity tokens."""
    if not body.strip():
        raise BadRequest("the request body is empty: send a JSON object with 'instances' or 'inputs'")
    if b"NaN" not in body and b"Infinity" not in body:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # fall through for the stdlib's error message (or a token orjson does not know)
    try:
        return json.loads(body, parse_constant=_parse_constant)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest("the request body is nested too deeply to be a predict request") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def _parse_constant(token: str) -> float:
    if token == "NaN":
        return math.nan
    raise BadRequest(f"{token} is not an accepted value: send finite numbers, or NaN for a missing value")


def parse_predict_request(
    payload: Any,
    inputs_by_signature: dict[str, tuple[InputSpec, ...]],
    max_batch_size: int,
    default_signature: str = "serving_default",
) -> PredictRequest:
    """Validate a decoded ``:predict`` body against the signature it names."""
    return _parse(payload, inputs_by_signature, max_batch_size, False, default_signature)[0]


def _parse(
    payload: Any,
    inputs_by_signature: dict[str, tuple[InputSpec, ...]],
    max_batch_size: int,
    nulls_as_nan: bool,
    default_signature: str = "serving_default",
) -> tuple[PredictRequest, int]:
    """The request, and with ``nulls_as_nan`` how many ``null`` values float inputs read as NaN."""
    if not isinstance(payload, dict):
        raise BadRequest(
            f"the request body must be a JSON object with 'instances' or 'inputs', got {_json_type(payload)}"
        )
    unknown = set(payload) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise BadRequest(
            f"unknown field(s) {sorted(unknown)} in the request: use 'instances' (row format) or "
            "'inputs' (columnar format), and optionally 'signature_name'"
        )
    signature_name = payload.get("signature_name", default_signature)
    if not isinstance(signature_name, str) or not signature_name:
        raise BadRequest(f"'signature_name' must be a non-empty string, got {signature_name!r}")
    specs = inputs_by_signature.get(signature_name)
    if specs is None:
        raise BadRequest(
            f"signature {signature_name!r} not found in the model; available: {sorted(inputs_by_signature)}"
        )
    has_instances, has_inputs = "instances" in payload, "inputs" in payload
    if has_instances == has_inputs:
        raise BadRequest(
            "the request must have exactly one of 'instances' (row format) or 'inputs' (columnar)"
        )
    if has_instances:
        raw_columns, rows = _columns_from_instances(payload["instances"], specs, max_batch_size)
    else:
        raw_columns, rows = _columns_from_inputs(payload["inputs"], specs, max_batch_size)
    columns, nulls_read_as_nan = _scalar_columns_by_dtype(specs, raw_columns, nulls_as_nan)
    for spec in specs:
        if spec.name not in columns:
            column = columns[spec.name] = _to_array(spec, raw_columns[spec.name], rows, nulls_as_nan)
            if nulls_as_nan and spec.kind == "float":
                nulls_read_as_nan += int(np.count_nonzero(np.isnan(column)))
    return PredictRequest(signature_name, has_inputs, {s.name: columns[s.name] for s in specs}, rows), (
        nulls_read_as_nan
    )


def _check_batch(values: Any, what: str, max_batch_size: int) -> int:
    if not isinstance(values, list):
        raise BadRequest(f"{what} must be a JSON list, got {_json_type(values)}")
    if not values:
        raise BadRequest(f"{what} is empty: send at least one record")
    if len(values) > max_batch_size:
        raise BadRequest(
            f"{what} holds {len(values)} records, more than max_batch_size={max_batch_size}: "
            "split the request into smaller batches"
        )
    return len(values)


def _columns_from_instances(
    instances: Any, specs: tuple[InputSpec, ...], max_batch_size: int
) -> tuple[dict[str, Sequence[Any]], int]:
    rows = _check_batch(instances, "'instances'", max_batch_size)
    names = [spec.name for spec in specs]
    if len(specs) == 1 and not all(isinstance(i, dict) and names[0] in i for i in instances):
        return {names[0]: instances}, rows  # single-input signature: bare values, as TF Serving allows
    if len(names) > 1 and set(map(type, instances)) == {dict} and set(map(len, instances)) == {len(names)}:
        try:  # every instance has as many keys as the signature has inputs: all present means exact
            rows_of_values = list(map(itemgetter(*names), instances))
        except KeyError:
            pass
        else:  # transposed into one tuple per input, without a Python loop per value
            return dict(zip(names, zip(*rows_of_values, strict=True), strict=True)), rows
    expected = set(names)
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise BadRequest(
                f"instance {index} must be a JSON object of input name to value, got {_json_type(instance)}"
            )
        if instance.keys() != expected:
            _explain_keys(f"instance {index}", instance.keys(), expected)
    return {name: [instance[name] for instance in instances] for name in names}, rows


def _columns_from_inputs(
    inputs: Any, specs: tuple[InputSpec, ...], max_batch_size: int
) -> tuple[dict[str, Sequence[Any]], int]:
    if len(specs) == 1 and isinstance(inputs, list):
        inputs = {specs[0].name: inputs}
    if not isinstance(inputs, dict):
        raise BadRequest(
            f"'inputs' must be a JSON object of input name to list of values, got {_json_type(inputs)}"
        )
    expected = {spec.name for spec in specs}
    if inputs.keys() != expected:
        _explain_keys("'inputs'", inputs.keys(), expected)
    rows: int | None = None
    for spec in specs:
        count = _check_batch(inputs[spec.name], f"'inputs.{spec.name}'", max_batch_size)
        if rows is not None and count != rows:
            raise BadRequest(
                f"'inputs' columns have different lengths ({spec.name} has {count}, earlier columns {rows}): "
                "every column needs one value per record"
            )
        rows = count
    assert rows is not None
    return {spec.name: inputs[spec.name] for spec in specs}, rows


def _explain_keys(where: str, got: Any, expected: set[str]) -> None:
    missing = sorted(expected - set(got))
    unknown = sorted(set(got) - expected)
    parts = []
    if missing:
        parts.append(f"missing input(s) {missing}")
    if unknown:
        parts.append(f"unknown input(s) {unknown}")
    raise BadRequest(
        f"{where}: {' and '.join(parts)}; the signature expects exactly {sorted(expected)} "
        '(send NaN for a missing number and "" for a missing category)'
    )


def _scalar_columns_by_dtype(
    specs: tuple[InputSpec, ...], raw_columns: dict[str, Sequence[Any]], nulls_as_nan: bool
) -> tuple[dict[str, np.ndarray], int]:
    """Every scalar number/bool input, converted with one NumPy call per dtype, and how many nulls
    became NaN (orjson never yields NaN itself, so with ``nulls_as_nan`` every NaN was a null).
    A group whose values are not all valid is left out, for :func:`_scalar_column` to explain."""
    nulls_read_as_nan = 0
    columns: dict[str, np.ndarray] = {}
    for kind, numpy_dtype, names in _dtype_groups(specs):
        values = [raw_columns[name] for name in names]
        if not set(map(type, chain.from_iterable(values))) <= _allowed_types(kind, nulls_as_nan):
            continue
        try:
            with np.errstate(over="ignore"):
                matrix = np.array(values, dtype=numpy_dtype)
        except OverflowError:
            continue
        if kind == "float":
            if np.isinf(matrix).any():
                continue
            if nulls_as_nan:
                nulls_read_as_nan += int(np.count_nonzero(np.isnan(matrix)))
        columns.update(zip(names, matrix, strict=True))
    return columns, nulls_read_as_nan


_DtypeGroups = tuple[tuple[Kind, Any, tuple[str, ...]], ...]
# by id() of a signature's specs tuple (a loaded model's lives as long as the model): hashing the
# specs themselves on every request would cost more than the grouping saves
_GROUPS_BY_SPECS: dict[int, tuple[tuple[InputSpec, ...], _DtypeGroups]] = {}


def _dtype_groups(specs: tuple[InputSpec, ...]) -> _DtypeGroups:
    """The scalar number/bool inputs of a signature grouped by dtype (groups of two or more)."""
    cached = _GROUPS_BY_SPECS.get(id(specs))
    if cached is not None and cached[0] is specs:
        return cached[1]
    if len(_GROUPS_BY_SPECS) >= 256:
        _GROUPS_BY_SPECS.clear()
    groups: dict[str, list[InputSpec]] = {}
    for spec in specs:
        if len(spec.shape) == 1 and spec.kind != "string":
            groups.setdefault(spec.dtype, []).append(spec)
    plan = tuple(
        (group[0].kind, group[0].numpy_dtype, tuple(spec.name for spec in group))
        for group in groups.values()
        if len(group) > 1
    )
    _GROUPS_BY_SPECS[id(specs)] = (specs, plan)
    return plan


def _allowed_types(kind: Kind, nulls_as_nan: bool) -> frozenset[type]:
    return _ALLOWED_TYPES[kind] | {type(None)} if nulls_as_nan and kind == "float" else _ALLOWED_TYPES[kind]


def _to_array(spec: InputSpec, values: Sequence[Any], rows: int, nulls_as_nan: bool = False) -> np.ndarray:
    if len(spec.shape) == 1:
        return _scalar_column(spec, values, nulls_as_nan)
    return _nested_column(spec, values, rows)


def _scalar_column(spec: InputSpec, values: Sequence[Any], nulls_as_nan: bool = False) -> np.ndarray:
    kind = spec.kind
    types = set(map(type, values))
    if not types <= _allowed_types(kind, nulls_as_nan):
        if kind == "string" and dict in types:
            values = [_decode_b64(spec, i, v) if isinstance(v, dict) else v for i, v in enumerate(values)]
            types = {type(v) for v in values}
        if not types <= _ALLOWED_TYPES[kind] | {bytes}:
            _raise_first_bad_value(spec, values)
    if kind == "string":
        _check_utf8(spec, values)
        return np.array(values, dtype=object)
    try:
        with np.errstate(over="ignore"):  # beyond-range floats become inf and are rejected below
            array = np.asarray(values, dtype=spec.numpy_dtype)
    except OverflowError:
        raise BadRequest(f"input {spec.name!r}: an integer is out of range for {spec.dtype}") from None
    if kind == "float" and np.isinf(array).any():
        index = int(np.flatnonzero(np.isinf(array))[0])
        raise BadRequest(
            f"input {spec.name!r}, record {index}: {values[index]!r} is infinite or beyond {spec.dtype} "
            "range; "
            "send a finite number, or NaN for a missing value"
        )
    return array


def _check_utf8(spec: InputSpec, values: Sequence[Any]) -> None:
    """JSON allows lone surrogate escapes (``"\\ud800"``) that no UTF-8 tensor can hold; refuse them here,
    before batching, so one bad record cannot fail the other requests of a merged batch."""
    try:
        if all_valid_unicode(values):  # all strings (base64 values are bytes by now: TypeError)
            return
    except TypeError:
        pass
    for index, value in enumerate(values):
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest(
                    f"input {spec.name!r}, record {index}: the string is not valid Unicode (a lone "
                    "surrogate escape such as \\ud800); send UTF-8 text"
                ) from None


def _nested_column(spec: InputSpec, values: Sequence[Any], rows: int) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=spec.numpy_dtype)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(
            f"input {spec.name!r}: values must be nested lists of {_EXPECTED[spec.kind]} with shape "
            f"{_shape_text(spec.shape)}"
        ) from None
    expected = spec.shape[1:]
    if array.ndim != len(spec.shape) or any(
        e is not None and e != g for e, g in zip(expected, array.shape[1:], strict=True)
    ):
        raise BadRequest(
            f"input {spec.name!r}: got shape {list(array.shape)}, "
            f"the signature expects {_shape_text(spec.shape)}"
        )
    if spec.kind == "float" and np.isinf(array).any():
        raise BadRequest(
            f"input {spec.name!r}: infinite values are not accepted; send NaN for a missing value"
        )
    return array


def _decode_b64(spec: InputSpec, index: int, value: dict[str, Any]) -> bytes:
    if set(value) != {"b64"} or not isinstance(value["b64"], str):
        raise BadRequest(
            f'input {spec.name!r}, record {index}: an object value must be {{"b64": "<base64>"}}'
        )
    try:
        return base64.b64decode(value["b64"], validate=True)
    except binascii.Error:
        raise BadRequest(f"input {spec.name!r}, record {index}: 'b64' is not valid base64") from None


def _raise_first_bad_value(spec: InputSpec, values: Sequence[Any]) -> None:
    allowed = _ALLOWED_TYPES[spec.kind] | ({bytes} if spec.kind == "string" else set())
    for index, value in enumerate(values):
        if type(value) not in allowed:
            hint = ""
            if value is None:
                hint = (
                    ' (null is not accepted, as in TF Serving: send NaN for a missing number, ""'
                    " for a missing category)"
                )
            raise BadRequest(
                f"input {spec.name!r}, record {index}: expected {_EXPECTED[spec.kind]}, got "
                f"{_json_type(value)} {_short(value)}{hint}"
            )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"
