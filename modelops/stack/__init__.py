"""The embedded stack: Prefect server + process worker + deployments, MLflow, PostgreSQL on 127.0.0.1.

Python API (the CLI ``modelops up | status | down`` is a thin layer over it)::

    from modelops.config import load_config
    from modelops.stack import endpoints, use_stack_environment, up, status, down

    config = load_config()
    use_stack_environment(config)      # PREFECT_API_URL / MLFLOW_TRACKING_URI, unless already set
    ends = endpoints(config)           # Endpoints(prefect_api_url, prefect_ui_url, mlflow_uri, database_url)

This module imports nothing heavy (no Prefect, no MLflow): call ``use_stack_environment`` before
importing them so their settings pick the variables up.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from modelops.config import ModelOpsConfig
    from modelops.stack.manager import ComponentStatus
    from modelops.stack.state import StackState


class StackNotRunning(RuntimeError):
    """The embedded stack is needed but not up; the message says to run ``modelops up``."""


class Endpoints(NamedTuple):
    prefect_api_url: str
    prefect_ui_url: str
    mlflow_uri: str
    database_url: str


def endpoints(config: ModelOpsConfig) -> Endpoints:
    """Where the stack's services are. ``database_url`` is the configured DSN (``database.url`` or
    ``MODELOPS_DATABASE_URL``) or the embedded server's DSN from the state file.

    Raises :class:`StackNotRunning` when no DSN is configured and the embedded stack is not up.
    """
    return Endpoints(
        prefect_api_url=config.prefect_api_url,
        prefect_ui_url=config.prefect_ui_url,
        mlflow_uri=config.mlflow_uri,
        database_url=config.database.url or _embedded_database_url(config),
    )


def _embedded_database_url(config: ModelOpsConfig) -> str:
    from modelops.stack.state import load_state

    state = load_state(config.stack_home)
    if state is None or not state.database_url:
        raise StackNotRunning(
            f"no database: the embedded stack is not up (no state in {config.stack_home}); "
            "run `modelops up`, or set MODELOPS_DATABASE_URL / database.url to a PostgreSQL DSN"
        )
    return state.database_url


def use_stack_environment(config: ModelOpsConfig) -> None:
    """Point Prefect and MLflow clients of this process at the stack (variables already set win)."""
    os.environ.setdefault("PREFECT_API_URL", config.prefect_api_url)
    os.environ.setdefault("MLFLOW_TRACKING_URI", config.mlflow_uri)


def up(config: ModelOpsConfig) -> StackState:
    """Start what is not running, wait until healthy, apply prefect.yaml. Raises ``StackError``."""
    from modelops.stack.manager import up as _up

    return _up(config)


def status(config: ModelOpsConfig) -> list[ComponentStatus]:
    from modelops.stack.manager import status as _status

    return _status(config)


def down(config: ModelOpsConfig) -> list[str]:
    from modelops.stack.manager import down as _down

    return _down(config)


__all__ = ["Endpoints", "StackNotRunning", "down", "endpoints", "status", "up", "use_stack_environment"]
