"""The serving image: tag rules, clear errors for an absent engine/registry, a real build/push/pull."""

from __future__ import annotations

import httpx
import pytest
from support import http_client
from support.fakes.docker_env import container_config, forget, require_engine
from support.fakes.tiny_savedmodel import write_tiny_savedmodel
from support.network import free_port

from modelops.config import ConfigError, SecretRef, load_config
from modelops.integrations import image


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
    tags = http_client.get(f"http://{config.serving.registry}/v2/modelops/{model_name}/tags/list").json()
    assert tags["tags"] == ["v3"]

    image.remove_local_image(reference, client=client)
    assert not client.images.list(name=reference)
    image.pull_image(config, reference, client=client)
    try:
        listing = client.containers.run(reference, entrypoint=["ls", f"/models/{model_name}/3"], remove=True)
        assert b"saved_model.pb" in listing
    finally:
        forget(client, reference)


@pytest.mark.docker
def test_build_from_an_absent_base_names_it(tmp_path):
    client = require_engine()
    config, model_name = container_config(base_image="modelops/no-such-base:0")
    model_dir = write_tiny_savedmodel(tmp_path / model_name / "1")
    with pytest.raises(image.ImageError, match="modelops/no-such-base:0"):
        image.build_serving_image(config, model_dir, 1, "v1", model_name=model_name, client=client)


def test_missing_registry_secret_fails_before_any_network_call(monkeypatch):
    config, _ = container_config(
        registry_username="ci", registry_token=SecretRef(env="MODELOPS_TEST_ABSENT_TOKEN")
    )
    monkeypatch.delenv("MODELOPS_TEST_ABSENT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="set the environment variable MODELOPS_TEST_ABSENT_TOKEN"):
        image.push_image(config, image.image_reference(config, "v1"))


def _import_tiny_image(client, reference: str) -> None:
    import io
    import tarfile

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        content = b"tiny image for registry tests\n"
        info = tarfile.TarInfo("README")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    repository, tag = image.split_reference(reference)
    client.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag)


@pytest.fixture
def authenticated_registry(tmp_path):
    """A second, real registry (docker-registry) that demands htpasswd credentials, on a free port."""
    import crypt  # deprecated, still in 3.11; the registry wants bcrypt and libxcrypt provides it
    import shutil
    import subprocess
    import time

    if shutil.which("docker-registry") is None:
        pytest.skip("docker-registry is not installed: run scripts/docker-engine.sh start")
    password = "s3cret-registry-token-1234"
    (tmp_path / "htpasswd").write_text(f"ci:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "registry.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp_path}/data}}}}\n"
        f"http: {{addr: {address}}}\n"
        f"auth: {{htpasswd: {{realm: modelops-test, path: {tmp_path}/htpasswd}}}}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(tmp_path / "registry.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                if http_client.get(f"http://{address}/v2/", timeout=1).status_code == 401:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield address, password
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.docker
@pytest.mark.slow
def test_push_uses_the_registry_token_and_never_logs_it(
    authenticated_registry, monkeypatch, caplog, tmp_path
):
    address, password = authenticated_registry
    client = require_engine()
    config, model_name = container_config(
        registry=address, registry_username="ci", registry_token=SecretRef(env="MODELOPS_TEST_REGISTRY_TOKEN")
    )
    reference = image.image_reference(config, "v1")
    _import_tiny_image(client, reference)  # a few bytes: a fresh registry need not receive the 1.5 GB base
    try:
        monkeypatch.setenv("MODELOPS_TEST_REGISTRY_TOKEN", "wrong-token")
        with pytest.raises(image.ImageError, match=f"push of {reference}|push {reference} failed"):
            image.push_image(config, reference, client=client)
        monkeypatch.setenv("MODELOPS_TEST_REGISTRY_TOKEN", password)
        with caplog.at_level("DEBUG"):
            assert image.push_image(config, reference, client=client).startswith("sha256:")
        assert password not in caplog.text
        listing = http_client.get(
            f"http://{address}/v2/modelops/{model_name}/tags/list", auth=("ci", password)
        )
        assert listing.json()["tags"] == ["v1"]
    finally:
        image.remove_local_image(reference, client=client)
