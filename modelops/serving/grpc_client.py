"""The client of TF Serving's gRPC API (this project's server or ``tensorflow_model_server``).

The gRPC counterpart of :mod:`modelops.serving.rest_client`, with the same answers and errors, so
callers (the scoring client: ``modelops traffic --protocol grpc``, the benchmark, the tests) can use
either: ``status`` gives the REST status entries (``[{"version": "3", "state": "AVAILABLE", ...}]``),
``metadata`` the ``SignatureDefMap``, ``signature_inputs`` input name -> TF dtype name
(``DT_FLOAT``...), ``predict_instances`` a :class:`~modelops.serving.rest_client.Prediction` (one
finite float per record, and the version that answered, from the response's ``model_spec``).

Records go in as TensorProtos, one per input: numbers as ``tensor_content`` (NaN for a missing
number), strings as ``string_val`` (``""`` for a missing category). Every failure is a
:class:`~modelops.serving.rest_client.ServingClientError` with the REST kinds: ``connect``
(UNAVAILABLE), ``timeout`` (DEADLINE_EXCEEDED), ``http_4xx``/``http_5xx`` for the other codes by the
HTTP status TF Serving's REST gateway maps them to (``status`` holds that HTTP status), and
``bad_response`` for an answer without usable scores.

A target is ``host:port`` or ``grpc://host:port``. The ``tensorflow_serving`` protos import
TensorFlow's own ``*_pb2`` modules, so this module needs TensorFlow (tensorflow-cpu) and
``tensorflow-serving-api`` (installed by scripts/bootstrap.sh; not in the slim client image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from modelops.serving.rest_client import (
    DEFAULT_SIGNATURE,
    DEFAULT_TIMEOUT,
    Prediction,
    ServingClientError,
)

SIGNATURE_DEF = "signature_def"
_STATE_NAMES = {value: name for name, value in get_model_status_pb2.ModelVersionStatus.State.items()}
_CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
}
_SERVER_CODES = {
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.ABORTED: 409,
}


def grpc_target(url: str) -> str:
    """``grpc://host:port`` or ``host:port`` -> ``host:port`` (what a channel connects to)."""
    target = url.strip().removeprefix("grpc://").rstrip("/")
    if "://" in target or not target.rpartition(":")[2].isdigit():
        raise ValueError(f"gRPC target {url!r} must be host:port or grpc://host:port, e.g. 127.0.0.1:8500")
    return target


@dataclass(frozen=True)
class GrpcEndpoint:
    """Where calls go; ``base`` names it in error messages (as the REST transports' ``base``)."""

    target: str
    timeout: float = DEFAULT_TIMEOUT

    @property
    def base(self) -> str:
        return f"grpc://{self.target}"


# ----------------------------------------------------------------------------- requests and answers


def model_spec(model: str, version: str | int | None = None, signature: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=model, signature_name=signature)
    if version is not None:
        spec.version.value = int(version)
    return spec


def status_request(
    model: str, version: str | int | None = None
) -> get_model_status_pb2.GetModelStatusRequest:
    return get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec(model, version))


def metadata_request(
    model: str, version: str | int | None = None
) -> get_model_metadata_pb2.GetModelMetadataRequest:
    return get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_spec(model, version), metadata_field=[SIGNATURE_DEF]
    )


def read_status(response: get_model_status_pb2.GetModelStatusResponse) -> list[dict[str, Any]]:
    """The REST API's ``model_version_status`` entries from a GetModelStatus answer."""
    return [
        {
            "version": str(entry.version),
            "state": _STATE_NAMES.get(entry.state, str(entry.state)),
            "status": {
                "error_code": "OK" if entry.status.error_code == 0 else str(entry.status.error_code),
                "error_message": entry.status.error_message,
            },
        }
        for entry in response.model_version_status
    ]


def read_signature_map(
    response: get_model_metadata_pb2.GetModelMetadataResponse, what: str
) -> get_model_metadata_pb2.SignatureDefMap:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    packed = response.metadata.get(SIGNATURE_DEF)
    if packed is None or not packed.Unpack(signature_map):
        raise ServingClientError(f"{what} answered no signature_def metadata", kind="bad_response")
    return signature_map


def signature_inputs_of(
    signature_map: get_model_metadata_pb2.SignatureDefMap, model: str, signature: str, what: str
) -> dict[str, str]:
    if signature not in signature_map.signature_def:
        raise ServingClientError(
            f"model {model!r} ({what}) has no signature {signature!r}; it has "
            f"{sorted(signature_map.signature_def)}",
            kind="signature",
        )
    inputs = signature_map.signature_def[signature].inputs
    return {name: types_pb2.DataType.Name(info.dtype) for name, info in inputs.items()}


