"""The stack's Docker work pool: flow runs as containers of the flow image (``stack.work_pool_type: docker``).

``modelops up --config docker`` (``infra/config/docker.yaml``) then:

1. applies ``prefect.docker.yaml``, whose build/push steps (prefect-docker's ``build_docker_image`` /
   ``push_docker_image``) build ``infra/docker/flow.Dockerfile`` on ``stack.flow_base_image`` and push it
   to ``stack.flow_image`` tagged :func:`flow_image_tag`; the variables those steps read come from
   :func:`deploy_environment`;
2. creates (or updates) the pool with :func:`base_job_template`: Prefect's Docker worker template with
   this stack's defaults (host network, the stack's URLs and config in the containers' environment, the
   engine's socket when the flows deploy serving containers themselves);
3. starts ``prefect worker start --type docker`` on the pool (:func:`modelops.stack.components.worker`,
   with the engine's address in ``DOCKER_HOST``), supervised like the process worker.

A database URL with a password never goes into the pool's template as a value: it is saved as a
Prefect Secret block (:data:`DATABASE_SECRET_BLOCK`) and the template holds the block reference,
which the worker resolves when it starts a container.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect.blocks.system import Secret

from modelops.config import CONFIG_DIR, ENV_PREFIX, PROJECT_ROOT, ModelOpsConfig, config_path, load_config
from modelops.stack import work_pools

DOCKERFILE = PROJECT_ROOT / "infra" / "docker" / "flow.Dockerfile"
# What flow.Dockerfile copies (and .dockerignore lets through): the inputs the tag's hash covers.
IMAGE_INPUTS = ("pyproject.toml", "requirements/constraints.txt", "modelops", "flows", "tasks", "infra")
IMAGE_HOME = "/home/modelops"  # the flow image's writable home (HOME, PREFECT_HOME, stack.home)
CONTAINER_DOCKER_SOCKET = "/var/run/docker.sock"
DATABASE_SECRET_BLOCK = "modelops-stack-database-url"
# Environment a container must not inherit from `modelops up`'s: paths on this host.
_HOST_ONLY = {"MODELOPS_STACK__HOME", "MODELOPS_STACK__PREFECT_FILE", "MODELOPS_PROJECT_ROOT"}


def project_version() -> str:
    return str(tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"])


def flow_image_tag(config: ModelOpsConfig) -> str:
    """``<version>-<12 hex>``: the hash covers every file the image copies and the base image's name.

    The same sources give the same tag (the build is then a cache hit and the push a no-op); any change
    gives a new tag, so a registry never holds two different images under one tag.
    """
    digest = hashlib.sha256(f"base={config.stack.flow_base_image}\n".encode())
    for relative in IMAGE_INPUTS:
        root = PROJECT_ROOT / relative
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return f"{project_version()}-{digest.hexdigest()[:12]}"


def deploy_environment(config: ModelOpsConfig) -> dict[str, str]:
    """The variables ``prefect.docker.yaml``'s build and push steps read."""
    return {
        "MODELOPS_FLOW_IMAGE": config.stack.flow_image,
        "MODELOPS_FLOW_IMAGE_TAG": flow_image_tag(config),
        "MODELOPS_FLOW_BASE_IMAGE": config.stack.flow_base_image,
        "MODELOPS_PROJECT_ROOT": str(PROJECT_ROOT),
    }


def engine_socket(docker_host: str | None) -> Path | None:
    """The engine's unix socket on this host (``unix:///path``), or None for a TCP/remote engine."""
    if docker_host and docker_host.startswith("unix://"):
        return Path(docker_host.removeprefix("unix://"))
    return None


