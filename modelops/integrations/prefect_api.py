"""This process's Prefect client: pointing it at the configured API, and naming an unreachable one.

Prefect reads ``PREFECT_API_URL`` once, when it is imported. A process that imported Prefect before
it knew where the stack is (any module importing a flow does) points its client with
:func:`use_prefect_api`, which sets Prefect's own settings for the block it wraps.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import httpx
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from modelops.config import ModelOpsConfig


class PrefectUnreachable(RuntimeError):
    """The Prefect API does not answer; the message names its URL and the fix."""


@contextmanager
def use_prefect_api(config: ModelOpsConfig) -> Iterator[None]:
    """Point the Prefect client at ``config.prefect_api_url`` (the stack's) unless PREFECT_API_URL is set."""
    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings({PREFECT_API_URL: config.prefect_api_url}):
        yield


@contextmanager
def prefect_api_reachable() -> Iterator[None]:
    """Turn "the Prefect API is not there" into :class:`PrefectUnreachable` with the fix."""
    try:
        yield
    except (httpx.TransportError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "Failed to reach API" not in str(exc):
            raise
        raise PrefectUnreachable(unreachable_message()) from None


def start_deployment(name: str, parameters: dict[str, Any]) -> FlowRun:
    """Create a run of deployment ``name`` (``flow/deployment``) for its worker; do not wait for it."""
    return cast(FlowRun, run_deployment(name, parameters=parameters, timeout=0, as_subflow=False))


def unreachable_message(api_url: str | None = None) -> str:
    return (
        f"cannot reach the Prefect API at {api_url or PREFECT_API_URL.value()}: start the stack "
        "(modelops up) or set PREFECT_API_URL"
    )
