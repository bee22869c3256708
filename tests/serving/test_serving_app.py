"""The REST API in-process over real HTTP (no TensorFlow): a model that fails answers 500 and the
server keeps serving; the routes outside /v1/models answer, and unknown ones get JSON errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np

from modelops.serving.app import ServingApi
from modelops.serving.batching import InferenceEngine
from modelops.serving.http_server import HttpServer
from modelops.serving.predict_request import InputSpec
from modelops.serving.repository import ModelRepository, ModelVersion, SignatureRunner
from modelops.serving.server import listening_socket
from tests.support.network import free_port

MODEL = "risk"


class ScriptedModel(SignatureRunner):
    """A signature that doubles ``x``, or raises what the test puts in ``failure``."""

    def __init__(self) -> None:
        spec = InputSpec("x", "float32", (None,))
        super().__init__(
            name="serving_default", inputs=(spec,), outputs=("y",), batchable=True, function=None
        )
        self.failure: Exception | None = None

    def __call__(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.failure is not None:
            raise self.failure
        return {"y": columns["x"] * 2}


@asynccontextmanager
async def serve(model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    version = ModelVersion(1, Path("/nowhere/1"), {"serving_default": model}, {}, module=None)
    repository = ModelRepository(MODEL, Path("/nowhere"), {1: version})
    engine = InferenceEngine(batching=True)
    api = ServingApi(repository, engine)
    http = HttpServer(api, api.settings.max_body_bytes, on_unexpected=api.unexpected)
    port = free_port()
    await http.listen(listening_socket("127.0.0.1", port, reuse_port=False))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        await http.shutdown(grace_s=5)
        engine.close()


def test_a_failing_model_answers_500_with_the_reason_and_the_app_keeps_serving():
    async def scenario() -> None:
        model = ScriptedModel()
        async with serve(model) as client:
            model.failure = RuntimeError("the GPU caught fire")
            failed = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": [1.0, 2.0]})
            assert failed.status_code == 500
            assert failed.json() == {"error": "internal server error: RuntimeError: the GPU caught fire"}
            model.failure = None
            answer = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": [1.0, 2.0]})
            assert answer.status_code == 200 and answer.json() == {"predictions": [2.0, 4.0]}
            metrics = (await client.get("/monitoring/prometheus/metrics")).text
            assert 'status="500"' in metrics and 'status="200"' in metrics

    asyncio.run(scenario())


def test_paths_outside_the_model_api_keep_their_routes_and_json_errors():
    async def scenario() -> None:
        async with serve(ScriptedModel()) as client:
            assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")
            head = await client.head("/openapi.json")
            assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
            missing = await client.get("/v1/models")
            assert missing.status_code == 404 and "/v1/models/{model_name}" in missing.json()["error"]
            empty = await client.get("/v1/models/")
            assert empty.status_code == 404 and "no model name" in empty.json()["error"]
            wrong = await client.delete(f"/v1/models/{MODEL}")
            assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
            not_get = await client.post("/-/stats")
            assert not_get.status_code == 405 and not_get.headers["allow"] == "GET, HEAD"
            assert "not allowed" in not_get.json()["error"]
            admin_only = await client.post("/-/open-public")  # no admin port in plain serve
            assert admin_only.status_code == 404 and admin_only.json()["error"]
            status = await client.get(f"/v1/models/{MODEL}")
            assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"
            assert (await client.get("/-/stats")).json()["versions"] == [1]

    asyncio.run(scenario())
