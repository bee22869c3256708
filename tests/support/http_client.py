"""``httpx.get`` / ``post`` / ``request`` for tests, with the process's one TLS context.

httpx builds an ``ssl.SSLContext`` (a CA bundle load, ~10-20 ms of CPU) for every call of its
module-level functions; tests poll servers several times a second, so those loads were a fifth of
the pytest workers' CPU (docs/test-suite-time.md). These pass :func:`modelops.tls.tls_context` instead.
"""

from __future__ import annotations

from typing import Any

import httpx

from modelops.tls import tls_context


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=tls_context(), **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return request("POST", url, **kwargs)
