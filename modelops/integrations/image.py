"""The serving image: build it from ``infra/docker/Dockerfile``, tag it, push it, pull it (talks to Docker).

The image is ``<serving.base_image>`` (``tensorflow/serving:<pinned>``, or the local stand-in) with one
SavedModel copied to ``/models/<name>/<version>`` and ``MODEL_NAME`` set; it is tagged
``<serving.registry>/<serving.project>/<serving.image_stream>:<tag>``.

The engine is found, in order, from ``$MODELOPS_DOCKER_HOST``, ``$DOCKER_HOST``, the file
``$MODELOPS_DOCKER_HOME/docker-host`` written by ``scripts/docker-engine.sh start``
(default ``/var/lib/modelops-docker``), then Docker's own default. Registry credentials come from
``serving.registry_username`` + ``serving.registry_token`` (a SecretRef), resolved at push time and
never logged.

The Docker SDK (``docker``) is imported inside the functions that use it: it is a heavy optional
dependency, and a process that imports this module through the serving targets but never talks
to Docker (the ``local`` target) should not load it.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.logging import get_run_logger

from modelops.config import PROJECT_ROOT, ModelOpsConfig
from modelops.integrations.docker_engine import ImageError, docker_client
from modelops.secrets import resolve_secret

if TYPE_CHECKING:
    import docker

DOCKERFILE = PROJECT_ROOT / "infra" / "docker" / "Dockerfile"
STANDIN_BASE_IMAGE = "modelops/tfserving-standin:2.18.0"
TAG_RULE = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_TAG = re.compile(rf"^{TAG_RULE}$")
LABEL_MODEL = "org.modelops.model.name"
LABEL_VERSION = "org.modelops.model.version"


def _log() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # outside a flow or task run (CLI, tests): plain logging
        return logging.getLogger("modelops.image")


def validate_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ImageError(
            f"image tag {tag!r} is invalid: a Docker tag must match {TAG_RULE} (e.g. 'v3' or '2026.11.25')"
        )
    return tag


def image_reference(config: ModelOpsConfig, tag: str) -> str:
    """``<registry>/<project>/<image_stream>:<tag>`` from the environment config."""
    serving = config.serving
    return f"{serving.registry}/{serving.project}/{serving.image_stream}:{validate_tag(tag)}"


def split_reference(reference: str) -> tuple[str, str]:
    """``registry/repo:tag`` -> (``registry/repo``, ``tag``); a port's colon is not a tag separator."""
    repository, sep, tag = reference.rpartition(":")
    if not sep or "/" in tag:
        return reference, "latest"
    return repository, tag


