"""One TLS context per process for the HTTP clients this project creates.

httpx builds a new ``ssl.SSLContext`` for every client, the one behind each ``httpx.get`` too, and
Prefect's ``get_client`` one for every client it returns (:mod:`modelops.integrations.prefect_client`).
Each loads a CA bundle, ~10-20 ms of CPU, paid by every health check, poll and one-shot call: in a
profiled run of the test suite, 7 % of the samples of all its processes (docs/test-suite-time.md). A context
can be shared by clients and threads, so :func:`tls_context` builds httpx's default once per process,
with the same verification (certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set): pass
it as ``verify=``.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verification, built once per process."""
    return httpx.create_ssl_context()
