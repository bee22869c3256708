"""The ks-check flow against real PostgreSQL and a real (temporary) Prefect server."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pytest
from support import http_client
from support.approval import read_input
from support.scoring_log import insert_scores, labelled_sample

from modelops.config import ModelOpsConfig

pytestmark = pytest.mark.slow


def _config(dsn: str, **monitoring: Any) -> ModelOpsConfig:
    settings = {
        "ks_threshold": 0.3,
        "min_sample": 100,
        "window": {"kind": "count", "size": 1000},
        **monitoring,
    }
    return ModelOpsConfig(database={"url": dsn}, monitoring=settings)


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def model_events(model: str, expect: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Events about ``modelops.model.<model>`` as stored by the server (they arrive asynchronously)."""
    body = {"filter": {"resource": {"id": [f"modelops.model.{model}"]}}, "limit": 50}
    deadline = time.monotonic() + timeout
    while True:
        events = http_client.post(f"{_api()}/events/filter", json=body).json()["events"]
        if len(events) >= expect or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def _checks(dsn: str, model: str) -> list[tuple]:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT status, ks, n, n_events, model_version FROM modelops.ks_checks WHERE model_name = %s"
            " ORDER BY id",
            (model,),
        )
        return cursor.fetchall()


def _model() -> str:
    return f"ks-{uuid.uuid4().hex[:8]}"


def test_ok_check_stores_row_emits_event_and_publishes_trend(prefect_harness, scoring_db):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.ks_check import ks_check
    from modelops.integrations.prefect_client import prefect_client

    model = _model()
    scores, labels = labelled_sample(1500, 2.0, seed=11)
    insert_scores(scoring_db, model, "4", scores, labels, label_table_share=0.3)
    first = ks_check(model_name=model, version="4", config=_config(scoring_db))
    second = ks_check(model_name=model, version="4", config=_config(scoring_db))
    assert first["status"] == second["status"] == "ok" and first["n"] == 1000
    assert first["ks"] == pytest.approx(second["ks"]) and first["ks"] >= 0.3
    assert [row[0] for row in _checks(scoring_db, model)] == ["ok", "ok"]

    events = model_events(model, expect=2)
    assert {e["event"] for e in events} == {"modelops.performance.ok"}
    payload = events[0]["payload"]
    assert payload["model"] == model and payload["version"] == "4"
    assert (
        payload["ks"] == pytest.approx(first["ks"]) and payload["threshold"] == 0.3 and payload["n"] == 1000
    )
    assert payload["window"]["kind"] == "count" and payload["window"]["size"] == 1000
    assert events[0]["resource"]["prefect.resource.name"] == model

    with prefect_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[first["artifact"]]))
        )
    assert len(artifacts) == 2  # one version per check under the same key
    markdown = max(artifacts, key=lambda a: a.created).data
    assert first["artifact"] == f"ks-{model}"
    assert "## KS trend (last 2 checks" in markdown and markdown.count("| 4 | ok |") == 2


def test_degraded_check_emits_degraded(prefect_harness, scoring_db):
    from flows.ks_check import ks_check

    model = _model()
    scores, labels = labelled_sample(1200, 0.1, seed=12)
    insert_scores(scoring_db, model, "1", scores, labels)
    result = ks_check(model_name=model, version="1", config=_config(scoring_db))
    assert result["status"] == "degraded" and result["ks"] < 0.3
    events = model_events(model)
    assert [e["event"] for e in events] == ["modelops.performance.degraded"]
    assert events[0]["payload"]["ks"] == pytest.approx(result["ks"])
    assert _checks(scoring_db, model)[0][0] == "degraded"


def test_insufficient_data_is_stored_but_never_degraded(prefect_harness, scoring_db):
    from flows.ks_check import ks_check

    model = _model()
    scores, labels = labelled_sample(60, 0.0, seed=13)
    insert_scores(scoring_db, model, "1", scores, labels)
    result = ks_check(model_name=model, version="1", config=_config(scoring_db))
    assert result["status"] == "insufficient_data" and result["ks"] is None
    assert _checks(scoring_db, model) == [("insufficient_data", None, 60, int(labels.sum()), "1")]
    time.sleep(2)
    assert model_events(model, expect=0, timeout=0) == []


