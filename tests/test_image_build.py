"""The serving image: tag rules, clear errors for an absent engine/registry, a real build/push/pull."""

from __future__ import annotations

import httpx
import pytest
from conftest import free_port
from fakes.docker_env import container_config, require_engine
from fakes.tiny_savedmodel import write_tiny_savedmodel

from modelops.config import load_config
from modelops.tasks import image


@pytest.mark.parametrize("tag", ["v1", "2026.11.25", "_x", "a" * 128, "v1-rc.2_b"])
def test_valid_tags_pass(tag):
    assert image.validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["", "v 1", "-v1", ".v1", "a" * 129, "v1:2", "v/1", "é"])
def test_invalid_tag_names_value_and_rule(tag):
    with pytest.raises(image.ImageError) as caught:
        image.validate_tag(tag)
    assert repr(tag) in str(caught.value)
    assert image.TAG_RULE in str(caught.value)


def test_reference_comes_from_config():
    config = load_config("local", environ={})
    assert image.image_reference(config, "v7") == "127.0.0.1:5055/modelops/hmeq-risk:v7"
    assert image.split_reference("127.0.0.1:5055/modelops/hmeq-risk:v7") == (
        "127.0.0.1:5055/modelops/hmeq-risk",
        "v7",
    )
    assert image.split_reference("127.0.0.1:5055/modelops/hmeq-risk") == (
        "127.0.0.1:5055/modelops/hmeq-risk",
        "latest",
    )


def test_unreachable_engine_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELOPS_DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    with pytest.raises(
        image.ImageError, match="engine at unix://.*absent.sock is unreachable.*docker-engine.sh start"
    ):
        image.docker_client(timeout=5)


def test_unreachable_registry_is_a_clear_error():
    registry = f"127.0.0.1:{free_port()}"
    with pytest.raises(image.ImageError, match=f"registry {registry} is unreachable"):
        image.check_registry_reachable(registry)


def test_build_refuses_a_folder_without_saved_model(tmp_path):
    config = load_config("local", environ={})
    with pytest.raises(image.ImageError, match="not a SavedModel"):
        image.build_serving_image(config, tmp_path, 1, "v1")
    with pytest.raises(image.ImageError, match="version 'one' is invalid"):
        image.build_serving_image(config, tmp_path, "one", "v1")


@pytest.mark.docker
@pytest.mark.slow
def test_build_push_pull_round_trip(tmp_path):
    client = require_engine()
    config, model_name = container_config()
    model_dir = write_tiny_savedmodel(tmp_path / model_name / "3")
    reference = image.build_serving_image(config, model_dir, 3, "v3", model_name=model_name, client=client)
    assert reference == f"{config.serving.registry}/modelops/{model_name}:v3"
    built = client.images.get(reference)
    assert built.labels[image.LABEL_MODEL] == model_name and built.labels[image.LABEL_VERSION] == "3"
    environment = dict(item.split("=", 1) for item in built.attrs["Config"]["Env"])
    assert environment["MODEL_NAME"] == model_name and environment["MODEL_BASE_PATH"] == "/models"
    assert built.attrs["Config"]["User"] == "10001:0"

    digest = image.push_image(config, reference, client=client)
    assert digest.startswith("sha256:")
    tags = httpx.get(f"http://{config.serving.registry}/v2/modelops/{model_name}/tags/list").json()
    assert tags["tags"] == ["v3"]

    image.remove_local_image(reference, client=client)
    assert not client.images.list(name=reference)
    image.pull_image(config, reference, client=client)
    listing = client.containers.run(reference, entrypoint=["ls", f"/models/{model_name}/3"], remove=True)
    assert b"saved_model.pb" in listing
    image.remove_local_image(reference, client=client)


@pytest.mark.docker
def test_build_from_an_absent_base_names_it(tmp_path):
    client = require_engine()
    config, model_name = container_config(base_image="modelops/no-such-base:0")
    model_dir = write_tiny_savedmodel(tmp_path / model_name / "1")
    with pytest.raises(image.ImageError, match="modelops/no-such-base:0"):
        image.build_serving_image(config, model_dir, 1, "v1", model_name=model_name, client=client)
