"""A person approves a champion in the real Prefect UI: Debian's chromium, driven headless by Playwright.

The approval subflow runs in its own process against a ``prefect server start`` with the UI
(:mod:`support.browser`) and pauses. At 1280 x 800, the browser opens the paused run, finds the
evidence table artifact there before anyone resumes, clicks *Resume*, checks that every column and
every row of the comparison (candidate, champion, Δ; short MLflow links) lies inside the dialog,
with bounding boxes, not just in the DOM, fills ``approved``, ``image_tag``, ``reviewer`` and
``comment`` and submits. The flow must then end with exactly those values. The form's screenshot
is kept under the test's tmp dir (and in ``$MODELOPS_SCREENSHOT_DIR`` when set: docs/img).

Needs ``scripts/install-browser.sh`` (chromium from Debian, the ``playwright`` Python package; no
browser download). Skipped with the reason when either is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from support import http_client
from support.browser import (
    chromium_page,
    flow_environment,
    keep_screenshot,
    outside,
    prefect_ui_server,
    sync_playwright_or_skip,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Full-length (32-character) MLflow run ids: the form must show them short, or the champion's column
# is pushed out of the dialog.
CANDIDATE_RUN = "1a2b3c4d5e6f47a8b9c0d1e2f3a4b5c6"
CHAMPION_RUN = "9f8e7d6c5b4a49382716a5b4c3d2e1f0"

APPROVAL_SCRIPT = textwrap.dedent(
    f"""
    import json, sys
    from flows.approval import request_champion_approval
    from modelops.approval import ApprovalEvidence, ModelEvidence

    training = {{"ks": 0.52, "auc": 0.87, "gini": 0.74, "accuracy": 0.86, "log_loss": 0.3521}}
    evidence = ApprovalEvidence(
        candidate=ModelEvidence(
            version="3", run_id="{CANDIDATE_RUN}",
            run_url="http://mlflow.test/#/experiments/1/runs/{CANDIDATE_RUN}",
            training_metrics=training, window_ks=0.47, window_auc=0.85, window_score_mean=0.2314,
        ),
        champion=ModelEvidence(
            version="2", run_id="{CHAMPION_RUN}",
            run_url="http://mlflow.test/#/experiments/1/runs/{CHAMPION_RUN}",
            training_metrics={{"ks": 0.49, "auc": 0.86, "gini": 0.72, "accuracy": 0.85, "log_loss": 0.3644}},
            window_ks=0.31, window_auc=0.78, window_score_mean=0.1877,
        ),
        window="latest 2000 labelled records of the scoring log (430 events)",
        model_url="http://mlflow.test/#/models/m",
        score_shift_ks=0.1342,
    )
    decision = request_champion_approval(sys.argv[1], "3", evidence, approvers=["alice"], timeout_s=150)
    print("DECISION " + json.dumps(decision.as_dict()), flush=True)
    """
)
COLUMNS = ["", "candidate v3", "champion v2", "Δ"]
ROWS = [
    "window KS",
    "window AUC",
    "window mean score",
    "score shift (KS)",
    "training KS",
    "training AUC",
    "training gini",
    "training accuracy",
    "training log-loss",
    "MLflow run",
]


@pytest.fixture
def prefect_ui(tmp_path):
    with prefect_ui_server(tmp_path) as url:
        yield url


def _paused_run(api: str, model: str, job: subprocess.Popen, timeout: float = 60) -> dict:
    body = {"flow_runs": {"tags": {"all_": [f"model:{model}"]}, "state": {"type": {"any_": ["PAUSED"]}}}}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the approval flow ended before pausing: {job.stdout.read()}"
        runs = http_client.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()
        if runs:
            return runs[0]
        time.sleep(0.3)
    raise AssertionError(f"no paused approval run for {model} after {timeout} s")


def _assert_inside_dialog(page, dialog) -> None:
    """Every header and every cell of the comparison lies inside the dialog's card, horizontally."""
    card = page.locator(".p-modal__card").bounding_box()
    description = dialog.locator("article.markdown-renderer").first
    frame = description.bounding_box()
    assert card is not None and frame is not None
    table = dialog.locator("table")
    assert table.count() == 1
    headers = table.locator("th")
    assert [h.inner_text().strip() for h in headers.all()] == COLUMNS
    wrapper = dialog.locator(".markdown-renderer__table").first
    scroll_width, client_width = wrapper.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert scroll_width <= client_width + 1, f"the table scrolls sideways: {scroll_width} > {client_width}"
    for header in headers.all():
        box = header.bounding_box()
        assert box is not None and box["width"] > 20, header.inner_text()
        assert not outside(box, card), f"column {header.inner_text()!r} sticks out of the dialog: {box}"
        assert not outside(box, frame), f"column {header.inner_text()!r} is cut by the description: {box}"
    rows = table.locator("tbody tr")
    assert [r.locator("td").first.inner_text().strip() for r in rows.all()] == ROWS
    for row in rows.all():
        row.scroll_into_view_if_needed()
        for cell in row.locator("td").all():
            box = cell.bounding_box()
            assert box is not None and not outside(box, card) and not outside(box, frame), (
                f"cell {cell.inner_text()!r} of row {row.inner_text()!r} is outside the dialog: {box}"
            )
            # vertically, the scrolled row is inside the description's visible frame
            assert frame["y"] - 1 <= box["y"] and box["y"] + box["height"] <= frame["y"] + frame["height"] + 1


