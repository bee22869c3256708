"""The KS chart a person sees: a real KS check draws it, MLflow stores it, the Prefect UI shows it.

A model's history is in PostgreSQL (KS checks of v1 sliding under the threshold, v1's approval)
and in a real MLflow server (v2 registered by a retrain). Three real ``ks-check`` runs of v2, in a
subprocess against ``prefect server start`` with its UI, draw the KS history and the drift
figures, store them in the model's MLflow monitoring run and publish the ``ks-<model>`` artifact.
Chromium (1280 x 800) opens the artifact page: both pictures load from MLflow (HTTP 200, PNG) and
are displayed inside the page. The chart's screenshot is kept under the test's tmp dir (and in
``$MODELOPS_SCREENSHOT_DIR`` when set: docs/img).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg2
import pytest
from psycopg2.extras import execute_values
from support import http_client
from support.browser import (
    chromium_page,
    flow_environment,
    keep_screenshot,
    prefect_ui_server,
    sync_playwright_or_skip,
)
from support.network import free_port
from support.scoring_log import insert_scores, labelled_sample
from support.stack import MlflowServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHECK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from flows.ks_check import ks_check
    from modelops.config import ModelOpsConfig

    model, dsn, mlflow_uri, reference = sys.argv[1:5]
    config = ModelOpsConfig(
        database={"url": dsn},
        mlflow={"tracking_uri": mlflow_uri},
        monitoring={"ks_threshold": 0.3, "min_sample": 100, "window": {"kind": "count", "size": 1000}},
    )
    for _ in range(3):
        result = ks_check(model_name=model, version="2", config=config, reference=reference,
                          review_timeout_s=0, teams=False, email=False)
    print("RESULT " + json.dumps(result, default=str), flush=True)
    """
)


@pytest.fixture
def prefect_ui(tmp_path):
    with prefect_ui_server(tmp_path) as url:
        yield url


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow", free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _history(dsn: str, model: str, now: datetime) -> None:
    """v1 approved, then its KS slides under 0.3 over 12 checks, 20 s apart (the demo's pace)."""
    rng = np.random.default_rng(5)
    checks = []
    for i in range(12):
        ks = 0.45 - 0.02 * i + rng.normal(0, 0.004)
        status = "degraded" if ks < 0.3 else "ok"
        checks.append((now - timedelta(seconds=250 - 20 * i), model, "1", status, ks, 0.8, 0.3, 1000, 250))
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        execute_values(
            cursor,
            "INSERT INTO modelops.ks_checks (checked_at, model_name, model_version, status, ks, auc,"
            " threshold, n, n_events) VALUES %s",
            checks,
        )
        cursor.execute(
            "INSERT INTO modelops.approvals (decided_at, model_name, model_version, approved, reviewer,"
            " image_tag) VALUES (%s, %s, '1', true, 'alice', 'v1'), (%s, %s, '2', true, 'bob', 'v2')",
            (now - timedelta(seconds=262), model, now, model),
        )
    connection.close()


def _register_retrained_v2(mlflow_uri: str, model: str) -> None:
    """Versions 1 and 2 in MLflow's registry; 2 carries the retrain's lineage tag."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment(model)
    client.create_registered_model(model)
    for tags in ({}, {"retrained_from": "1", "trigger": "modelops.performance.degraded"}):
        run = client.create_run(experiment)
        client.create_model_version(model, f"runs:/{run.info.run_id}/model", run.info.run_id, tags=tags)


def _traffic(dsn: str, model: str, tmp_path) -> str:
    """v2's labelled traffic (LOAN smaller than in training) and a training reference (CSV)."""
    rng = np.random.default_rng(9)
    scores, labels = labelled_sample(1200, 1.6, seed=21)
    features = [
        {"LOAN": float(loan), "DEBTINC": float(d), "JOB": job}
        for loan, d, job in zip(
            rng.normal(14000, 5000, 1200),
            rng.normal(33, 8, 1200),
            rng.choice(["Mgr", "Other"], 1200),
            strict=True,
        )
    ]
    insert_scores(dsn, model, "2", scores, labels, features=features)
    reference = pd.DataFrame(
        {
            "LOAN": rng.normal(19000, 6000, 3000),
            "DEBTINC": rng.normal(32, 8, 3000),
            "JOB": rng.choice(["Mgr", "Other"], 3000),
            "score": rng.beta(2, 5, 3000),
        }
    )
    path = tmp_path / "reference.csv"
    reference.to_csv(path, index=False)
    return str(path)