def _numpy_dtype(dtype: str) -> Any:
    return {
        "DT_FLOAT": np.float32,
        "DT_DOUBLE": np.float64,
        "DT_HALF": np.float16,
        "DT_INT8": np.int8,
        "DT_INT16": np.int16,
        "DT_INT32": np.int32,
        "DT_INT64": np.int64,
        "DT_UINT8": np.uint8,
        "DT_BOOL": np.bool_,
    }[dtype]


def column_tensor(values: list[Any], dtype: str) -> tensor_pb2.TensorProto:
    """One input column as a TensorProto of shape [rows]: numbers in ``tensor_content``, strings in
    ``string_val`` (``None`` becomes NaN / ``""``)."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    enum = types_pb2.DataType.Value(dtype)
    if dtype == "DT_STRING":
        encoded = [
            b"" if v is None else v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values
        ]
        return tensor_pb2.TensorProto(dtype=enum, tensor_shape=shape, string_val=encoded)
    numpy_dtype = _numpy_dtype(dtype)
    if np.dtype(numpy_dtype).kind == "f":
        values = [math.nan if v is None else v for v in values]
    try:
        array = np.asarray(values, dtype=numpy_dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ServingClientError(f"a value cannot be sent as {dtype}: {exc}", kind="bad_record") from None
    return tensor_pb2.TensorProto(dtype=enum, tensor_shape=shape, tensor_content=array.tobytes())


def predict_request(
    model: str,
    instances: list[Mapping[str, Any]],
    inputs: Mapping[str, str],
    version: str | int | None = None,
    signature: str = DEFAULT_SIGNATURE,
) -> predict_pb2.PredictRequest:
    """A PredictRequest holding the signature's inputs (``inputs``: name -> TF dtype) of ``instances``."""
    request = predict_pb2.PredictRequest(model_spec=model_spec(model, version, signature))
    for name, dtype in inputs.items():
        request.inputs[name].CopyFrom(column_tensor([row.get(name) for row in instances], dtype))
    return request


def tensor_values(tensor: tensor_pb2.TensorProto) -> np.ndarray:
    """A numeric TensorProto's values, flat (``tensor_content`` or the typed field)."""
    dtype = types_pb2.DataType.Name(tensor.dtype)
    numpy_dtype = _numpy_dtype(dtype)
    if tensor.tensor_content:
        return np.frombuffer(tensor.tensor_content, dtype=numpy_dtype)
    field = {
        "DT_FLOAT": "float_val",
        "DT_DOUBLE": "double_val",
        "DT_INT64": "int64_val",
        "DT_BOOL": "bool_val",
    }.get(dtype, "int_val")
    return np.array(getattr(tensor, field), dtype=numpy_dtype)


def read_prediction(response: predict_pb2.PredictResponse, expected: int, what: str) -> Prediction:
    outputs = response.outputs
    if "score" in outputs:
        tensor = outputs["score"]
    elif len(outputs) == 1:
        tensor = next(iter(outputs.values()))
    else:
        raise ServingClientError(
            f"{what} answered the outputs {sorted(outputs)}: expected one, or one named 'score'",
            kind="bad_response",
        )
    try:
        scores = tensor_values(tensor).astype(np.float64).reshape(-1)
    except (KeyError, ValueError) as exc:
        raise ServingClientError(
            f"{what} answered an unusable score tensor: {exc}", kind="bad_response"
        ) from None
    if scores.size != expected:
        raise ServingClientError(
            f"{what} answered {scores.size} scores for {expected} records", kind="bad_response"
        )
    if not np.isfinite(scores).all():
        index = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ServingClientError(
            f"{what} answered prediction {index} = {scores[index]}, which is not a finite number",
            kind="bad_response",
        )
    version = str(response.model_spec.version.value) if response.model_spec.HasField("version") else None
    return Prediction(scores.tolist(), version)


