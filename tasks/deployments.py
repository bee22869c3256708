"""Prefect deployments: start the lifecycle of a new version as its own run."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from modelops.deployments import LIFECYCLE
from tasks.base import task


@task("start-lifecycle")
def start_lifecycle(model_name: str, version: str, config_name: str | None, switches: dict[str, bool]) -> str:
    """The id of a new ``lifecycle`` run for ``version``: it waits for a reviewer (not a subflow)."""
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: a FlowRun, not a coroutine
        LIFECYCLE,
        parameters={
            "model_name": model_name,
            "candidate_version": version,
            "config": config_name,
            "notify_teams": switches["teams"],
            "notify_email": switches["email"],
        },
        timeout=0,
        as_subflow=False,
        tags=["modelops", f"model:{model_name}", "retrained"],
    )
    get_run_logger().info(
        "lifecycle run %s started for %s v%s: it waits for a reviewer", run.name, model_name, version
    )
    return str(run.id)
