"""Create a typed work pool with a base job template, or set the template on the existing one.

Used by ``modelops up`` for every pool type: the process pool (:func:`process_pool_template`), the
Docker and Kubernetes pools (:mod:`modelops.stack.docker_pool`, :mod:`modelops.stack.kubernetes_pool`);
a pool of another type under that name is an error, never silently replaced.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.workers.process import ProcessWorker

from modelops.integrations.prefect_client import prefect_client


def engine_command(python: str = sys.executable, standby: bool = True) -> str:
    """The process pool's flow-run command: the standby launcher, or Prefect's engine itself."""
    module = "modelops.stack.engine_standby" if standby else "prefect.engine"
    return f"{shlex.quote(python)} -m {module}"


def process_pool_template(python: str = sys.executable, standby: bool = True) -> dict[str, Any]:
    """Prefect's process-pool template with the flow-run command set to :func:`engine_command`.

    Without a command, Prefect 3.9's process worker starts a run as ``python -m
    prefect.runner._workspace_supervisor``, which imports Prefect, runs the deployment's pull steps and
    then execs ``python -m prefect.engine``, which imports Prefect a second time before the run is
    Running. With the command set, the worker starts the engine (or :mod:`modelops.stack.engine_standby`,
    which hands the run to a process that has imported it already) and the engine runs the pull steps
    (here: ``set_working_directory``) itself. ``python`` is the interpreter of ``modelops up``, the one
    the worker runs on: a process pool is local to its host.
    """
    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = engine_command(python, standby)
    return template


def ensure_pool(name: str, pool_type: str, template: dict[str, Any]) -> str:
    """``"created"`` or ``"updated"``; RuntimeError when ``name`` is a pool of another type."""
    with prefect_client(sync_client=True) as client:
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
