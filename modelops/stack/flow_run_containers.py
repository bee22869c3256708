"""The Docker work pool's flow-run containers, as ``down`` and ``up``'s reconcile see them.

Light on purpose (no Prefect; the Docker SDK only once an engine is asked): ``modelops down`` stops
these containers and imports nothing else of the Docker pool (:mod:`modelops.stack.docker_pool`, which
sets the pool up, imports Prefect).
"""

from __future__ import annotations

from typing import Any

from modelops.config import ModelOpsConfig
from modelops.integrations.docker_engine import ImageError, docker_client, stop_container

# prefect-docker turns Prefect's flow-run labels into Docker labels: prefect.io/x -> io.prefect.x
POOL_LABEL = "io.prefect.work-pool-name"


def is_docker_pool(config: ModelOpsConfig) -> bool:
    return config.stack.work_pool_type == "docker"


def flow_run_containers(pool: str, *, running_only: bool = True) -> list[Any]:
    """The containers the Docker worker started for this pool's flow runs (Prefect labels them)."""
    client = docker_client(timeout=30)
    try:
        return list(
            client.containers.list(  # ignore_removed: a run container may be auto-removed as we list
                all=not running_only, filters={"label": f"{POOL_LABEL}={pool}"}, ignore_removed=True
            )
        )
    finally:
        client.close()


def stop_flow_run_containers(pool: str, grace_s: int = 10) -> list[str]:
    """Stop the pool's flow-run containers (``down``: the process pool's runs stop with the worker's
    tree; these would go on without a worker). Their runs are judged by ``up``'s reconcile. Returns
    the stopped containers' names; an unreachable engine has nothing to stop."""
    try:
        containers = flow_run_containers(pool)
    except ImageError:
        return []
    return [container.name for container in containers if stop_container(container, grace_s)]


def container_state(infrastructure_pid: str) -> str | None:
    """The Docker worker's run record ``<engine url>:<container id>`` → the container's status
    (``running``, ``exited`` ...), ``"gone"`` when the engine no longer has it, ``None`` when the
    engine cannot be asked (nothing can be judged then)."""
    from docker.errors import DockerException, NotFound  # lazy: the Docker SDK is an optional dependency

    _, _, container_id = infrastructure_pid.rpartition(":")
    if not container_id:
        return None
    try:
        client = docker_client(timeout=30)
    except ImageError:
        return None
    try:
        return str(client.containers.get(container_id).status)
    except NotFound:
        return "gone"
    except DockerException:
        return None
    finally:
        client.close()