def test_label_free_drift_is_reported_and_emitted(prefect_harness, scoring_db):
    from flows.ks_check import ks_check

    model = _model()
    rng = np.random.default_rng(21)
    scores, labels = labelled_sample(800, 2.0, seed=14)
    features = [
        {"LOAN": float(v), "JOB": j}
        for v, j in zip(rng.normal(9000, 3000, 800), rng.choice(["Mgr", "Other"], 800), strict=True)
    ]
    insert_scores(scoring_db, model, "2", scores, labels, features=features)
    reference = pd.DataFrame(
        {
            "LOAN": rng.normal(20000, 5000, 3000),
            "JOB": rng.choice(["Mgr", "Other"], 3000),
            "score": rng.beta(2, 6, 3000),
        }
    )
    result = ks_check(model_name=model, version="2", config=_config(scoring_db), reference=reference)
    assert result["drift"]["drifted_features"] == ["LOAN"] and result["drift"]["detected"]
    names = {e["event"] for e in model_events(model, expect=2)}
    assert names == {"modelops.performance.ok", "modelops.drift.detected"}


def test_database_down_emits_monitoring_failed_without_review(prefect_harness):
    from flows.ks_check import ks_check

    model = _model()
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    result = ks_check(
        model_name=model, version="1", config=_config(dead), database_url=dead, review_timeout_s=0
    )
    assert result["status"] == "error" and "cannot connect to the scoring-log database" in result["error"]
    events = model_events(model)
    assert (
        events[0]["event"] == "modelops.monitoring.failed" and "127.0.0.1:1" in events[0]["payload"]["error"]
    )


def _answer_reviews(model: str, answers: list[dict[str, Any]], out: dict[str, Any]) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.flow_runs import resume_flow_run

    from modelops.integrations.prefect_client import prefect_client

    answered: set[str] = set()
    deadline = time.monotonic() + 240
    with prefect_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["monitoring-review", f"model:{model}"])
                )
            )
            for run in runs:
                if (
                    run.state.type.value == "PAUSED"
                    and str(run.id) not in answered
                    and run.state.state_details.run_input_keyset
                ):
                    read_input(run.id, run.state.state_details.run_input_keyset["schema"])  # stored first
                    resume_flow_run(run.id, run_input=answers[len(answered)])
                    answered.add(str(run.id))
            if len(answered) == len(answers):
                out["answered"] = answered
                return
            time.sleep(0.2)


def test_review_step_reruns_then_acknowledges(prefect_harness):
    from flows.ks_check import ks_check

    model = _model()
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    out: dict[str, Any] = {}
    answers = [
        {"action": "rerun", "reviewer": "ops", "comment": "restarted db"},
        {"action": "acknowledge", "reviewer": "ops", "comment": "giving up for now"},
    ]
    helper = threading.Thread(target=_answer_reviews, args=(model, answers, out), daemon=True)
    helper.start()
    result = ks_check(
        model_name=model, version="1", config=_config(dead), database_url=dead, review_timeout_s=60
    )
    helper.join(10)
    assert len(out.get("answered", ())) == 2
    assert result["status"] == "error" and result["review"]["action"] == "acknowledge"
    assert [e["event"] for e in model_events(model, expect=2)] == ["modelops.monitoring.failed"] * 2


def test_review_times_out(prefect_harness):
    from flows.ks_check import ks_check

    model = _model()
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    result = ks_check(
        model_name=model, version="1", config=_config(dead), database_url=dead, review_timeout_s=2
    )
    assert result["status"] == "error" and result["review"]["action"] == "timeout"


def test_cli_ks_check_prints_the_result(prefect_harness, scoring_db, capsys):
    from modelops.cli import main

    model = _model()
    scores, labels = labelled_sample(500, 2.0, seed=15)
    insert_scores(scoring_db, model, "3", scores, labels)
    code = main(["ks-check", "--model", model, "--version", "3", "--database-url", scoring_db])
    out = capsys.readouterr().out
    assert code == 0 and f"{model} v3: ok  KS 0." in out and "n=500" in out and f"ks-{model}" in out
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    assert main(["ks-check", "--model", model, "--version", "3", "--database-url", dead]) == 1
    assert "cannot connect" in capsys.readouterr().out