def failure(error: grpc.RpcError, what: str, timeout: float) -> ServingClientError:
    """The :class:`ServingClientError` for a failed call, with the REST kinds."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServingClientError(f"{what}: the server is unreachable ({details})", kind="connect")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServingClientError(f"{what}: no answer within {timeout:g} s", kind="timeout")
    if code in _CLIENT_CODES:
        status = _CLIENT_CODES[code]
        return ServingClientError(f"{what} answered {code.name}: {details}", kind="http_4xx", status=status)
    status = _SERVER_CODES.get(code, 500)
    return ServingClientError(f"{what} answered {code.name}: {details}", kind="http_5xx", status=status)


_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


# ------------------------------------------------------------------------------------- the clients


class GrpcServingClient:
    """Blocking client over one channel."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = GrpcEndpoint(grpc_target(url), timeout)
        self.channel = grpc.insecure_channel(self.transport.target, options=_OPTIONS)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._inputs: dict[tuple[str, str | None, str], dict[str, str]] = {}

    def __enter__(self) -> GrpcServingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Any, request: Any, what: str) -> Any:
        try:
            return method(request, timeout=self.transport.timeout)
        except grpc.RpcError as error:
            raise failure(error, what, self.transport.timeout) from None

    def status(self, model: str, version: str | int | None = None) -> list[dict[str, Any]]:
        what = f"GetModelStatus {self.transport.base} {model}"
        return read_status(self._call(self.models.GetModelStatus, status_request(model, version), what))

    def metadata(
        self, model: str, version: str | int | None = None
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        what = f"GetModelMetadata {self.transport.base} {model}"
        return self._call(self.prediction.GetModelMetadata, metadata_request(model, version), what)

    def signature_inputs(
        self, model: str, version: str | int | None = None, *, signature: str = DEFAULT_SIGNATURE
    ) -> dict[str, str]:
        key = (model, None if version is None else str(version), signature)
        if key not in self._inputs:
            what = f"GetModelMetadata {self.transport.base} {model}"
            signature_map = read_signature_map(self.metadata(model, version), what)
            self._inputs[key] = signature_inputs_of(signature_map, model, signature, what)
        return self._inputs[key]

    def predict_instances(
        self,
        model: str,
        instances: list[Mapping[str, Any]],
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
    ) -> Prediction:
        inputs = self.signature_inputs(model, version, signature=signature)
        what = f"Predict {self.transport.base} {model}"
        request = predict_request(model, instances, inputs, version, signature)
        return read_prediction(self._call(self.prediction.Predict, request, what), len(instances), what)


class AsyncGrpcServingClient:
    """The same client for asyncio code (``modelops traffic --protocol grpc``); one channel, which
    multiplexes every concurrent call over one HTTP/2 connection."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.transport = GrpcEndpoint(grpc_target(url), timeout)
        self.channel = grpc.aio.insecure_channel(self.transport.target, options=_OPTIONS)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self._inputs: dict[tuple[str, str | None, str], dict[str, str]] = {}

    async def __aenter__(self) -> AsyncGrpcServingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any, what: str) -> Any:
        try:
            return await method(request, timeout=self.transport.timeout)
        except grpc.RpcError as error:
            raise failure(error, what, self.transport.timeout) from None

    async def status(self, model: str, version: str | int | None = None) -> list[dict[str, Any]]:
        what = f"GetModelStatus {self.transport.base} {model}"
        return read_status(await self._call(self.models.GetModelStatus, status_request(model, version), what))

    async def signature_inputs(
        self,
        model: str,
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
        refresh: bool = False,
    ) -> dict[str, str]:
        key = (model, None if version is None else str(version), signature)
        if refresh or key not in self._inputs:
            what = f"GetModelMetadata {self.transport.base} {model}"
            response = await self._call(
                self.prediction.GetModelMetadata, metadata_request(model, version), what
            )
            self._inputs[key] = signature_inputs_of(
                read_signature_map(response, what), model, signature, what
            )
        return self._inputs[key]

    async def predict_instances(
        self,
        model: str,
        instances: list[Mapping[str, Any]],
        version: str | int | None = None,
        *,
        signature: str = DEFAULT_SIGNATURE,
    ) -> Prediction:
        inputs = await self.signature_inputs(model, version, signature=signature)
        what = f"Predict {self.transport.base} {model}"
        request = predict_request(model, instances, inputs, version, signature)
        try:
            response = await self._call(self.prediction.Predict, request, what)
        except ServingClientError as exc:
            if exc.kind != "http_4xx" or "input(s)" not in str(exc):
                raise
            # the served signature changed (a new version was swapped in): read it again, once
            inputs = await self.signature_inputs(model, version, signature=signature, refresh=True)
            request = predict_request(model, instances, inputs, version, signature)
            response = await self._call(self.prediction.Predict, request, what)
        return read_prediction(response, len(instances), what)
