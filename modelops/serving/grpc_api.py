"""TF Serving's gRPC API over the same loaded models, engine and metrics as the REST API.

Services and methods (the ``tensorflow-serving-api`` package's protos, as ``tensorflow_model_server``
serves them on its ``--port``, 8500 by default)::

    tensorflow.serving.PredictionService/Predict            inputs: name -> TensorProto
    tensorflow.serving.PredictionService/GetModelMetadata   metadata_field ["signature_def"]
    tensorflow.serving.ModelService/GetModelStatus          the versions' states

The gRPC server (:mod:`modelops.serving.grpc_server`, HTTP/2) runs on the REST server's event loop,
in the same process: one model runtime, and Predict calls go to the same :class:`InferenceEngine` as
REST ``:predict`` requests, so concurrent gRPC and REST requests are merged into the same signature
calls. :meth:`GrpcApi.call` is its handler: the method's path and the request's bytes in, a
:class:`GrpcReply` out. Every other method (Classify, Regress, ...) is UNIMPLEMENTED.

Input tensors are decoded without per-element Python work: numeric ``tensor_content`` with
``np.frombuffer`` reshaped by ``tensor_shape`` (or, when ``tensor_content`` is empty, the typed
``*_val`` field, as TF Serving accepts both, one value broadcast to the shape), strings from
``string_val`` in one ``np.array`` call. Outputs are ``TensorProto`` with ``tensor_content``.

``model_spec`` as in TF Serving: ``name`` must be the served model (else NOT_FOUND), ``version``
picks a loaded version (else NOT_FOUND), no version means the highest, ``version_label`` is refused
(no labels are defined: INVALID_ARGUMENT "Unrecognized servable version label"), an empty
``signature_name`` means ``serving_default``. A bad input is INVALID_ARGUMENT with a message naming
the input; an unexpected failure is INTERNAL; nothing stops the server.

The ``tensorflow_serving`` modules import TensorFlow's own ``*_pb2`` modules, hence TensorFlow: this
module is imported by the server process only after the models are loaded.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import ParseDict
from google.protobuf.message import DecodeError
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from modelops.serving.batching import InferenceEngine
from modelops.serving.grpc_server import GrpcReply
from modelops.serving.metrics import ServingMetrics
from modelops.serving.predict_request import InputSpec
from modelops.serving.repository import ModelRepository, ModelVersion

log = logging.getLogger(__name__)

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
DEFAULT_SIGNATURE = "serving_default"
SIGNATURE_DEF = "signature_def"
# TF dtype name (InputSpec.dtype) <-> DataType enum, numpy dtype and the typed TensorProto field.
_DTYPE_ENUM = {
    "float16": types_pb2.DT_HALF,
    "float32": types_pb2.DT_FLOAT,
    "float64": types_pb2.DT_DOUBLE,
    "int8": types_pb2.DT_INT8,
    "int16": types_pb2.DT_INT16,
    "int32": types_pb2.DT_INT32,
    "int64": types_pb2.DT_INT64,
    "uint8": types_pb2.DT_UINT8,
    "string": types_pb2.DT_STRING,
    "bool": types_pb2.DT_BOOL,
}
_NUMPY_OF_ENUM: dict[int, Any] = {
    types_pb2.DT_HALF: np.float16,
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_BOOL: np.bool_,
}
_ENUM_OF_NUMPY = {np.dtype(v): k for k, v in _NUMPY_OF_ENUM.items()}
_ITEMSIZE = {k: np.dtype(v).itemsize for k, v in _NUMPY_OF_ENUM.items()}
_VAL_FIELD = {
    types_pb2.DT_HALF: "half_val",
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}
_FLOATS = frozenset({types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF})
# The HTTP status TF Serving's REST gateway answers for a gRPC code (for the shared metrics).
_HTTP_OF_CODE = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def dtype_name(enum: int) -> str:
    return types_pb2.DataType.Name(enum)


class Refusal(Exception):
    """A call answered with a gRPC error status; the message says what to fix."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> Refusal:
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, message)


# ----------------------------------------------------------------------------- tensors <-> numpy


