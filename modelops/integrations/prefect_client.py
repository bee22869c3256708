"""``prefect.get_client`` with one TLS context per process instead of one per client.

Prefect's client builds a new ``ssl.SSLContext`` each time (loading a CA bundle, ~10-20 ms of CPU;
see :mod:`modelops.tls`), and the project opens short-lived clients in loops: a wait for a run's
state, the demo's polls, each approval answered. :func:`prefect_client` hands Prefect a context
built once from the same settings Prefect reads (``PREFECT_API_SSL_CERT_FILE``, else certifi's
bundle; ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY``), cached per their values, so verification is
what Prefect itself would have set up.

Prefect's own code opens clients too, with no way to pass them a context: ``prefect deploy`` opened
~50 for the five deployments of ``prefect.yaml`` (1.3 CPU-seconds of the deployment step of ``up``),
and a flow run's engine ~5 (its context, log and event handlers). :func:`share_tls_context` makes
every client of the process take the shared context when it is given none; the deployment step and
the engine standby (before it forks a run) call it.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import Any, Literal, overload

import certifi
from prefect.client.orchestration import PrefectClient, SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY


@functools.cache
def _context(ca_file: str, skip_verify: bool) -> ssl.SSLContext:
    if skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


def prefect_tls_context() -> ssl.SSLContext:
    """The context Prefect's client would build from the current settings, built once per value."""
    return _context(
        PREFECT_API_SSL_CERT_FILE.value() or certifi.where(),
        bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()),
    )


@overload
def prefect_client(*, sync_client: Literal[True]) -> SyncPrefectClient: ...
@overload
def prefect_client(*, sync_client: Literal[False] = ...) -> PrefectClient: ...


def prefect_client(*, sync_client: bool = False) -> PrefectClient | SyncPrefectClient:
    """``get_client(sync_client=...)`` for the current Prefect settings, with the shared TLS context."""
    settings: dict[str, Any] = {"verify": prefect_tls_context()}
    if sync_client:
        return get_client(settings, sync_client=True)
    return get_client(httpx_settings=settings)


def share_tls_context() -> None:
    """Every Prefect client this process creates from now on, Prefect's own included, gets the shared
    context when its ``httpx_settings`` bring no ``verify`` (Prefect would build a new context then).
    Idempotent; the context itself is built on the first client, from the settings of that moment."""
    for client_class in (PrefectClient, SyncPrefectClient):
        if not getattr(client_class.__init__, "_shares_tls_context", False):
            client_class.__init__ = _with_shared_context(client_class.__init__)  # type: ignore[method-assign]


def _with_shared_context(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, httpx_settings: dict[str, Any] | None = None, **kwargs: Any) -> None:
        settings = dict(httpx_settings or {})
        if "verify" not in settings:
            settings["verify"] = prefect_tls_context()
        init(self, *args, httpx_settings=settings, **kwargs)

    __init__._shares_tls_context = True  # type: ignore[attr-defined]
    return __init__
