"""The ``docker`` target end to end on the private engine: stand-in base -> build -> push -> remove the
local image -> pull -> run -> AVAILABLE -> smoke; a second deploy replaces the first; a broken model
fails and the old container keeps serving."""

from __future__ import annotations

import os

import httpx
import pytest
from support import http_client
from support.fakes.docker_env import container_config, forget, require_engine
from support.fakes.tiny_savedmodel import SAMPLE_RECORD, write_broken_savedmodel, write_tiny_savedmodel
from support.network import free_port

from modelops.integrations import image
from modelops.targets.base import DeployError
from modelops.targets.docker import LABEL_MODEL, DockerTarget

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _score(url: str, model_name: str) -> float:
    response = http_client.post(
        f"{url}/v1/models/{model_name}:predict", json={"instances": [SAMPLE_RECORD]}, timeout=10
    )
    response.raise_for_status()
    return response.json()["predictions"][0]


def _free_pair() -> tuple[int, int]:
    first, second = free_port(), free_port()
    while second == first:
        second = free_port()
    return first, second


def test_deploy_replace_and_failed_deploy_keeps_the_old_one(tmp_path):
    client = require_engine()
    config, model_name = container_config()
    target = DockerTarget(config, ports=_free_pair(), client=client)
    try:
        # v1: built and pushed, the local copy removed, so the deploy must pull it from the registry.
        v1_dir = write_tiny_savedmodel(tmp_path / "export" / model_name / "1", bias=0.0)
        v1_image = image.build_serving_image(config, v1_dir, 1, "v1", model_name=model_name, client=client)
        image.push_image(config, v1_image, client=client)
        image.remove_local_image(v1_image, client=client)
        first = target.deploy(model_name, "1", v1_dir, image=v1_image)
        assert first.version == "1" and first.previous_version is None and first.image == v1_image
        assert target.current(model_name).url == first.url
        v1_score = _score(first.url, model_name)
        assert 0 < v1_score < 1

        # v2 replaces v1: other slot, v1's container gone, a different score.
        v2_dir = write_tiny_savedmodel(tmp_path / "export" / model_name / "2", bias=1.0)
        second = target.deploy(model_name, "2", v2_dir)  # no image given: the target builds and pushes it
        assert second.previous_version == "1" and second.url != first.url
        assert second.image.endswith(f"/{model_name}:v2")
        assert _score(second.url, model_name) > v1_score
        with pytest.raises(httpx.ConnectError):
            http_client.get(f"{first.url}/v1/models/{model_name}", timeout=2)
        live = client.containers.list(filters={"label": f"{LABEL_MODEL}={model_name}"})
        assert [c.labels["org.modelops.serving.version"] for c in live] == ["2"]

        # v3 is broken: the deploy fails, its container is removed and v2 keeps serving.
        v3_dir = write_broken_savedmodel(tmp_path / "export" / model_name / "3")
        with pytest.raises(DeployError, match=r"version 3 failed its health check.*version 2 keeps serving"):
            target.deploy(model_name, "3", v3_dir)
        current = target.current(model_name)
        assert current.version == "2" and current.url == second.url
        assert _score(second.url, model_name) > v1_score
        remaining = client.containers.list(all=True, filters={"label": f"{LABEL_MODEL}={model_name}"})
        assert len(remaining) == 1
    finally:
        target.stop(model_name)
        for tag in ("v1", "v2", "v3"):
            forget(client, image.image_reference(config, tag))
    assert target.current(model_name) is None


def test_taken_port_is_refused_before_starting_anything(tmp_path):
    import socket

    client = require_engine()
    config, model_name = container_config()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = (busy.getsockname()[1], free_port())
        target = DockerTarget(config, ports=ports, client=client)
        model_dir = write_tiny_savedmodel(tmp_path / model_name / "1")
        try:
            with pytest.raises(DeployError, match=f"port {ports[0]} .* is taken by pid {os.getpid()} "):
                target.deploy(model_name, "1", model_dir)  # the holder named: this test's process
            assert not client.containers.list(all=True, filters={"label": f"{LABEL_MODEL}={model_name}"})
        finally:
            target.stop(model_name)
            forget(client, image.image_reference(config, "v1"))


def test_the_container_serves_tf_servings_grpc_api_on_its_grpc_port(tmp_path):
    """The stand-in runs the image's ``tensorflow_model_server --port``: gRPC answers from the container
    as REST does (the same score), and the rollout records the gRPC address."""
    from modelops.serving.grpc_client import GrpcServingClient

    client = require_engine()
    config, model_name = container_config()
    target = DockerTarget(config, ports=_free_pair(), grpc_ports=_free_pair(), client=client)
    try:
        model_dir = write_tiny_savedmodel(tmp_path / "export" / model_name / "1", bias=0.0)
        rollout = target.deploy(model_name, "1", model_dir)
        grpc_address = rollout.details["grpc"]
        assert grpc_address == f"127.0.0.1:{target.grpc_ports['blue']}"
        assert target.current(model_name).details["grpc"] == grpc_address
        with GrpcServingClient(f"grpc://{grpc_address}", timeout=30) as grpc_client:
            assert [row["state"] for row in grpc_client.status(model_name)] == ["AVAILABLE"]
            prediction = grpc_client.predict_instances(model_name, [SAMPLE_RECORD])
        assert prediction.model_version == "1"
        assert prediction.scores == pytest.approx([_score(rollout.url, model_name)], rel=1e-6)
    finally:
        target.stop(model_name)
        forget(client, image.image_reference(config, "v1"))