def tensor_to_array(
    name: str, tensor: tensor_pb2.TensorProto, spec: InputSpec, check_finite: bool = True
) -> np.ndarray:
    """The input ``name`` as a numpy array of the signature's dtype and shape, or :class:`Refusal`.

    ``check_finite=False`` leaves the refusal of infinite floats to the caller (:meth:`GrpcApi.decode_inputs`
    checks every float input in one NumPy call).
    """
    expected = _DTYPE_ENUM[spec.dtype]
    if tensor.dtype != expected:
        raise _invalid(
            f"input {name!r}: dtype {dtype_name(tensor.dtype)} given, the signature expects "
            f"{dtype_name(expected)}"
        )
    tensor_shape = tensor.tensor_shape
    dims = tensor_shape.dim
    content = tensor.tensor_content
    if content and len(dims) == 1 and len(spec.shape) == 1 and not tensor_shape.unknown_rank:
        # the common case, a column of numbers as bytes: no per-dimension Python work
        numpy_dtype = _NUMPY_OF_ENUM.get(expected)
        size = dims[0].size
        if numpy_dtype is not None and size >= 0 and len(content) == size * _ITEMSIZE[expected]:
            array = np.frombuffer(content, dtype=numpy_dtype)
            if check_finite and expected in _FLOATS:
                _refuse_infinite(name, array)
            return array
    if tensor_shape.unknown_rank:
        raise _invalid(f"input {name!r}: tensor_shape has unknown_rank; send the shape, e.g. [rows]")
    shape = tuple([d.size for d in tensor_shape.dim])
    if len(shape) != len(spec.shape) or (
        len(shape) > 1
        and any(want is not None and want != got for want, got in zip(spec.shape[1:], shape[1:], strict=True))
    ):
        raise _invalid(
            f"input {name!r}: shape {list(shape)} given, the signature expects "
            f"[{', '.join('-1' if d is None else str(d) for d in spec.shape)}]"
        )
    if any(d < 0 for d in shape):
        raise _invalid(f"input {name!r}: shape {list(shape)} has a negative dimension")
    size = math.prod(shape)
    if expected == types_pb2.DT_STRING:
        values = tensor.string_val
        if len(values) != size:
            raise _invalid(f"input {name!r}: {len(values)} string_val values for shape {list(shape)}")
        return np.array(values, dtype=object).reshape(shape)
    numpy_dtype = _NUMPY_OF_ENUM[expected]
    content = tensor.tensor_content
    if content:
        itemsize = np.dtype(numpy_dtype).itemsize
        if len(content) != size * itemsize:
            raise _invalid(
                f"input {name!r}: tensor_content holds {len(content)} bytes, shape {list(shape)} of "
                f"{dtype_name(expected)} needs {size * itemsize}"
            )
        array = np.frombuffer(content, dtype=numpy_dtype).reshape(shape)
    else:
        array = _typed_values(name, tensor, expected, numpy_dtype, size).reshape(shape)
    if check_finite and expected in _FLOATS:
        _refuse_infinite(name, array)
    return array


def _refuse_infinite(name: str, array: np.ndarray) -> None:
    if np.isinf(array).any():
        index = int(np.flatnonzero(np.isinf(array.reshape(-1)))[0])
        raise _invalid(
            f"input {name!r}, value {index}: infinite values are not accepted; send a finite number, "
            "or NaN for a missing value"
        )


def _typed_values(name: str, tensor: tensor_pb2.TensorProto, enum: int, numpy_dtype: Any, size: int) -> Any:
    field = _VAL_FIELD[enum]
    values = getattr(tensor, field)
    count = len(values)
    if enum == types_pb2.DT_HALF:  # half_val holds the float16 bit patterns as int32
        array = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        array = np.array(values, dtype=numpy_dtype)
    if count == size:
        return array
    if count == 1 and size > 0:  # one value fills the shape, as TensorFlow's Tensor::FromProto does
        return np.full(size, array[0], dtype=numpy_dtype)
    if count == 0:
        raise _invalid(
            f"input {name!r}: no values (tensor_content and {field} are both empty) for a tensor of "
            f"{size} element(s)"
        )
    raise _invalid(f"input {name!r}: {count} {field} values for a tensor of {size} element(s)")


