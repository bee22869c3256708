"""Migrations and the scoring-log query helpers against real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg2
import pytest

from modelops.config import WindowSettings
from modelops.integrations.database import apply_migrations, redact, resolve_database_url, validate_identifier
from modelops.integrations.scoring_log import (
    count_records,
    fetch_labelled_scores,
    fetch_recent_labelled_records,
    insert_copy_rows,
    load_labels,
)
from modelops.scoring.records import copy_row, encode_record


def test_migrations_are_idempotent_and_recorded(postgres_url):
    assert apply_migrations(postgres_url) == ["001_scoring_log.sql", "002_spool_offsets_and_period_views.sql"]
    assert apply_migrations(postgres_url) == []
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT version FROM modelops.schema_migrations ORDER BY version")
        assert [row[0] for row in cursor.fetchall()] == ["001", "002"]
        cursor.execute("SELECT count(*) FROM modelops.OKDPERF_1_H1")  # the seed-style per-period view
        assert cursor.fetchone() == (0,)
    connection.close()


def test_migrations_go_into_the_configured_schema(postgres_url):
    apply_migrations(postgres_url, "team_b")
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass('team_b.scoring_log') IS NOT NULL, to_regclass('modelops.scoring_log')"
        )
        assert cursor.fetchone() == (True, None)
    connection.close()


@pytest.mark.parametrize("name", ["Modelops", "x; DROP TABLE y", "a-b", "", "1abc"])
def test_unsafe_schema_names_are_refused(name):
    with pytest.raises(ValueError, match="not a safe SQL identifier"):
        validate_identifier(name)


def test_dsn_resolution_order_and_redaction(monkeypatch):
    from modelops.config import load_config

    monkeypatch.setenv("MODELOPS_DATABASE_URL", "postgresql://u:secret@db:5432/x")
    config = load_config()
    assert resolve_database_url(config, "postgresql://explicit/db") == "postgresql://explicit/db"
    assert resolve_database_url(config) == "postgresql://u:secret@db:5432/x"
    assert redact("postgresql://u:secret@db:5432/x") == "postgresql://u:***@db:5432/x"
    assert "secret" not in redact("host=db password=secret user=u")


def _insert(dsn, rows):
    connection = psycopg2.connect(dsn)
    with connection, connection.cursor() as cursor:
        insert_copy_rows(cursor, "".join(copy_row(encode_record(r)) for r in rows))
    connection.close()


def _rows(n, version, start, label=True, period=1):
    rng = np.random.default_rng(len(version) + n)
    labels = rng.integers(0, 2, n)
    scores = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, n), 0, 1)
    return [
        {
            "request_id": str(uuid.uuid4()),
            "scored_at": (start + timedelta(seconds=i)).isoformat(),
            "model_name": "hmeq-risk",
            "model_version": version,
            "features": {"LOAN": 1000.0 + i, "DEBTINC": None, "JOB": "Mgr" if i % 2 else ""},
            "score": float(scores[i]),
            "decision": int(scores[i] >= 0.5),
            "latency_ms": 1.0,
            "label": int(labels[i]) if label else None,
            "period": period,
        }
        for i in range(n)
    ]


def test_fetch_labelled_scores_windows_versions_and_late_labels(postgres_url):
    apply_migrations(postgres_url)
    old = datetime(2026, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC) - timedelta(minutes=5)
    v1 = _rows(300, "1", old)
    v2 = _rows(500, "2", now)
    unlabelled = _rows(50, "2", now + timedelta(hours=1), label=False)
    _insert(postgres_url, v1 + v2 + unlabelled)

    scores, labels, start, end = fetch_labelled_scores(
        postgres_url, "hmeq-risk", "2", WindowSettings(size=200)
    )
    newest = sorted(v2, key=lambda r: r["scored_at"])[-200:]
    assert len(scores) == 200 and labels.dtype == np.int8
    assert sorted(scores.tolist()) == sorted(r["score"] for r in newest)
    assert start == datetime.fromisoformat(newest[0]["scored_at"]) and end == datetime.fromisoformat(
        newest[-1]["scored_at"]
    )

    assert len(fetch_labelled_scores(postgres_url, "hmeq-risk", None, WindowSettings(size=10_000))[0]) == 800
    assert len(fetch_labelled_scores(postgres_url, "hmeq-risk", 1, WindowSettings(size=10_000))[0]) == 300
    recent = fetch_labelled_scores(postgres_url, "hmeq-risk", None, WindowSettings(kind="time", size=60))[0]
    assert len(recent) == 500, "a time window counts minutes back from now"
    empty = fetch_labelled_scores(postgres_url, "other-model")
    assert len(empty[0]) == 0 and empty[2] is None

    # labels arriving later join in, and a corrected label replaces the earlier one
    late = [(r["request_id"], 1) for r in unlabelled]
    assert load_labels(postgres_url, late) == 50
    assert load_labels(postgres_url, [(unlabelled[0]["request_id"], "0")]) == 1
    scores, labels, _, _ = fetch_labelled_scores(postgres_url, "hmeq-risk", "2", WindowSettings(size=50))
    assert len(scores) == 50 and labels.sum() == 49
    assert count_records(postgres_url) == 850
    assert count_records(postgres_url, "hmeq-risk", "2") == 550
    assert count_records(postgres_url, "hmeq-risk", labelled_only=True) == 850

    frame = fetch_recent_labelled_records(postgres_url, "hmeq-risk", limit=100, label_column="BAD")
    assert len(frame) == 100 and set(frame.columns) == {"LOAN", "DEBTINC", "JOB", "BAD"}
    assert frame["DEBTINC"].isna().all() and set(frame["JOB"]) <= {"Mgr", ""}
    assert frame["BAD"].isin([0, 1]).all()


def test_load_labels_refuses_bad_rows_naming_them(postgres_url):
    apply_migrations(postgres_url)
    with pytest.raises(ValueError, match="row 2: request_id 'nope' is not a UUID"):
        load_labels(postgres_url, [(str(uuid.uuid4()), 1), ("nope", 1)])
    with pytest.raises(ValueError, match="row 1: label '7' must be 0 or 1"):
        load_labels(postgres_url, [(str(uuid.uuid4()), "7")])
    assert count_records(postgres_url) == 0
