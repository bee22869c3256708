"""Helpers for tests that need the private Docker engine + registry (``scripts/docker-engine.sh start``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from modelops.config import ModelOpsConfig, load_config

STANDIN = "modelops/tfserving-standin:2.18.0"


def registry_address() -> str:
    home = Path(os.environ.get("MODELOPS_DOCKER_HOME") or "/var/lib/modelops-docker")
    marker = home / "registry-addr"
    return marker.read_text().strip() if marker.is_file() else "127.0.0.1:5055"


def require_engine():
    """A connected Docker client with the stand-in base present, or skip naming what is missing.

    With MODELOPS_REQUIRE_DOCKER=1 (CI, after scripts/docker-engine.sh start) a missing engine fails
    the test instead: the container path must not be skipped silently there.
    """
    from modelops.integrations.image import ImageError, docker_client

    give_up = pytest.fail if os.environ.get("MODELOPS_REQUIRE_DOCKER") == "1" else pytest.skip
    try:
        client = docker_client(timeout=600)
    except ImageError as exc:
        give_up(f"no Docker engine: {exc}")
    if not client.images.list(name=STANDIN):
        give_up(f"the stand-in base {STANDIN} is missing: run scripts/docker-engine.sh start")
    return client


def container_config(**serving: object) -> tuple[ModelOpsConfig, str]:
    """A config for a throw-away model name (its own image stream), built on the stand-in base."""
    model_name = f"tiny-{uuid.uuid4().hex[:8]}"
    config = load_config("local", environ={})
    settings = {
        "registry": registry_address(),
        "image_stream": model_name,
        "base_image": STANDIN,
        "rollout_timeout_s": 120.0,
        **serving,
    }
    return config.model_copy(update={"serving": config.serving.model_copy(update=settings)}), model_name


def forget(client, reference: str) -> None:
    """Remove a test image locally and its tag from the registry (the registry runs with delete enabled)."""
    import httpx

    from modelops.integrations.image import remove_local_image, split_reference

    remove_local_image(reference, client=client)
    repository, tag = split_reference(reference)
    registry, _, name = repository.partition("/")
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    try:
        head = httpx.head(f"http://{registry}/v2/{name}/manifests/{tag}", headers=accept, timeout=5)
        digest = head.headers.get("Docker-Content-Digest")
        if head.status_code == 200 and digest:
            httpx.delete(f"http://{registry}/v2/{name}/manifests/{digest}", timeout=5)
    except httpx.HTTPError:
        pass  # best effort: a leftover tag costs a few bytes
