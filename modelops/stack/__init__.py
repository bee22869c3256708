"""The embedded stack: Prefect server + process worker + deployments, MLflow, PostgreSQL on 127.0.0.1.

Python API (the CLI ``modelops up | status | down`` is a thin layer over it)::

    from modelops.config import load_config
    from modelops.stack import endpoints, use_stack_environment
    from modelops.stack.manager import up, status, down

    config = load_config()
    use_stack_environment(config)      # PREFECT_API_URL / MLFLOW_TRACKING_URI, unless already set
    ends = endpoints(config)           # Endpoints(prefect_api_url, prefect_ui_url, mlflow_uri, database_url)

This package imports nothing heavy (no Prefect, no MLflow): call ``use_stack_environment`` before
importing them so their settings pick the variables up. :mod:`modelops.stack.manager` starts and stops
the processes; it imports the serving targets, and with them Prefect: import it after that call
(or point an already imported Prefect with ``modelops.integrations.prefect_api.use_prefect_api``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

from modelops.stack.state import load_state

if TYPE_CHECKING:
    from modelops.config import ModelOpsConfig


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


__all__ = ["Endpoints", "StackNotRunning", "endpoints", "use_stack_environment"]
