"""Where the Docker engine is: light (no Docker SDK, no Prefect), so the stack's supervisor can ask.

``MODELOPS_DOCKER_HOST`` or ``DOCKER_HOST`` when set, else the address ``scripts/docker-engine.sh
start`` wrote to ``$MODELOPS_DOCKER_HOME/docker-host`` (default ``/var/lib/modelops-docker``), else
``None`` (Docker's default socket).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DOCKER_HOME = "/var/lib/modelops-docker"


def docker_host() -> str | None:
    for variable in ("MODELOPS_DOCKER_HOST", "DOCKER_HOST"):
        if os.environ.get(variable):
            return os.environ[variable]
    home = Path(os.environ.get("MODELOPS_DOCKER_HOME") or DEFAULT_DOCKER_HOME)
    marker = home / "docker-host"
    if marker.is_file():
        return marker.read_text().strip() or None
    return None
