"""Scoring-log data for tests: labelled score samples, rows in PostgreSQL, records in a sidecar spool.

``insert_scores`` writes rows as the sidecar does (``modelops.scoring_log``, late labels in
``modelops.labels``); ``write_records`` writes spool files for the sidecar to ship.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2
from psycopg2.extras import execute_values

from modelops.scoring.records import encode_record
from modelops.scoring.spool import SpoolWriter


def labelled_sample(
    n: int, separation: float, event_rate: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and 0/1 labels where events score higher by ``separation`` (on the logit scale)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < event_rate).astype(int)
    scores = 1 / (1 + np.exp(-(rng.normal(size=n) + separation * labels - 1)))
    return scores, labels


def insert_scores(
    dsn: str,
    model: str,
    version: str,
    scores: Sequence[float],
    labels: Sequence[int | None],
    *,
    label_table_share: float = 0.0,
    features: list[dict] | None = None,
    start: datetime | None = None,
    schema: str = "modelops",
) -> None:
    """Rows as the sidecar writes them; a share of the labels arrives later via the labels table."""
    start = start or datetime.now(UTC) - timedelta(minutes=30)
    rng = np.random.default_rng(1)
    rows, late = [], []
    for i, (score, label) in enumerate(zip(scores, labels, strict=True)):
        request_id = str(uuid.uuid4())
        label_later = label is not None and rng.random() < label_table_share
        rows.append(
            (
                request_id,
                start + timedelta(milliseconds=i),
                model,
                version,
                json.dumps(features[i] if features else {"LOAN": 1000 + i}),
                float(score),
                int(score >= 0.5),
                1.0,
                None if label_later else (None if label is None else int(label)),
            )
        )
        if label_later:
            late.append((request_id, int(label)))  # type: ignore[arg-type]  # label_later: not None
    connection = psycopg2.connect(dsn)
    with connection, connection.cursor() as cursor:
        execute_values(
            cursor,
            f"INSERT INTO {schema}.scoring_log (request_id, scored_at, model_name, model_version,"
            " features, score, decision, latency_ms, label) VALUES %s",
            rows,
            page_size=2000,
        )
        if late:
            execute_values(cursor, f"INSERT INTO {schema}.labels (request_id, label) VALUES %s", late)
        cursor.execute(f"ANALYZE {schema}.scoring_log")
    connection.close()


def record(i: int = 0, **overrides: Any) -> dict[str, Any]:
    """One scoring record as the serving side spools it; ``i`` varies the values."""
    base = {
        "request_id": str(uuid.uuid4()),
        "scored_at": datetime.now(UTC).isoformat(),
        "model_name": "hmeq-risk",
        "model_version": "1",
        "features": {"LOAN": 1000.0 + i, "DEBTINC": None, "JOB": "Other", "REASON": ""},
        "score": (i % 100) / 100,
        "decision": int((i % 100) >= 50),
        "latency_ms": 0.8,
        "label": i % 2,
        "period": 1,
    }
    base.update(overrides)
    return base


def write_records(spool: Path, n: int, per_file: int = 1000, finish: bool = True) -> list[str]:
    """``n`` records into spool files of ``per_file`` lines; returns their request ids."""
    writer = SpoolWriter(spool, max_records=per_file, max_age_s=3600)
    ids = []
    for start in range(0, n, 100):
        batch = [record(i) for i in range(start, min(start + 100, n))]
        ids += [r["request_id"] for r in batch]
        writer.write_lines(encode_record(r) for r in batch)
    if finish:
        writer.close()
    return ids


def table_counts(dsn: str) -> tuple[int, int]:
    """(rows, distinct request ids) in ``modelops.scoring_log``."""
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*), count(DISTINCT request_id) FROM modelops.scoring_log")
        total, distinct = cursor.fetchone()
    connection.close()
    return total, distinct


def has_scoring_log_table(dsn: str) -> bool:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('modelops.scoring_log') IS NOT NULL")
        (present,) = cursor.fetchone()
    connection.close()
    return present
