"""The one way a flow of the loop is declared: a Prefect flow that runs on a real Prefect server.

Called from Python with no Prefect API configured, Prefect 3 would quietly start a temporary
server, and the run, its artifacts and its events would vanish with it (a degraded KS found that
way launches no retrain). A flow declared here checks, before Prefect does anything, that an API
URL is configured (``PREFECT_API_URL``, or the ``prefect.toml`` that ``modelops up`` writes in the
project root) and answers; otherwise it raises :class:`PrefectUnreachable` saying to run
``modelops up`` or set ``PREFECT_API_URL``. Inside a running flow (a subflow, or a run the worker
started) there is nothing to check. Setting ``PREFECT_SERVER_EPHEMERAL_ENABLED=true`` is asking for
the temporary server: Prefect then starts it, and says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

import httpx
from prefect import Flow
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL

from modelops.integrations.prefect_api import PrefectUnreachable, unreachable_message
from modelops.tls import tls_context

P = ParamSpec("P")
R = TypeVar("R")

NO_API_MESSAGE = (
    "no Prefect API is configured for this process, and a temporary server would lose the run: "
    "start the stack (modelops up) and run from the project root, where it writes prefect.toml, "
    "or set PREFECT_API_URL"
)


def require_prefect_api(timeout_s: float = 10.0) -> str:
    """The configured Prefect API URL, after checking it answers; else :class:`PrefectUnreachable`."""
    url = PREFECT_API_URL.value()
    if not url:
        raise PrefectUnreachable(NO_API_MESSAGE)
    try:
        # any HTTP answer: a server is there
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s, verify=tls_context())
    except (httpx.ReadTimeout, httpx.WriteTimeout):
        pass  # it accepted the connection: a server is there, only slow (a loaded machine); Prefect retries
    except httpx.TransportError:
        raise PrefectUnreachable(unreachable_message(url)) from None
    return url


def _temporary_server_requested() -> bool:
    return os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "").strip().lower() in {"1", "true", "yes"}


class StackFlow(Flow[P, R]):
    """A Prefect ``Flow`` whose top-level call first checks that the Prefect API is there."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if FlowRunContext.get() is None and not (
            PREFECT_API_URL.value() is None and _temporary_server_requested()
        ):
            require_prefect_api()
        return super().__call__(*args, **kwargs)


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...


@overload
def flow(**options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(fn: Callable[P, R] | None = None, /, **options: Any) -> Any:
    """``prefect.flow`` with the same options, declaring a :class:`StackFlow` (typed as a ``Flow``)."""
    if fn is not None:
        return StackFlow(fn, **options)

    def declare(function: Callable[P, R]) -> Flow[P, R]:
        return StackFlow(function, **options)

    return declare


__all__ = ["NO_API_MESSAGE", "StackFlow", "flow", "require_prefect_api"]
