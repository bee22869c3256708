"""A person approves a champion in the real Prefect UI: Debian's chromium, driven headless by Playwright.

``prefect_test_harness`` serves the API only (no UI), so this test starts ``prefect server start`` on
a free loopback port with its own PREFECT_HOME, like ``modelops up`` does. The approval subflow runs
in its own process against that server and pauses; the browser opens the paused run, clicks
*Resume*, checks that the form shows the Markdown description (candidate vs champion table, links),
fills ``approved``, ``image_tag``, ``reviewer`` and ``comment`` and submits. The flow must then end
with exactly those values. A screenshot of the form is kept under the test's tmp dir.

Needs ``scripts/install-browser.sh`` (chromium from Debian, the ``playwright`` Python package; no
browser download). Skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest
from support.network import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

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

APPROVAL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from flows.approval import request_champion_approval
    from modelops.approval import ApprovalEvidence, ModelEvidence

    evidence = ApprovalEvidence(
        candidate=ModelEvidence(version="3", run_id="abc123", run_url="http://mlflow.test/#/runs/abc123",
                                training_metrics={"ks": 0.52, "auc": 0.87}, window_ks=0.47, window_auc=0.85),
        champion=ModelEvidence(version="2", run_id="def456", run_url="http://mlflow.test/#/runs/def456",
                               training_metrics={"ks": 0.49, "auc": 0.86}, window_ks=0.31, window_auc=0.78),
        window="latest 2000 labelled records (n=2000, events=430)",
        model_url="http://mlflow.test/#/models/m",
    )
    decision = request_champion_approval(sys.argv[1], "3", evidence, approvers=["alice"], timeout_s=150)
    print("DECISION " + json.dumps(decision.as_dict()), flush=True)
    """
)


def _browser_or_skip():
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: run scripts/install-browser.sh (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the Python package playwright is missing: run scripts/install-browser.sh")
    return sync_playwright


def _stop(process: subprocess.Popen) -> None:
    """Stop a process this test started, with the children it started (its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@pytest.fixture
def prefect_ui(tmp_path):
    """``prefect server start`` with the UI, SQLite and PREFECT_HOME in the tmp dir; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-server"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="true",
        PREFECT_UI_API_URL=f"{url}/api",
    )
    log = (tmp_path / "prefect-server.log").open("wb")
    process = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "prefect-server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the Prefect server did not get healthy in 90 s"
            time.sleep(0.5)
        yield url
    finally:
        _stop(process)
        log.close()


def _paused_run(api: str, model: str, job: subprocess.Popen, timeout: float = 60) -> dict:
    body = {"flow_runs": {"tags": {"all_": [f"model:{model}"]}, "state": {"type": {"any_": ["PAUSED"]}}}}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the approval flow ended before pausing: {job.stdout.read()}"
        runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
        if runs:
            return runs[0]
        time.sleep(0.3)
    raise AssertionError(f"no paused approval run for {model} after {timeout} s")


def test_reviewer_approves_in_the_prefect_ui_and_the_flow_continues_with_the_answer(prefect_ui, tmp_path):
    sync_playwright = _browser_or_skip()
    started = time.monotonic()
    model = f"ui-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "approval.py"
    script.write_text(APPROVAL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=f"{prefect_ui}/api", PREFECT_HOME=str(tmp_path / "prefect-client"))
    job = subprocess.Popen(
        [sys.executable, str(script), model],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    screenshot = tmp_path / "approval-form.png"
    try:
        run = _paused_run(f"{prefect_ui}/api", model, job)
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),  # a fresh profile, never the user's
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1100},
            )
            try:
                page = context.new_page()
                page.goto(f"{prefect_ui}/runs/flow-run/{run['id']}", wait_until="networkidle")
                page.get_by_role("button", name="Resume").click()
                dialog = page.get_by_role("dialog")
                heading = dialog.get_by_text(f"Approve champion: {model} v3")
                heading.wait_for(timeout=20_000)

                # The Markdown description renders above the form: table, figures, links, instructions.
                assert dialog.locator("table").count() == 1
                for text in (
                    "candidate v3",
                    "champion v2",
                    "0.4700",
                    "0.3100",
                    "latest 2000 labelled records",
                ):
                    assert dialog.get_by_text(text).first.is_visible(), text
                assert dialog.get_by_role("link", name="abc123").get_attribute("href") == (
                    "http://mlflow.test/#/runs/abc123"
                )
                assert dialog.get_by_role("link", name="Registered model in MLflow").is_visible()
                assert "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" in dialog.locator("code").first.inner_text()

                # The form: a switch and three text fields, in the order of ChampionApproval.
                for label in ("Approved", "Image Tag", "Reviewer", "Comment"):
                    assert dialog.get_by_text(label, exact=False).first.is_visible(), label
                fields = dialog.locator("textarea")
                assert fields.count() == 3
                image_tag, reviewer, comment = (fields.nth(i) for i in range(3))
                assert image_tag.input_value() == "v3"  # the flow's default tag, as initial data
                switch = dialog.get_by_role("switch")
                switch.click()
                assert dialog.locator("input[type=checkbox]").is_checked()
                image_tag.fill("v3-browser")
                reviewer.fill("alice")
                comment.fill("looked at the window figures in the UI")
                page.screenshot(path=str(screenshot))
                dialog.get_by_role("button", name="Submit").click()
                page.wait_for_timeout(500)
            finally:
                context.close()
        output, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(5)
    decision_line = next((line for line in output.splitlines() if line.startswith("DECISION ")), None)
    assert decision_line, output[-3000:]
    decision = json.loads(decision_line.removeprefix("DECISION "))
    assert decision["approved"] is True and decision["reason"] == "approved"
    assert decision["image_tag"] == "v3-browser"
    assert decision["reviewer"] == "alice"
    assert decision["comment"] == "looked at the window figures in the UI"
    assert decision["attempts"] == 1 and decision["flow_run_id"] == run["id"]
    assert screenshot.stat().st_size > 10_000
    keep = os.environ.get("MODELOPS_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(screenshot, keep)
    print(
        f"\napproval form screenshot: {screenshot} ({time.monotonic() - started:.0f} s in the browser part)"
    )
