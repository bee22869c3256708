"""TF Serving's gRPC API on a real ``modelops serve`` process, driven by grpcio and the
``tensorflow-serving-api`` stubs: Predict (tensor_content numbers, string_val strings, the typed
``*_val`` fallback, pinned and unpinned versions), GetModelMetadata, GetModelStatus, the refusals
(INVALID_ARGUMENT naming the input, NOT_FOUND), the metrics, and ``modelops traffic --protocol grpc``
writing the spool as the REST replay does. Scores are compared with the REST API's for the same records.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
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
BIASES = {1: -1.4, 2: 0.5}
MODELOPS = str(Path(sys.executable).parent / "modelops")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_model_base(tmp_path_factory.mktemp("grpc") / MODEL, BIASES)


@pytest.fixture(scope="module")
def server(base):
    grpc_port = free_port()
    process = ServerProcess(base, free_port(), MODEL, "--grpc-port", str(grpc_port))
    with process:
        process.grpc_target = f"127.0.0.1:{grpc_port}"  # type: ignore[attr-defined]
        yield process


@pytest.fixture(scope="module")
def stubs(server):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_target)
    grpc.channel_ready_future(channel).result(timeout=60)
    yield (
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    channel.close()


def tensor(values, dtype):
    """A [rows] TensorProto: numbers as tensor_content, strings as string_val."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))])
    if dtype == "string":
        return tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[v.encode() for v in values]
        )
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=np.asarray(values, np.float32).tobytes()
    )


def predict_request(records, version=None, model=MODEL, typed_fields=False):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    for name in NUMERIC:
        column = [r[name] for r in records]
        if typed_fields:  # the typed float_val field instead of tensor_content, as TF Serving accepts
            shape = tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(column))]
            )
            request.inputs[name].CopyFrom(
                tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=column)
            )
        else:
            request.inputs[name].CopyFrom(tensor(column, "float"))
    for name in CATEGORICAL:
        request.inputs[name].CopyFrom(tensor([r[name] for r in records], "string"))
    return request


def scores_of(response) -> np.ndarray:
    from tensorflow.core.framework import types_pb2

    score = response.outputs["score"]
    assert score.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in score.tensor_shape.dim] == [len(score.tensor_content) // 4]
    return np.frombuffer(score.tensor_content, np.float32)


def rest_scores(server, records, version=None) -> np.ndarray:
    client = rest_client.ServingClient(server.url)
    return np.asarray(client.predict_instances(MODEL, records, version).scores, np.float32)


def refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_predict_unpinned_serves_the_highest_version_with_the_rest_scores(server, stubs):
    prediction, _ = stubs
    records = sample_records(16, seed=11)
    response = prediction.Predict(predict_request(records), timeout=30)
    assert response.model_spec.name == MODEL
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    scores = scores_of(response)
    np.testing.assert_array_equal(scores, rest_scores(server, records))
    for got, record in zip(scores, records, strict=True):
        assert math.isclose(got, expected_score(record, BIASES[2]), rel_tol=1e-5)


def test_predict_pinned_version_and_typed_value_fields(server, stubs):
    prediction, _ = stubs
    records = sample_records(5, seed=3)
    pinned = prediction.Predict(predict_request(records, version=1), timeout=30)
    assert pinned.model_spec.version.value == 1
    np.testing.assert_array_equal(scores_of(pinned), rest_scores(server, records, version=1))
    typed = prediction.Predict(predict_request(records, version=1, typed_fields=True), timeout=30)
    np.testing.assert_array_equal(scores_of(typed), scores_of(pinned))


def test_malformed_requests_are_invalid_argument_naming_the_input(server, stubs):
    from tensorflow.core.framework import tensor_pb2, types_pb2

    prediction, _ = stubs
    records = sample_records(4)

    missing = predict_request(records)
    del missing.inputs["DEBTINC"]
    error = refused(prediction.Predict, missing)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DEBTINC" in error.details() and "missing" in error.details()

    wrong_dtype = predict_request(records)
    wrong_dtype.inputs["LOAN"].dtype = types_pb2.DT_DOUBLE
    error = refused(prediction.Predict, wrong_dtype)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'LOAN'" in error.details() and "DT_DOUBLE" in error.details()

    short = predict_request(records)
    short.inputs["VALUE"].tensor_content = short.inputs["VALUE"].tensor_content[:-4]
    error = refused(prediction.Predict, short)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'VALUE'" in error.details() and "tensor_content" in error.details()

    uneven = predict_request(records)
    uneven.inputs["JOB"].CopyFrom(tensor(["Mgr"] * 3, "string"))
    error = refused(prediction.Predict, uneven)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'JOB'" in error.details()

    empty = predict_request(records)
    empty.inputs["CLNO"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT))
    error = refused(prediction.Predict, empty)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'CLNO'" in error.details()

    infinite = predict_request([{**records[0], "YOJ": math.inf}])
    error = refused(prediction.Predict, infinite)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'YOJ'" in error.details() and "infinite" in error.details()

    # nothing of this hurt the server
    np.testing.assert_array_equal(scores_of(prediction.Predict(predict_request(records), timeout=30)),
                                  rest_scores(server, records))  # fmt: skip


