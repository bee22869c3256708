"""The fast path of :func:`~modelops.serving.predict_request.decode_predict_request` for the common
body: row format (``{"instances": [{name: value, ...}, ...]}``), every input a scalar number, bool or
string, values of the right JSON types.

msgspec decodes such a body against a type built from the signature (one struct field per input,
unknown names refused), so the JSON types are checked while parsing, in C, with no dict per row and
no Python pass over the values. Anything it does not accept, or anything the checks after it do not
like, returns ``None`` and the standard parser takes the body, with its exact error messages: this
path answers only what the standard parser would answer the same way (tests/serving/
test_serving_request.py checks that on every body kind it has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from msgspec.structs import astuple

if TYPE_CHECKING:  # predict_request imports this module: no runtime import back
    from modelops.serving.predict_request import InputSpec

DEFAULT_SIGNATURE = "serving_default"
_FIELD_TYPE: dict[str, Any] = {"float": float | None, "int": int, "bool": bool, "string": str}


@dataclass(frozen=True)
class RowDecoder:
    specs: tuple[InputSpec, ...]
    decoder: msgspec.json.Decoder[Any]
    groups: tuple[tuple[Any, Any, tuple[int, ...]], ...]  # (kind, numpy dtype, indexes) per dtype

    def decode(self, body: bytes, max_batch_size: int) -> tuple[dict[str, np.ndarray], int] | None:
        """The default signature's columns and row count, or None: the standard parser decides."""
        text = body.replace(b"NaN", b"null")
        nan_tokens = len(text) - len(body)  # each NaN -> null adds one byte
        try:
            request = self.decoder.decode(text)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        instances = request.instances
        rows = len(instances)
        if not 0 < rows <= max_batch_size or request.signature_name != DEFAULT_SIGNATURE:
            return None
        transposed = list(zip(*map(astuple, instances), strict=True))  # one tuple per input
        columns: dict[str, np.ndarray] = {}
        nans = 0
        for kind, numpy_dtype, indexes in self.groups:
            values = [transposed[i] for i in indexes]
            if kind == "string":
                for index, column in zip(indexes, values, strict=True):
                    # "null" in a string may be a NaN token of the body that the replace above changed
                    if not all_valid_unicode(column) or "null" in "".join(column):
                        return None
                    columns[self.specs[index].name] = np.array(column, dtype=object)
                continue
            try:
                with np.errstate(over="ignore"):
                    matrix = np.array(values, dtype=numpy_dtype)
            except OverflowError:
                return None
            if kind == "float":
                if np.isinf(matrix).any():
                    return None
                nans += int(np.count_nonzero(np.isnan(matrix)))
            columns.update(zip((self.specs[i].name for i in indexes), matrix, strict=True))
        # every NaN token became a NaN of a float input (no string holds one, checked above), so more
        # NaNs than tokens means the client sent null, which the standard parser refuses by name
        if nans != nan_tokens:
            return None
        return {spec.name: columns[spec.name] for spec in self.specs}, rows


def all_valid_unicode(values: Sequence[str]) -> bool:
    """JSON allows lone surrogate escapes (``"\\ud800"``) that no UTF-8 tensor can hold."""
    joined = "".join(values)
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# by id() of a signature's specs tuple, as predict_request's dtype groups (a loaded model's specs
# live as long as the model)
_DECODERS: dict[int, tuple[tuple[InputSpec, ...], RowDecoder | None]] = {}


def row_decoder(inputs_by_signature: dict[str, tuple[InputSpec, ...]]) -> RowDecoder | None:
    """The fast decoder of the default signature, or None when one of its inputs is not a scalar."""
    specs = inputs_by_signature.get(DEFAULT_SIGNATURE)
    if specs is None:
        return None
    cached = _DECODERS.get(id(specs))
    if cached is not None and cached[0] is specs:
        return cached[1]
    if len(_DECODERS) >= 256:
        _DECODERS.clear()
    decoder = _build(specs)
    _DECODERS[id(specs)] = (specs, decoder)
    return decoder


def _build(specs: tuple[InputSpec, ...]) -> RowDecoder | None:
    if not specs or any(len(spec.shape) != 1 for spec in specs):
        return None
    # attribute names f0, f1...: input names need not be Python identifiers; the JSON key is the name.
    # astuple() gives a row's values in this order, the specs' order
    fields = [
        (f"f{i}", _FIELD_TYPE[spec.kind], msgspec.field(name=spec.name)) for i, spec in enumerate(specs)
    ]
    row = msgspec.defstruct("Row", fields, forbid_unknown_fields=True)
    body = msgspec.defstruct(
        "PredictRows",
        [("instances", list[row]), ("signature_name", str, DEFAULT_SIGNATURE)],  # type: ignore[valid-type]
        forbid_unknown_fields=True,
    )
    by_dtype: dict[str, list[int]] = {}
    for index, spec in enumerate(specs):
        by_dtype.setdefault(spec.dtype, []).append(index)
    groups = [(specs[i[0]].kind, specs[i[0]].numpy_dtype, tuple(i)) for i in by_dtype.values()]
    return RowDecoder(
        specs,
        msgspec.json.Decoder(body),
        tuple(groups),
    )
