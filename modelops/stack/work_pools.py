"""Create a typed work pool with a base job template, or set the template on the existing one.

Used by ``modelops up`` for the Docker and Kubernetes pools (:mod:`modelops.stack.docker_pool`,
:mod:`modelops.stack.kubernetes_pool`); a pool of another type under that name is an error, never
silently replaced.
"""

from __future__ import annotations

from typing import Any

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


def ensure_pool(name: str, pool_type: str, template: dict[str, Any]) -> str:
    """``"created"`` or ``"updated"``; RuntimeError when ``name`` is a pool of another type."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
                return "created"
            except ObjectAlreadyExists:
                pool = client.read_work_pool(name)  # a worker created it at the same moment
        if pool.type != pool_type:
            raise RuntimeError(
                f"work pool '{name}' exists with type '{pool.type}', not '{pool_type}': choose another "
                "stack.work_pool, or delete the pool (prefect work-pool delete)"
            )
        client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
        return "updated"