def test_unknown_model_version_and_label_are_refused_like_tf_serving(stubs):
    prediction, models = stubs
    from tensorflow_serving.apis import get_model_status_pb2

    records = sample_records(2)
    error = refused(prediction.Predict, predict_request(records, model="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "'nope'" in error.details()
    error = refused(prediction.Predict, predict_request(records, version=7))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "version 7" in error.details()
    labelled = predict_request(records)
    labelled.model_spec.version_label = "stable"
    error = refused(prediction.Predict, labelled)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "stable" in error.details()
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    assert refused(models.GetModelStatus, status).code() == grpc.StatusCode.NOT_FOUND
    signature = predict_request(records)
    signature.model_spec.signature_name = "other"
    error = refused(prediction.Predict, signature)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "'other'" in error.details()


def test_get_model_metadata_returns_the_signature_def_map(server, stubs):
    from tensorflow.core.framework import types_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    prediction, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = prediction.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 2
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert packed.Unpack(signature_map)
    inputs = signature_map.signature_def["serving_default"].inputs
    got = {name: types_pb2.DataType.Name(info.dtype) for name, info in inputs.items()}
    assert got == rest_client.signature_inputs(server.url, MODEL, refresh=True)
    assert set(signature_map.signature_def["serving_default"].outputs) == {"score"}

    request.model_spec.version.value = 1
    assert prediction.GetModelMetadata(request, timeout=30).model_spec.version.value == 1
    no_field = get_model_metadata_pb2.GetModelMetadataRequest()
    no_field.model_spec.name = MODEL
    error = refused(prediction.GetModelMetadata, no_field)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "signature_def" in error.details()


def test_get_model_status_reports_the_versions_as_the_rest_api(server, stubs):
    from tensorflow_serving.apis import get_model_status_pb2

    from modelops.serving.grpc_client import read_status

    _, models = stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    response = models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    assert read_status(response) == rest_client.model_status(server.url, MODEL)
    request.model_spec.version.value = 1
    pinned = models.GetModelStatus(request, timeout=30)
    assert read_status(pinned) == rest_client.model_status(server.url, MODEL, 1)
    request.model_spec.version.value = 5
    assert refused(models.GetModelStatus, request).code() == grpc.StatusCode.NOT_FOUND


def test_unserved_methods_are_unimplemented_and_grpc_calls_are_counted(server, stubs):
    from tensorflow_serving.apis import classification_pb2

    prediction, _ = stubs
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    assert refused(prediction.Classify, request).code() == grpc.StatusCode.UNIMPLEMENTED
    prediction.Predict(predict_request(sample_records(3)), timeout=30)
    missing = predict_request(sample_records(3))
    del missing.inputs["DEBTINC"]  # this test's own refused call: it must not rely on another test's
    assert refused(prediction.Predict, missing).code() == grpc.StatusCode.INVALID_ARGUMENT
    text = http_client.get(f"{server.url}/monitoring/prometheus/metrics", timeout=30).text
    assert (
        'modelops_serving_grpc_requests_total{code="OK",method="Predict",model_name="risk",version="2"}'
        in text
    )
    assert (
        'modelops_serving_grpc_requests_total{code="INVALID_ARGUMENT",method="Predict",model_name="risk",version="2"}'
        in text
    )
    # and in the shared family, by the HTTP-equivalent status
    assert 'modelops_serving_requests_total{api="predict",model_name="risk",status="400",version="2"}' in text


def test_a_second_server_on_the_same_grpc_port_fails_clearly(base, server, tmp_path):
    port = server.grpc_target.rpartition(":")[2]
    log = tmp_path / "second.log"
    second = ServerProcess(base, free_port(), MODEL, "--grpc-port", port, log=log)
    try:
        assert second.process.wait(300) != 0
    finally:
        second.stop()
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in log.read_text()


def test_traffic_over_grpc_spools_every_scored_record(server, tmp_path):
    spool = tmp_path / "spool"
    result = subprocess.run(
        [MODELOPS, "traffic", "--protocol", "grpc", "--url", f"grpc://{server.grpc_target}", "--model", MODEL,
         "--period", "2", "--rows", "200", "--batch-size", "8", "--concurrency", "3", "--spool", str(spool),
         "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["ok"], summary["errors"]) == (200, 200, 0)
    assert summary["versions"] == {"2": 200}
    lines = [json.loads(line) for path in sorted(spool.glob("scores-*.jsonl")) for line in path.open()]
    assert len(lines) == 200 and len({line["request_id"] for line in lines}) == 200
    assert {line["model_version"] for line in lines} == {"2"}
    for line in lines[:40]:
        assert math.isclose(line["score"], expected_score(line["features"], BIASES[2]), rel_tol=1e-4)
    # the same records over REST score the same
    features = [line["features"] for line in lines[:16]]
    instances = rest_client.to_instances(features, rest_client.signature_inputs(server.url, MODEL))
    rest = rest_scores(server, instances)
    np.testing.assert_array_equal(np.asarray([line["score"] for line in lines[:16]], np.float32), rest)


def test_traffic_refuses_a_rest_url_for_grpc(tmp_path):
    result = subprocess.run(
        [MODELOPS, "traffic", "--protocol", "grpc", "--url", "http://127.0.0.1:1", "--period", "1",
         "--rows", "1", "--spool", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "grpc://host:port" in result.stderr


@pytest.mark.parametrize("in_flight", [1, 3], ids=["blocking-stub", "aio-3-in-flight"])
def test_the_bench_load_generator_counts_every_answered_call(server, in_flight):
    from bench.grpc_load import WARM_UP_CALLS, build_bodies, load

    bodies, _answer = build_bodies(server.grpc_target, MODEL, sample_records(128, seed=5), 64)
    rows_before = http_client.get(f"{server.url}/-/stats").json()["rows"]
    summary = load(server.grpc_target, bodies, in_flight, seconds=2)
    rows = http_client.get(f"{server.url}/-/stats").json()["rows"] - rows_before
    assert summary["errors"] == 0 and summary["requests"] > 0
    warm_up = len(bodies[:WARM_UP_CALLS])
    assert rows == 64 * (warm_up + summary["requests"])  # every answered call is counted, none twice
    assert 0 < summary["p50_us"] <= summary["p99_us"] <= summary["max_us"]


@pytest.mark.parametrize("flavor", ["own", "aio", "sync"])
def test_the_bench_transport_echo_answers_the_real_answer_without_the_model(server, tmp_path, flavor):
    """bench.grpc_echo (the gRPC ceiling): the real request bodies in, the real answer's bytes out,
    and the serving server sees none of those calls."""
    from tensorflow_serving.apis import predict_pb2

    from bench.grpc_load import build_bodies, load

    bodies, answer = build_bodies(server.grpc_target, MODEL, sample_records(128, seed=5), 64)
    answer_file = tmp_path / "answer.bin"
    answer_file.write_bytes(answer)
    port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "bench.grpc_echo", str(port), str(answer_file), "--flavor", flavor],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "READY"
        rows_before = http_client.get(f"{server.url}/-/stats").json()["rows"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(bodies[0], timeout=30)
        assert raw == answer
        assert len(predict_pb2.PredictResponse.FromString(raw).outputs) > 0
        summary = load(f"127.0.0.1:{port}", bodies, 1, seconds=1)
        assert summary["errors"] == 0 and summary["requests"] > 0
        assert http_client.get(f"{server.url}/-/stats").json()["rows"] == rows_before
    finally:
        echo.terminate()
        echo.wait(30)


class _MeasuredProcess:
    """What bench.serving.grpc_native needs of the process under load: its CPU time."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system


def _framed_predict(server, model: str, tmp_path: Path) -> Path:
    from bench.grpc_h2load import frame
    from bench.grpc_load import build_bodies

    body_file = tmp_path / f"{model}-body.bin"
    bodies, _answer = build_bodies(server.grpc_target, MODEL, sample_records(64, seed=5), 64)
    if model != MODEL:  # the same request for a model this server does not serve: NOT_FOUND
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest.FromString(bodies[0])
        request.model_spec.name = model
        bodies = [request.SerializeToString()]
    body_file.write_bytes(frame(bodies[0]))
    return body_file


def test_the_bench_native_grpc_load_counts_only_calls_the_server_scored(server, tmp_path):
    """h2load (the gRPC bench's load) sees HTTP statuses only, and a gRPC error is an HTTP 200: the
    bench compares its count with the rows the server scored, so refused calls count as errors."""
    from bench import grpc_h2load
    from bench.serving import grpc_native

    assert grpc_h2load.available(), grpc_h2load.INSTALL_HINT  # scripts/install-bench-tools.sh
    measured = _MeasuredProcess(server.process.pid)
    good = grpc_native(
        server.grpc_target, _framed_predict(server, MODEL, tmp_path), 2, 1.0, measured, server.url
    )
    assert good["requests"] > 0 and good["errors"] == 0 and good["status_errors"] == 0
    assert 0 < good["p50_us"] <= good["p99_us"] <= good["max_us"]
    assert good["server_cpu_us_per_request"] > 0 and good["wrk_cpu_us_per_request"] > 0

    refused = grpc_native(
        server.grpc_target, _framed_predict(server, "no-such-model", tmp_path), 1, 1.0, measured, server.url
    )
    assert refused["requests"] > 0 and refused["errors"] == refused["requests"]


def test_h2load_summary_reads_duration_failures_and_latencies():
    from bench.grpc_h2load import summarize

    output = (
        "finished in 2.00s, 500.00 req/s, 1KB/s\n"
        "requests: 1003 total, 1003 started, 1001 done, 1000 succeeded, 1 failed, 1 errored, 1 timeout\n"
    )
    answers = [(200, float(us)) for us in range(1, 1001)] + [(500, 5.0)]
    summary = summarize(output, answers)
    assert summary["duration_us"] == 2_000_000
    assert (summary["requests"], summary["errors"], summary["status_errors"]) == (1000, 3, 1)
    assert (summary["p50_us"], summary["p99_us"], summary["max_us"]) == (501.0, 991.0, 1000.0)
    assert (
        summarize("finished in 850.5ms, 1 req/s\nrequests: 1 total, 0 failed, 0 errored, 0 timeout\n", [])[
            "duration_us"
        ]
        == 850_500
    )