def check_registry_reachable(registry: str, timeout: float = 5) -> None:
    host, _, port = registry.partition(":")
    try:
        with socket.create_connection((host, int(port or 443)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise ImageError(
            f"the image registry {registry} is unreachable ({exc}): start it "
            "(`sudo scripts/docker-engine.sh start` runs one on 127.0.0.1:5055) "
            "or fix serving.registry in the environment config"
        ) from None


def _auth_config(config: ModelOpsConfig) -> dict[str, str] | None:
    serving = config.serving
    if not serving.registry_username and serving.registry_token is None:
        return None
    token = resolve_secret(serving.registry_token)
    return {"username": serving.registry_username or "unused", "password": token or ""}


def _stream(lines: Iterable[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    """Log Docker's JSON progress lines; raise ImageError on the first error line."""
    logger = _log()
    seen: list[dict[str, Any]] = []
    last_status = None
    for line in lines:
        seen.append(line)
        if "error" in line or "errorDetail" in line:
            detail = line.get("error") or line.get("errorDetail", {}).get("message")
            raise ImageError(f"{what} failed: {str(detail).strip()}")
        text = (line.get("stream") or "").strip()
        if text:
            logger.info("%s: %s", what, text)
        status = line.get("status")
        if status and status != last_status and "progress" not in line:
            logger.info("%s: %s%s", what, status, f" {line['id']}" if line.get("id") else "")
            last_status = status
    return seen


def build_serving_image(
    config: ModelOpsConfig,
    model_dir: str | Path,
    version: str | int,
    tag: str,
    *,
    model_name: str | None = None,
    base_image: str | None = None,
    client: docker.DockerClient | None = None,
) -> str:
    """Build the serving image for one SavedModel; return its reference (not yet pushed)."""
    from docker.errors import APIError, DockerException  # lazy: see the module's docstring

    model_dir = Path(model_dir)
    name = model_name or config.model.name
    version = str(version)
    if not version.isdigit():
        raise ImageError(
            f"model version {version!r} is invalid: TF Serving needs a number (folder /models/{name}/<n>)"
        )
    if not (model_dir / "saved_model.pb").is_file():
        raise ImageError(
            f"{model_dir} is not a SavedModel (no saved_model.pb): pass the exported model folder"
        )
    reference = image_reference(config, tag)
    base = base_image or config.serving.base_image
    client = client or docker_client()
    with tempfile.TemporaryDirectory(prefix="modelops-image-") as context:
        shutil.copy(DOCKERFILE, Path(context) / "Dockerfile")
        shutil.copytree(model_dir, Path(context) / "models" / name / version)
        _log().info("building %s from %s (model %s version %s)", reference, base, name, version)
        try:
            lines = client.api.build(
                path=context,
                tag=reference,
                buildargs={"BASE_IMAGE": base, "SERVED_MODEL_NAME": name, "SERVED_MODEL_VERSION": version},
                labels={LABEL_MODEL: name, LABEL_VERSION: version},
                rm=True,
                forcerm=True,
                pull=False,
                network_mode="host",
                decode=True,
            )
            _stream(lines, f"build {reference} from {base}")
        except ImageError as exc:
            if not client.images.list(name=base):
                raise ImageError(
                    f"{exc}: the base image {base} is not on this engine and could not be pulled; "
                    "set serving.base_image to an image the engine has (scripts/docker-engine.sh start "
                    f"builds the stand-in {STANDIN_BASE_IMAGE})"
                ) from None
            raise
        except (APIError, DockerException) as exc:
            raise ImageError(f"build of {reference} from base {base} failed: {exc}") from None
    return reference


def push_image(config: ModelOpsConfig, reference: str, *, client: docker.DockerClient | None = None) -> str:
    """Push to the registry named in the reference; return the pushed digest (``sha256:...``)."""
    from docker.errors import APIError, DockerException  # lazy: see the module's docstring

    repository, tag = split_reference(reference)
    auth = _auth_config(config)  # a missing secret fails here, before any network call
    check_registry_reachable(repository.split("/", 1)[0])
    client = client or docker_client()
    _log().info("pushing %s%s", reference, f" as {auth['username']}" if auth else "")
    try:
        lines = _stream(
            client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth),
            f"push {reference}",
        )
    except (APIError, DockerException) as exc:
        raise ImageError(f"push of {reference} failed: {exc}") from None
    digest = next((line["aux"]["Digest"] for line in lines if "Digest" in (line.get("aux") or {})), "")
    _log().info("pushed %s %s", reference, digest)
    return digest


def pull_image(config: ModelOpsConfig, reference: str, *, client: docker.DockerClient | None = None) -> None:
    from docker.errors import APIError, DockerException  # lazy: see the module's docstring

    repository, tag = split_reference(reference)
    check_registry_reachable(repository.split("/", 1)[0])
    client = client or docker_client()
    try:
        _stream(
            client.api.pull(repository, tag=tag, stream=True, decode=True, auth_config=_auth_config(config)),
            f"pull {reference}",
        )
    except (APIError, DockerException) as exc:
        raise ImageError(f"pull of {reference} failed: {exc}") from None


def remove_local_image(reference: str, *, client: docker.DockerClient | None = None) -> None:
    from docker.errors import ImageNotFound  # lazy: see the module's docstring

    client = client or docker_client()
    try:
        client.images.remove(reference, force=True)
    except ImageNotFound:
        pass
