"""The real Prefect UI in a real browser: ``prefect server start`` with its UI, and Debian's chromium
driven headless by Playwright (``scripts/install-browser.sh``; no browser download).

``prefect_test_harness`` serves the API only (no UI), so browser tests start their own server on a
free loopback port with its own PREFECT_HOME and SQLite file, as ``modelops up`` does, and run their
flows in a subprocess pointed at it (:func:`flow_environment`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import http_client
from support.network import free_port
from support.stack import stop_process_group

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PREFECT = str(Path(sys.executable).parent / "prefect")
SCREENSHOT_DIR_VARIABLE = "MODELOPS_SCREENSHOT_DIR"  # e.g. docs/img: keep the screenshots there


def sync_playwright_or_skip() -> Any:
    """Playwright's ``sync_playwright``, or skip the test with what to install."""
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: run scripts/install-browser.sh (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is missing: run scripts/install-browser.sh")
    return sync_playwright


@contextmanager
def prefect_ui_server(home: Path) -> Iterator[str]:
    """``prefect server start`` with the UI, SQLite and PREFECT_HOME under ``home``; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home / "prefect-server"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="true",
        PREFECT_UI_API_URL=f"{url}/api",
    )
    log_path = home / "prefect-server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log_path.read_text()[-2000:]
            try:
                if http_client.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not get healthy in 180 s"
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(process)
        log.close()


def flow_environment(ui_url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a subprocess whose flows run against the UI server at ``ui_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=f"{ui_url}/api", PREFECT_HOME=str(home / "prefect-client"), **extra)
    return env


@contextmanager
def chromium_page(playwright: Any, home: Path, width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A page of a fresh headless chromium profile (never the user's) at ``width`` x ``height``."""
    context = playwright.chromium.launch_persistent_context(
        str(home / "chromium-profile"),
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height},
    )
    try:
        yield context.new_page()
    finally:
        context.close()


def keep_screenshot(path: Path, name: str) -> None:
    """Copy a screenshot to ``$MODELOPS_SCREENSHOT_DIR/<name>`` when that variable is set (README images)."""
    folder = os.environ.get(SCREENSHOT_DIR_VARIABLE)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)


def outside(inner: dict[str, float], outer: dict[str, float], slack: float = 0.5) -> list[str]:
    """Which sides of the box ``inner`` stick out of ``outer`` (Playwright bounding boxes)."""
    sides = []
    if inner["x"] < outer["x"] - slack:
        sides.append("left")
    if inner["x"] + inner["width"] > outer["x"] + outer["width"] + slack:
        sides.append("right")
    return sides
