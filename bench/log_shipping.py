"""Benchmark: the log sidecar (spool files -> PostgreSQL) against a raw COPY of the same rows.

    .venv/bin/python -m bench.log_shipping [--rows 200000] [--database-url DSN] [--repeat 2]

Creates a throw-away database on the server (``--database-url``, ``$MODELOPS_TEST_DATABASE_URL``
or postgres@127.0.0.1:5432), writes ``--rows`` scored records (features of generated period 1)
to spool files, then, into the same freshly truncated table:

* **shipped**: the sidecar's full path: read files, check every line, COPY, offsets in the same
  transaction, rotate the files away;
* **raw COPY**: one ``COPY scoring_log FROM STDIN`` of the already formatted rows (the ceiling).

Best of ``--repeat`` runs each. Also times ``fetch_labelled_scores`` over all rows (binary COPY).
Prints a table and one JSON line. Goals: shipped >= 50 % of raw COPY and >= 40 k rows/s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from modelops.config import WindowSettings
from modelops.data.generator import generate_period
from modelops.data.schema import HMEQ_SCHEMA
from modelops.integrations.database import apply_migrations
from modelops.integrations.scoring_log import fetch_labelled_scores
from modelops.scoring.records import COPY_COLUMNS, copy_row, encode_record
from modelops.scoring.sidecar import LogShipper, ShipperSettings
from modelops.scoring.source import records_from_frame
from modelops.scoring.spool import SpoolWriter

SERVER_DSN = os.environ.get("MODELOPS_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def write_spool(spool: Path, rows: int) -> list[bytes]:
    replay = records_from_frame(generate_period(1, rows=min(rows, 20_000)), HMEQ_SCHEMA, period=1)
    start = datetime.now(UTC) - timedelta(hours=1)
    lines = []
    for i in range(rows):
        j = i % len(replay)
        score = (i * 7919 % 1000) / 1000
        lines.append(
            encode_record(
                {
                    "request_id": str(uuid.uuid4()),
                    "scored_at": (start + timedelta(microseconds=i * 50)).isoformat(),
                    "model_name": "hmeq-risk",
                    "model_version": "1",
                    "features": replay.instances[j],
                    "score": score,
                    "decision": int(score >= 0.5),
                    "latency_ms": 0.9,
                    "label": replay.labels[j],
                    "period": 1,
                }
            )
        )
    with SpoolWriter(spool, max_records=50_000, max_age_s=3600) as writer:
        for k in range(0, rows, 1000):
            writer.write_lines(lines[k : k + 1000])
    return lines


def truncate(dsn: str) -> None:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("TRUNCATE modelops.scoring_log, modelops.spool_offsets")
    connection.close()
    with psycopg2.connect(dsn) as connection:
        connection.autocommit = True
        connection.cursor().execute("CHECKPOINT")
    connection.close()


def count(dsn: str) -> int:
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT request_id) FROM modelops.scoring_log")
        (n,) = cursor.fetchone()
    connection.close()
    return n


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-rows", type=int, default=20_000)
    parser.add_argument(
        "--database-url", default=SERVER_DSN, help="a server DSN; a scratch database is made on it"
    )
    args = parser.parse_args()
    result = run(args.rows, args.repeat, args.batch_rows, args.database_url)
    table = [
        ("rows", f"{args.rows:,}"),
        ("sidecar shipped (spool -> table)", f"{result['shipped_rows_per_s']:,.0f} rows/s"),
        ("raw COPY (same rows, same table)", f"{result['raw_copy_rows_per_s']:,.0f} rows/s"),
        ("shipped / raw", f"{result['shipped_vs_raw']:.0%}  (goal >= 50 %, >= 40,000 rows/s)"),
        (
            f"fetch_labelled_scores ({result['fetched_rows']:,} rows)",
            f"{result['fetch_labelled_scores_s']:.3f} s",
        ),
    ]
    width = max(len(k) for k, _ in table)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in table))
    print(json.dumps(result))
    return 0


def run(rows: int, repeat: int = 2, batch_rows: int = 20_000, database_url: str = SERVER_DSN) -> dict:
    """Sidecar shipping vs raw COPY of the same rows into the same table, in a scratch database."""
    name = f"modelops_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    dsn = f"{database_url.rpartition('/')[0]}/{name}"
    work = Path(tempfile.mkdtemp(prefix="modelops-bench-"))
    try:
        apply_migrations(dsn)
        print(f"writing {rows} records to spool files ...", file=sys.stderr)
        lines = write_spool(work / "master", rows)
        copy_text = "".join(copy_row(line) for line in lines)
        shipped_runs, raw_runs = [], []
        for attempt in range(repeat):
            truncate(dsn)
            spool = work / f"spool-{attempt}"
            shutil.copytree(work / "master", spool)
            shipper = LogShipper(
                dsn, ShipperSettings(spool_dir=spool, batch_rows=batch_rows, rotate="delete")
            )
            started = time.perf_counter()
            shipper.run(once=True)
            shipped_runs.append(time.perf_counter() - started)
            if count(dsn) != rows:
                raise RuntimeError("shipping lost or duplicated rows")
            print(f"run {attempt + 1}: shipped in {shipped_runs[-1]:.2f} s", file=sys.stderr)

            truncate(dsn)
            connection = psycopg2.connect(dsn)
            started = time.perf_counter()
            with connection, connection.cursor() as cursor:
                cursor.copy_expert(
                    f"COPY modelops.scoring_log ({', '.join(COPY_COLUMNS)}) FROM STDIN",
                    io.StringIO(copy_text),
                )
            raw_runs.append(time.perf_counter() - started)
            connection.close()
            if count(dsn) != rows:
                raise RuntimeError("raw COPY stored a different number of rows")
            print(f"run {attempt + 1}: raw COPY in {raw_runs[-1]:.2f} s", file=sys.stderr)

        with psycopg2.connect(dsn) as connection:
            connection.autocommit = True
            connection.cursor().execute("ANALYZE modelops.scoring_log")
        connection.close()
        started = time.perf_counter()
        scores, _, _, _ = fetch_labelled_scores(dsn, "hmeq-risk", "1", WindowSettings(size=rows))
        fetch_s = time.perf_counter() - started

        shipped_rate = rows / min(shipped_runs)
        raw_rate = rows / min(raw_runs)
        return {
            "rows": rows,
            "repeat": repeat,
            "shipped_s": shipped_runs,
            "raw_copy_s": raw_runs,
            "shipped_rows_per_s": round(shipped_rate),
            "raw_copy_rows_per_s": round(raw_rate),
            "shipped_vs_raw": round(shipped_rate / raw_rate, 3),
            "fetch_labelled_scores_s": round(fetch_s, 3),
            "fetched_rows": len(scores),
            "goal_met": shipped_rate >= 0.5 * raw_rate and shipped_rate >= 40_000,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    sys.exit(main())