def test_the_ks_artifact_page_shows_the_chart_stored_in_mlflow(
    prefect_ui, mlflow_server, scoring_db, tmp_path
):
    sync_playwright = sync_playwright_or_skip()
    model = f"chart-{uuid.uuid4().hex[:8]}"
    _register_retrained_v2(mlflow_server.url, model)
    _history(scoring_db, model, datetime.now(UTC))  # v2 approved after its registration
    reference = _traffic(scoring_db, model, tmp_path)
    script = tmp_path / "check.py"
    script.write_text(CHECK_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), model, scoring_db, mlflow_server.url, reference],
        env=flow_environment(prefect_ui, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["status"] == "ok" and result["drift"]["drifted_features"] == ["LOAN"]

    api = f"{prefect_ui}/api"
    artifacts = http_client.post(
        f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [f"ks-{model}"]}}}, timeout=10
    ).json()
    assert len(artifacts) == 3
    latest = max(artifacts, key=lambda a: a["created"])
    markdown = latest["data"]
    assert "KS bar" not in markdown and "`#" not in markdown  # the old text bar is gone
    urls = [part.split(")")[0] for part in markdown.split("](")[1:] if "/get-artifact?" in part.split(")")[0]]
    assert len(urls) == 2 and all(
        url.startswith(f"{mlflow_server.url}/get-artifact?path=ks-checks/") for url in urls
    )
    for url in urls:  # the same URLs the browser loads: MLflow serves the PNGs
        reply = http_client.get(url, timeout=10)
        assert reply.status_code == 200 and reply.headers["content-type"] == "image/png", url
        assert reply.content.startswith(PNG_SIGNATURE) and len(reply.content) > 10_000

    screenshot = tmp_path / "ks-chart.png"
    with sync_playwright() as playwright, chromium_page(playwright, tmp_path, 1280, 800) as page:
        loaded: dict[str, int] = {}
        page.on(
            "response", lambda r: loaded.__setitem__(r.url, r.status) if "/get-artifact?" in r.url else None
        )
        page.goto(f"{prefect_ui}/artifacts/artifact/{latest['id']}", wait_until="networkidle")
        images = page.locator("article img")
        images.first.wait_for(timeout=20_000)
        assert images.count() == 2
        for index in range(2):
            image = images.nth(index)
            image.scroll_into_view_if_needed()
            natural = image.evaluate("e => e.complete ? [e.naturalWidth, e.naturalHeight] : [0, 0]")
            assert natural == [720, 340], natural  # decoded: the PNG drawn by modelops.monitoring.charts
            box = image.bounding_box()
            assert (
                box is not None and box["width"] >= 500 and box["x"] >= 0 and box["x"] + box["width"] <= 1280
            )
        assert sorted(loaded.values()) == [200, 200] and set(loaded) == set(urls)
        chart = images.first
        chart.scroll_into_view_if_needed()
        heading = page.get_by_role("heading", name="KS over time")
        top, box = heading.bounding_box(), chart.bounding_box()
        assert top is not None and box is not None
        page.screenshot(
            path=str(screenshot),
            clip={
                "x": box["x"] - 16,
                "y": top["y"] - 12,
                "width": box["width"] + 32,
                "height": box["y"] + box["height"] - top["y"] + 24,
            },
        )
    assert screenshot.stat().st_size > 10_000
    keep_screenshot(screenshot, "ks-chart.png")
