"""One TLS context per process, and certificates still verified with it (``modelops/tls.py``,
``modelops/integrations/prefect_client.py``).

The project's HTTP clients (the serving client's one-shot requests, Prefect clients) used to build an
``ssl.SSLContext`` each, loading a CA bundle every time; now each process builds one and shares it.
Checked over real HTTP and HTTPS servers on 127.0.0.1: many requests build at most one context, a
self-signed certificate is still refused, and Prefect clients get the context Prefect's own TLS
settings call for.
"""

from __future__ import annotations

import http.server
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    temporary_settings,
)

from modelops.integrations.prefect_client import prefect_client, prefect_tls_context
from modelops.serving.rest_client import HttpTransport, ServingClientError


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(server: http.server.HTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server() -> Iterator[str]:
    yield from _serve(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok))


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1 (openssl): no CA bundle trusts it."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key, cert


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[str]:
    key, cert = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from _serve(server)


@pytest.fixture
def contexts_built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every ``ssl.create_default_context`` call from now on (httpx and Prefect build theirs with it)."""
    built: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        built.append(args or kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return built


def test_many_requests_build_at_most_one_tls_context(http_server, contexts_built):
    transport = HttpTransport(f"http://{http_server}")
    for _ in range(20):
        assert transport.send("GET", "/v1/models/any").status == 200
    assert len(contexts_built) <= 1  # one when no earlier request of this process built it


def test_the_shared_context_still_refuses_a_certificate_no_ca_signed(https_server):
    with pytest.raises(ServingClientError, match="CERTIFICATE_VERIFY_FAILED"):
        HttpTransport(f"https://{https_server}").send("GET", "/v1/models/any")


def test_prefect_clients_share_one_context_per_prefect_tls_setting(contexts_built, tmp_path):
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        for _ in range(10):
            with prefect_client(sync_client=True):
                pass
        assert len(contexts_built) <= 1
        verified = prefect_tls_context()
        assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
        assert prefect_tls_context() is verified
        with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
            insecure = prefect_tls_context()  # what the setting asks Prefect for: no verification
            assert insecure.verify_mode == ssl.CERT_NONE and not insecure.check_hostname
        _, bundle = _self_signed(tmp_path)
        with temporary_settings({PREFECT_API_SSL_CERT_FILE: str(bundle)}):
            own = prefect_tls_context()  # Prefect's own CA bundle setting: only that CA is trusted
            assert own is not verified and len(own.get_ca_certs()) == 1


_PREFECTS_OWN_CLIENTS = """
import asyncio, json, ssl
built = []
real = ssl.create_default_context
def counting(*args, **kwargs):
    built.append(1)
    return real(*args, **kwargs)
ssl.create_default_context = counting
from prefect.client.orchestration import get_client
from modelops.integrations.prefect_client import share_tls_context
share_tls_context()
share_tls_context()  # idempotent: one wrapper, not two
before = len(built)
for _ in range(10):
    with get_client(sync_client=True):
        pass
async def opened():
    for _ in range(5):
        async with get_client():
            pass
asyncio.run(opened())
made = len(built) - before
with get_client(sync_client=True) as client:
    try:
        client.hello()
        outcome = "answered"
    except Exception as exc:
        outcome = repr(exc)
print(json.dumps({"contexts": made, "outcome": outcome}))
"""


@pytest.mark.parametrize("skip_verify", [False, True])
def test_clients_prefect_opens_itself_share_the_context_its_settings_call_for(https_server, skip_verify):
    """``share_tls_context()``: the clients Prefect's own code opens (``prefect deploy``, a run's engine)
    with no settings of ours. In a process of its own: the patch is process-wide."""
    env = {**os.environ, "PREFECT_API_URL": f"https://{https_server}/api"}
    env["PREFECT_API_TLS_INSECURE_SKIP_VERIFY"] = "true" if skip_verify else "false"
    result = subprocess.run(
        [sys.executable, "-c", _PREFECTS_OWN_CLIENTS], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["contexts"] <= 1, "15 clients, one context"
    if skip_verify:
        assert report["outcome"] == "answered"
    else:
        assert "CERTIFICATE_VERIFY_FAILED" in report["outcome"]
