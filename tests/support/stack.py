"""What the reliability (fault) tests share: real servers they can kill, receivers, waits, configs.

Every fault here is done to a real process: ``kill -9`` of a ``modelops ship``, ``pg_ctl stop`` of
a throwaway PostgreSQL cluster, SIGKILL of a ``modelops serve`` or an ``mlflow server``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import http_client

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[2]

# For a module that runs a whole loop in its module fixture: pytest-timeout counts a fixture's set-up
# against the first test, and the suite's 600 s default is too tight on a loaded 2-core machine (the
# demo of tests/e2e/test_e2e_loop.py alone took 594 s in one loaded run).
WHOLE_LOOP_TIMEOUT = pytest.mark.timeout(2400)


def wait_for(condition: Callable[[], Any], timeout: float, what: str = "condition", interval: float = 0.2):
    """Poll ``condition`` until it returns something truthy (returned); errors count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a server still starting answers with errors
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout:.0f} s (last error: {last!r})")


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process a test started with ``start_new_session=True``, with the children it started (its
    own process group): SIGTERM, then SIGKILL after 15 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def write_config(folder: Path, **sections: dict[str, Any]) -> Path:
    """An environment config YAML in ``folder`` (validated later by ``load_config(path)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reliability.yaml"
    path.write_text(yaml.safe_dump({"environment": "reliability", **sections}))
    return path


# monitoring.schedule_cron for stacks whose test runs the ks-check itself, or needs none: the default
# (every 10 min) would add a scheduled check at a moment that depends on the clock. This one is due
# at 00:00 UTC on 1 January only.
NO_SCHEDULED_CHECK = "0 0 1 1 *"

TINY_TRAINING = {
    "epochs": 2,
    "batch_size": 64,
    "learning_rate": 0.01,
    "hidden_units": [8],
    "train_rows": 600,
}


# ------------------------------------------------------------------------------------ MLflow server
class MlflowServer:
    """The stack's MLflow server (``mlflow server`` in one process, :mod:`modelops.stack.mlflow_process`)
    on sqlite + a local artifact store in ``root``; killable and restartable.

    The port stays the same across restarts, so clients keep their tracking URI.
    """

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = root / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        (root / "artifacts").mkdir(parents=True, exist_ok=True)

    def start(self, wait: bool = True, timeout: float = 300.0) -> None:
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        command = [
            sys.executable, "-m", "modelops.stack.mlflow_process",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 300.0) -> None:
        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited ({self.process.returncode}):\n{self.tail()}")
            return http_client.get(f"{self.url}/health", timeout=2).status_code == 200

        try:
            wait_for(healthy, timeout, f"mlflow server on {self.url} healthy")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL the whole server (its process group): a crash, not a shutdown."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)

    def stop(self) -> None:
        self.kill()
        self.process = None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# ------------------------------------------------------------------------- a Teams-like receiver
class _TeamsHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"1")

    def log_message(self, *args: Any) -> None:
        pass


class TeamsReceiver:
    """A local HTTP endpoint standing in for a Teams Workflow webhook; keeps every card it gets."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _TeamsHandler)
        self.server.received = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/workflows/reliability/invoke"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.server.received  # type: ignore[attr-defined]

    def texts(self) -> list[str]:
        return [json.dumps(card) for card in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -------------------------------------------------------------------------------- Prefect reads
def model_events(model_name: str, event: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Events of ``modelops.model.<model_name>`` as stored by the Prefect server (via its REST API)."""
    from prefect.settings import PREFECT_API_URL

    body: dict[str, Any] = {"filter": {"resource": {"id": [f"modelops.model.{model_name}"]}}, "limit": limit}
    if event:
        body["filter"]["event"] = {"name": [event]}
    response = http_client.post(f"{PREFECT_API_URL.value()}/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return response.json()["events"]


# ---------------------------------------------------------------------------------- serving health
def serving_health(target: Any, model_name: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(healthy, why) of what a target should be serving: a live process AND an AVAILABLE version.

    The project has no serving health check of its own yet (``modelops status`` covers the stack
    only); this is the check the reliability tests use: the target's record of what serves, then the
    TF Serving status endpoint on the public URL clients use.
    """
    from modelops.serving import rest_client

    url = target.config.serving_url
    rollout = target.current(model_name)
    if rollout is None:
        return False, f"no live serving process for {model_name} (the target's record is gone or dead)"
    try:
        statuses = rest_client.model_status(url, model_name, timeout=timeout)
    except rest_client.ServingClientError as exc:
        return False, f"status endpoint failed: {exc}"
    available = {str(s.get("version")) for s in statuses if s.get("state") == "AVAILABLE"}
    if rollout.version not in available:
        return False, f"version {rollout.version} is not AVAILABLE at {url} (available: {sorted(available)})"
    return True, f"{model_name} version {rollout.version} AVAILABLE at {url}"