def array_to_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A numpy array as a TensorProto: ``tensor_content`` for numbers, ``string_val`` for strings."""
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in array.shape]
    )
    if array.dtype == object or array.dtype.kind in "SU":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)
    enum = _ENUM_OF_NUMPY.get(array.dtype)
    if enum is None:
        raise TypeError(f"output dtype {array.dtype} has no TensorProto mapping here")
    return tensor_pb2.TensorProto(
        dtype=enum, tensor_shape=shape, tensor_content=np.ascontiguousarray(array).tobytes()
    )


# ---------------------------------------------------------------------------------- the services


@dataclass
class _Call:
    version: str = ""


class GrpcApi:
    """What both services share: the repository, the engine, the metrics and the request limits."""

    def __init__(
        self,
        repository: ModelRepository,
        engine: InferenceEngine,
        metrics: ServingMetrics,
        max_batch_size: int,
    ) -> None:
        self.repository = repository
        self.engine = engine
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self._signature_maps: dict[int, get_model_metadata_pb2.SignatureDefMap] = {}
        for number, loaded in repository.versions.items():
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for name, definition in loaded.signature_def.items():
                ParseDict(definition, signature_map.signature_def[name])
            self._signature_maps[number] = signature_map
        self._methods = {
            f"/{PREDICTION_SERVICE}/Predict": _Method(
                "Predict", "predict", predict_pb2.PredictRequest, self.predict
            ),
            f"/{PREDICTION_SERVICE}/GetModelMetadata": _Method(
                "GetModelMetadata", "metadata", get_model_metadata_pb2.GetModelMetadataRequest, self.metadata
            ),
            f"/{MODEL_SERVICE}/GetModelStatus": _Method(
                "GetModelStatus", "status", get_model_status_pb2.GetModelStatusRequest, self.status
            ),
        }

    # -- model_spec

    def version_of(self, spec: model_pb2.ModelSpec, call: _Call) -> ModelVersion:
        repository = self.repository
        if spec.name != repository.model_name:
            raise Refusal(
                grpc.StatusCode.NOT_FOUND,
                f"model {spec.name!r} is not served here; this server serves {repository.model_name!r}"
                if spec.name
                else f"model_spec.name is empty: set it to {repository.model_name!r}",
            )
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            raise _invalid(
                f"Unrecognized servable version label: {spec.version_label!r} (no labels are defined "
                "here): set model_spec.version to a loaded version, or leave both unset for the highest"
            )
        if choice == "version":
            number = spec.version.value
            loaded = repository.versions.get(number)
            if loaded is None:
                raise Refusal(
                    grpc.StatusCode.NOT_FOUND,
                    f"model {repository.model_name!r} has no version {number} loaded; loaded versions: "
                    f"{sorted(repository.versions, reverse=True)}",
                )
        else:
            loaded = repository.default_version
        call.version = str(loaded.version)
        return loaded

    def answer_spec(self, loaded: ModelVersion, signature_name: str) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.repository.model_name, signature_name=signature_name)
        spec.version.value = loaded.version
        return spec

    # -- the methods

    async def predict(self, request: predict_pb2.PredictRequest, call: _Call) -> predict_pb2.PredictResponse:
        engine = self.engine
        engine.arrivals.count += 1  # like REST: a batch in the making waits for requests being decoded
        handed_over = False
        try:
            loaded = self.version_of(request.model_spec, call)
            signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            runner = loaded.signatures.get(signature_name)
            if runner is None:
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Serving signature name: {signature_name!r} not found in signature def; "
                    f"available: {sorted(loaded.signatures)}",
                )
            columns, rows = self.decode_inputs(request, runner.inputs)
            wanted = list(request.output_filter)
            unknown = sorted(set(wanted) - set(runner.outputs))
            if unknown:
                raise _invalid(
                    f"output_filter names unknown output(s) {unknown}; the signature's outputs: "
                    f"{list(runner.outputs)}"
                )
            engine.arrivals.count -= 1
            handed_over = True
            try:
                outputs = await engine.predict(runner, columns, rows)
            except Exception as exc:
                if type(exc).__name__ == "InvalidArgumentError":
                    raise _invalid(f"the model rejected the input: {getattr(exc, 'message', exc)}") from None
                raise
        finally:
            if not handed_over:
                engine.arrivals.count -= 1
        response = predict_pb2.PredictResponse(model_spec=self.answer_spec(loaded, signature_name))
        for name in wanted or outputs:
            response.outputs[name].CopyFrom(array_to_tensor(outputs[name]))
        return response

    def decode_inputs(
        self, request: predict_pb2.PredictRequest, specs: tuple[InputSpec, ...]
    ) -> tuple[dict[str, np.ndarray], int]:
        given = request.inputs
        expected = {spec.name for spec in specs}
        if set(given) != expected:
            missing = sorted(expected - set(given))
            unknown = sorted(set(given) - expected)
            parts = ([f"missing input(s) {missing}"] if missing else []) + (
                [f"unknown input(s) {unknown}"] if unknown else []
            )
            raise _invalid(f"{' and '.join(parts)}; the signature expects exactly {sorted(expected)}")
        columns: dict[str, np.ndarray] = {}
        floats: list[tuple[str, np.ndarray]] = []
        rows: int | None = None
        first = ""
        for spec in specs:
            array = tensor_to_array(spec.name, given[spec.name], spec, check_finite=False)
            if array.dtype.kind == "f":
                floats.append((spec.name, array))
            count = array.shape[0]
            if rows is None:
                rows, first = count, spec.name
                if not 1 <= count <= self.max_batch_size:
                    raise _invalid(
                        f"input {spec.name!r}: {count} rows; send between 1 and "
                        f"max_batch_size={self.max_batch_size} rows per request"
                    )
            elif count != rows:
                raise _invalid(
                    f"input {spec.name!r} has {count} rows, input {first!r} has {rows}: every input needs "
                    "one value per record"
                )
            columns[spec.name] = array
        assert rows is not None
        if floats and np.isinf(np.concatenate([a.reshape(-1) for _, a in floats])).any():
            for name, array in floats:  # which one: the message names the input and the value
                _refuse_infinite(name, array)
        return columns, rows

    async def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, call: _Call
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        loaded = self.version_of(request.model_spec, call)
        fields = list(request.metadata_field)
        if not fields:
            raise _invalid('metadata_field is empty: ask for ["signature_def"]')
        unsupported = [f for f in fields if f != SIGNATURE_DEF]
        if unsupported:
            raise _invalid(f"Metadata field(s) {unsupported} not supported; supported: [{SIGNATURE_DEF!r}]")
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=self.answer_spec(loaded, request.model_spec.signature_name)
        )
        response.metadata[SIGNATURE_DEF].Pack(self._signature_maps[loaded.version])
        return response

    async def status(
        self, request: get_model_status_pb2.GetModelStatusRequest, call: _Call
    ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        pinned = spec.WhichOneof("version_choice") is not None
        loaded = self.version_of(spec, call)
        if not pinned:
            call.version = ""  # every version: as the REST status of /v1/models/<m>
        versions = (
            [loaded]
            if pinned
            else [self.repository.versions[v] for v in sorted(self.repository.versions, reverse=True)]
        )
        response = get_model_status_pb2.GetModelStatusResponse()
        for served in versions:
            entry = response.model_version_status.add()
            entry.version = served.version
            entry.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            entry.status.error_code = 0  # tensorflow.error.OK
            entry.status.error_message = ""
        return response

    # -- the envelope every call goes through: routing, metrics, refusals, unexpected errors

    async def call(self, path: str, message: bytes) -> GrpcReply:
        """The answer to one call of ``path`` (``/package.Service/Method``) with the request's bytes."""
        method = self._methods.get(path)
        if method is None:
            name = path.rpartition("/")[2] or path
            self.metrics.observe_grpc("", "other", "other", "UNIMPLEMENTED", 501, 0.0)
            return _reply_for(
                Refusal(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{name} is not served by this server: use PredictionService/Predict (and "
                    "GetModelMetadata, ModelService/GetModelStatus)",
                )
            )
        started = time.perf_counter()
        call = _Call()
        try:
            try:
                request = method.request_type.FromString(message)
            except DecodeError as exc:
                raise _invalid(
                    f"the request is not a valid {method.request_type.DESCRIPTOR.name}: {exc}"
                ) from None
            reply = GrpcReply(0, (await method.handler(request, call)).SerializeToString())
            code = grpc.StatusCode.OK
        except Refusal as refusal:
            reply, code = _reply_for(refusal), refusal.code
        except Exception as exc:  # never let one call take the server down
            log.exception("gRPC %s failed", method.name)
            code = grpc.StatusCode.INTERNAL
            reply = GrpcReply(code.value[0], message=f"internal server error: {type(exc).__name__}: {exc}")
        self.metrics.observe_grpc(
            call.version, method.name, method.api, code.name, _HTTP_OF_CODE.get(code, 500),
            time.perf_counter() - started,
        )  # fmt: skip
        return reply


@dataclass(frozen=True)
class _Method:
    name: str  # the metrics' method label
    api: str  # the REST api label of the shared metrics family
    request_type: Any
    handler: Callable[[Any, _Call], Awaitable[Any]]


def _reply_for(refusal: Refusal) -> GrpcReply:
    return GrpcReply(refusal.code.value[0], message=refusal.message)