def test_reviewer_approves_in_the_prefect_ui_and_the_flow_continues_with_the_answer(prefect_ui, tmp_path):
    sync_playwright = sync_playwright_or_skip()
    model = f"ui-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "approval.py"
    script.write_text(APPROVAL_SCRIPT)
    job = subprocess.Popen(
        [sys.executable, str(script), model],
        env=flow_environment(prefect_ui, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    screenshot = tmp_path / "approval-form.png"
    try:
        run = _paused_run(f"{prefect_ui}/api", model, job)
        with sync_playwright() as playwright, chromium_page(playwright, tmp_path, 1280, 800) as page:
            page.goto(f"{prefect_ui}/runs/flow-run/{run['id']}", wait_until="networkidle")

            # Before anyone resumes, the run page lists the evidence as a table artifact.
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text(f"approval-{model}", exact=True).wait_for(timeout=20_000)

            page.get_by_role("button", name="Resume").click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text(f"Approve champion: {model} v3").wait_for(timeout=20_000)
            _assert_inside_dialog(page, dialog)

            # Short links to MLflow, not the 32-character run ids.
            link = dialog.get_by_role("link", name=f"run {CANDIDATE_RUN[:7]}")
            assert link.get_attribute("href") == f"http://mlflow.test/#/experiments/1/runs/{CANDIDATE_RUN}"
            assert dialog.get_by_role("link", name=f"run {CHAMPION_RUN[:7]}").is_visible()
            assert CANDIDATE_RUN not in dialog.inner_text()
            assert "latest 2000 labelled records" in dialog.inner_text()
            assert dialog.get_by_role("link", name="Registered model in MLflow").count() == 1
            assert "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" in dialog.locator("code").first.inner_text()

            # The form: a switch and three text fields, in the order of ChampionApproval.
            for label in ("Approved", "Image Tag", "Reviewer", "Comment"):
                assert dialog.get_by_text(label, exact=False).first.is_visible(), label
            fields = dialog.locator("textarea")
            assert fields.count() == 3
            image_tag, reviewer, comment = (fields.nth(i) for i in range(3))
            assert image_tag.input_value() == "v3"  # the flow's default tag, as initial data
            dialog.get_by_role("switch").click()
            assert dialog.locator("input[type=checkbox]").is_checked()
            image_tag.fill("v3-browser")
            reviewer.fill("alice")
            comment.fill("looked at the window figures in the UI")
            dialog.locator("article.markdown-renderer").first.evaluate("e => e.scrollTo(0, 0)")
            page.locator(".p-modal__card").screenshot(path=str(screenshot))
            dialog.get_by_role("button", name="Submit").click()
            page.wait_for_timeout(500)
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
    assert decision["decided_at"]
    assert screenshot.stat().st_size > 10_000
    keep_screenshot(screenshot, "approval-form.png")