def container_environment(
    config: ModelOpsConfig, database_url: str | None, environ: dict[str, str] | None = None
) -> dict[str, str]:
    """What a flow-run container needs to reach the stack and read the same configuration.

    The config's name (a path outside ``infra/config`` is mounted, see :func:`base_job_template`) and
    every ``MODELOPS_<SECTION>__<KEY>`` override of this environment, except host paths; the stack's
    MLflow and database URLs. ``PREFECT_API_URL`` comes from the worker itself.
    """
    environ = dict(os.environ if environ is None else environ)
    env = {
        key: value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and "__" in key and key not in _HOST_ONLY
    }
    env.update(
        MODELOPS_CONFIG=_config_reference(environ),
        MLFLOW_TRACKING_URI=config.mlflow_uri,
        PREFECT_HOME=f"{IMAGE_HOME}/.prefect",  # the worker's own PREFECT_HOME is a path on this host
        MODELOPS_STACK__HOME=f"{IMAGE_HOME}/stack",
    )
    dsn = config.database.url or database_url
    if dsn:
        password = urlsplit(dsn).password
        env["MODELOPS_DATABASE_URL"] = (
            "{{ prefect.blocks.secret." + DATABASE_SECRET_BLOCK + " }}" if password else dsn
        )
    return env


def _config_reference(environ: dict[str, str]) -> str:
    path = config_path(environ.get(f"{ENV_PREFIX}CONFIG")).resolve()
    if path.parent == CONFIG_DIR.resolve():
        return path.stem  # in the image under /opt/modelops/infra/config
    return str(path)  # mounted read-only at the same path


def base_job_template(
    config: ModelOpsConfig,
    database_url: str | None,
    docker_host: str | None,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Prefect's Docker worker template with this stack's defaults; a deployment's job variables win.

    * ``network_mode: host``: the stack listens on 127.0.0.1 (and an engine without a bridge has no
      other network);
    * ``env``: :func:`container_environment`;
    * ``image_pull_policy: IfNotPresent`` (tags are content hashes) and ``auto_remove``;
    * with ``serving.target: docker`` the lifecycle builds and runs serving containers itself: the
      engine's socket is mounted (``DOCKER_HOST`` points at it) and the container joins the socket's
      group, so the image's non-root user can use it;
    * a config file outside ``infra/config`` is mounted read-only at its path.
    """
    from prefect_docker.worker import DockerWorker  # lazy: imports Prefect and the Docker SDK

    template = copy.deepcopy(DockerWorker.get_default_base_job_template())
    properties = template["variables"]["properties"]
    env = container_environment(config, database_url, environ)
    volumes: list[str] = []
    create_kwargs: dict[str, Any] = {}
    socket = engine_socket(docker_host)
    if config.serving.target == "docker" and socket is not None:
        volumes.append(f"{socket}:{CONTAINER_DOCKER_SOCKET}")
        env["DOCKER_HOST"] = f"unix://{CONTAINER_DOCKER_SOCKET}"
        env["MODELOPS_DOCKER_HOST"] = env["DOCKER_HOST"]
        try:
            create_kwargs["group_add"] = [str(socket.stat().st_gid)]
        except OSError:
            pass  # not there yet: the container then needs no group to reach it, or cannot anyway
    config_reference = env["MODELOPS_CONFIG"]
    if config_reference.startswith("/"):
        volumes.append(f"{config_reference}:{config_reference}:ro")
    defaults: dict[str, Any] = {
        "env": env,
        "network_mode": "host",
        "image_pull_policy": "IfNotPresent",
        "auto_remove": True,
        "volumes": volumes,
        "container_create_kwargs": create_kwargs or None,
    }
    for key, value in defaults.items():
        properties[key]["default"] = value
    return template


def ensure_pool(name: str, template: dict[str, Any]) -> str:
    """Create the pool with ``template``, or set it on an existing one; returns what was done."""
    return work_pools.ensure_pool(name, "docker", template)


def save_database_secret(dsn: str) -> None:
    """The database URL as a Prefect Secret block (only when it holds a password)."""
    Secret(value=dsn).save(DATABASE_SECRET_BLOCK, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m modelops.stack.docker_pool [--config docker]``: the build/push variables, as exports."""
    parser = argparse.ArgumentParser(
        prog="python -m modelops.stack.docker_pool",
        description="Print the variables prefect.docker.yaml's build and push steps read (export lines).",
    )
    parser.add_argument("--config", default=None, help="environment name or YAML path (default: docker)")
    args = parser.parse_args(argv)
    config = load_config(args.config or os.environ.get(f"{ENV_PREFIX}CONFIG") or "docker")
    for key, value in deploy_environment(config).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
