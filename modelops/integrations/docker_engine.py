"""Where the Docker engine is, and a client for it: light (no Prefect; the Docker SDK only when a
client is made), so the stack's supervisor and ``modelops down`` can use it.

``MODELOPS_DOCKER_HOST`` or ``DOCKER_HOST`` when set, else the address ``scripts/docker-engine.sh
start`` wrote to ``$MODELOPS_DOCKER_HOME/docker-host`` (default ``/var/lib/modelops-docker``), else
``None`` (Docker's default socket).

It also holds the container clean-up every Docker path shares (:func:`remove_container`,
:func:`stop_container`). The functions import the Docker SDK inside: it is a heavy optional dependency.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import docker

DEFAULT_DOCKER_HOME = "/var/lib/modelops-docker"


class ImageError(RuntimeError):
    """Building, pushing or pulling the serving image failed, or the engine is unreachable; the message
    names the thing and the fix."""


def docker_host() -> str | None:
    for variable in ("MODELOPS_DOCKER_HOST", "DOCKER_HOST"):
        if os.environ.get(variable):
            return os.environ[variable]
    home = Path(os.environ.get("MODELOPS_DOCKER_HOME") or DEFAULT_DOCKER_HOME)
    marker = home / "docker-host"
    if marker.is_file():
        return marker.read_text().strip() or None
    return None


def docker_client(timeout: float = 300) -> docker.DockerClient:
    """A connected client, or ImageError naming the engine address and how to start one."""
    import docker  # lazy: see the module's docstring
    from docker.errors import DockerException

    host = docker_host()
    try:
        client = (
            docker.DockerClient(base_url=host, timeout=timeout) if host else docker.from_env(timeout=timeout)
        )
        client.ping()
    except DockerException as exc:
        where = host or "Docker's default socket"
        raise ImageError(
            f"the Docker engine at {where} is unreachable ({exc}): start it with "
            "`sudo scripts/docker-engine.sh start` or set MODELOPS_DOCKER_HOST / DOCKER_HOST"
        ) from None
    return client


def _removal_in_progress(exc: Exception) -> bool:
    return getattr(exc, "status_code", None) == 409 and "already in progress" in str(exc)


def remove_container(client: Any, container: Any, wait_s: float = 60) -> None:
    """Force-remove ``container`` (a name, an id or an SDK container) and return once it is gone.

    Gone already is fine. A container started with ``auto_remove`` is removed by the engine itself
    once it exits, and a second removal then gets 409 "removal ... is already in progress": that one
    waits for the engine's removal to finish instead of failing.
    """
    from docker.errors import APIError, NotFound  # lazy: see the module's docstring

    reference = getattr(container, "id", container)
    try:
        client.api.remove_container(reference, force=True)
        return
    except NotFound:
        return
    except APIError as exc:
        if not _removal_in_progress(exc):
            raise
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            client.api.inspect_container(reference)
        except NotFound:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the engine's removal of container {reference} did not finish within {wait_s:.0f} s")


def stop_container(container: Any, grace_s: int) -> bool:
    """Stop an SDK container; False when it was gone or being removed already (it ended on its own)."""
    from docker.errors import APIError, NotFound  # lazy: see the module's docstring

    try:
        container.stop(timeout=grace_s)
    except NotFound:
        return False
    except APIError as exc:
        if not _removal_in_progress(exc):
            raise
        return False
    return True
