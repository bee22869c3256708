"""``prefect.get_client`` with one TLS context per process instead of one per client.

Prefect's client builds a new ``ssl.SSLContext`` each time (loading a CA bundle, ~10-20 ms of CPU;
see :mod:`modelops.tls`), and the project opens short-lived clients in loops: a wait for a run's
state, the demo's polls, each approval answered. :func:`prefect_client` hands Prefect a context
built once from the same settings Prefect reads (``PREFECT_API_SSL_CERT_FILE``, else certifi's
bundle; ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY``), cached per their values, so verification is
what Prefect itself would have set up.
"""

from __future__ import annotations

import functools
import ssl
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
