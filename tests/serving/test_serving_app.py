"""The REST app in-process (ASGI, no TensorFlow): a model that fails answers 500 and the app keeps
serving; the routes outside /v1/models still go through Starlette's router."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np

from modelops.serving.app import build_app
from modelops.serving.batching import InferenceEngine
from modelops.serving.predict_request import InputSpec
from modelops.serving.repository import ModelRepository, ModelVersion, SignatureRunner

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


def serve(model: ScriptedModel) -> tuple[httpx.AsyncClient, InferenceEngine]:
    version = ModelVersion(1, Path("/nowhere/1"), {"serving_default": model}, {}, module=None)
    repository = ModelRepository(MODEL, Path("/nowhere"), {1: version})
    engine = InferenceEngine(batching=True)
    app = build_app(repository, engine)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serving"), engine


def test_a_failing_model_answers_500_with_the_reason_and_the_app_keeps_serving():
    async def scenario() -> None:
        model = ScriptedModel()
        client, engine = serve(model)
        try:
            async with client:
                model.failure = RuntimeError("the GPU caught fire")
                failed = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": [1.0, 2.0]})
                assert failed.status_code == 500
                assert failed.json() == {"error": "internal server error: RuntimeError: the GPU caught fire"}
                model.failure = None
                answer = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": [1.0, 2.0]})
                assert answer.status_code == 200 and answer.json() == {"predictions": [2.0, 4.0]}
                metrics = (await client.get("/monitoring/prometheus/metrics")).text
                assert 'status="500"' in metrics and 'status="200"' in metrics
        finally:
            engine.close()

    asyncio.run(scenario())


def test_paths_outside_the_model_api_keep_their_routes_and_json_errors():
    async def scenario() -> None:
        client, engine = serve(ScriptedModel())
        try:
            async with client:
                assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")
                missing = await client.get("/v1/models")
                assert missing.status_code == 404 and "/v1/models/{model_name}" in missing.json()["error"]
                empty = await client.get("/v1/models/")
                assert empty.status_code == 404 and "no model name" in empty.json()["error"]
                wrong = await client.delete(f"/v1/models/{MODEL}")
                assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
                status = await client.get(f"/v1/models/{MODEL}")
                assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"
        finally:
            engine.close()

    asyncio.run(scenario())
