"""Everything that writes or reads the scoring log and the labels in PostgreSQL.

Writers (the log sidecar): COPY batches of rows and, in the same transaction, the spool offsets
they came from. Readers (monitoring, retraining): labelled scores as numpy arrays via binary COPY,
recent labelled records as a DataFrame, counts. ``schema`` is always a validated identifier;
values travel as bound parameters.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import psycopg2
import psycopg2.errors
from psycopg2.extras import execute_values

from modelops.config import WindowSettings
from modelops.integrations.database import DEFAULT_SCHEMA, connect, validate_identifier
from modelops.scoring.records import COPY_COLUMNS

if TYPE_CHECKING:  # pandas only for the readers' DataFrame: the log sidecar starts without it
    import pandas as pd

log = logging.getLogger(__name__)

_COLUMNS = ", ".join(COPY_COLUMNS)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
# One binary-COPY tuple of (score float8, label int2, scored_at timestamptz), none of them NULL.
_SCORE_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l1", ">i4"),
        ("score", ">f8"),
        ("l2", ">i4"),
        ("label", ">i2"),
        ("l3", ">i4"),
        ("ts", ">i8"),
    ]
)


# ---------------------------------------------------------------------------------------- writing
def insert_copy_rows(cursor: Any, copy_text: str, schema: str = DEFAULT_SCHEMA) -> int:
    """Insert COPY text rows (columns :data:`COPY_COLUMNS`) idempotently; returns rows newly inserted.

    Fast path: COPY straight into the table inside a savepoint. Rows already present (a spool file
    shipped again after its offset was lost, a client that re-sent a request id) make that fail with
    a unique violation; then the batch goes through a temp staging table and
    ``INSERT … ON CONFLICT (request_id) DO NOTHING``. Does not commit. Data errors propagate.
    """
    schema = validate_identifier(schema)
    cursor.execute("SAVEPOINT modelops_copy")
    try:
        cursor.copy_expert(f"COPY {schema}.scoring_log ({_COLUMNS}) FROM STDIN", io.StringIO(copy_text))
        inserted = cursor.rowcount
        cursor.execute("RELEASE SAVEPOINT modelops_copy")
        return inserted
    except psycopg2.errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT modelops_copy")
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS scoring_log_staging "
        f"(LIKE {schema}.scoring_log INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    cursor.execute("TRUNCATE scoring_log_staging")
    cursor.copy_expert(f"COPY scoring_log_staging ({_COLUMNS}) FROM STDIN", io.StringIO(copy_text))
    cursor.execute(
        f"INSERT INTO {schema}.scoring_log ({_COLUMNS}) SELECT {_COLUMNS} FROM scoring_log_staging "
        f"ON CONFLICT (request_id) DO NOTHING"
    )
    inserted = cursor.rowcount
    cursor.execute("TRUNCATE scoring_log_staging")
    return inserted


def insert_rows_individually(
    cursor: Any, rows: Sequence[str], schema: str = DEFAULT_SCHEMA
) -> list[str | None]:
    """Insert rows one by one (savepoint each); the error text per row, ``None`` where it went in.

    The slow path for a batch the database refused as a whole (a value PostgreSQL rejects although
    the spool check let it through): good rows still ship, the bad ones are named.
    """
    schema = validate_identifier(schema)
    errors: list[str | None] = []
    for row in rows:
        cursor.execute("SAVEPOINT modelops_row")
        try:
            insert_copy_rows(cursor, row, schema)
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT modelops_row")
            errors.append(f"rejected by PostgreSQL: {str(exc).strip().splitlines()[0]}")
            continue
        cursor.execute("RELEASE SAVEPOINT modelops_row")
        errors.append(None)
    return errors


def save_offsets(cursor: Any, offsets: dict[str, tuple[int, int]], schema: str = DEFAULT_SCHEMA) -> None:
    """Record ``{spool_key: (byte_offset, rows_shipped_now)}``; call in the transaction of the rows."""
    schema = validate_identifier(schema)
    execute_values(
        cursor,
        f"INSERT INTO {schema}.spool_offsets (spool_file, byte_offset, rows_shipped) VALUES %s "
        f"ON CONFLICT (spool_file) DO UPDATE SET byte_offset = EXCLUDED.byte_offset, "
        f"rows_shipped = {schema}.spool_offsets.rows_shipped + EXCLUDED.rows_shipped, updated_at = now()",
        [(key, offset, rows) for key, (offset, rows) in offsets.items()],
    )


def load_offsets(connection: Any, keys: Iterable[str], schema: str = DEFAULT_SCHEMA) -> dict[str, int]:
    schema = validate_identifier(schema)
    keys = list(keys)
    if not keys:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT spool_file, byte_offset FROM {schema}.spool_offsets WHERE spool_file = ANY(%s)", (keys,)
        )
        found = dict(cursor.fetchall())
    connection.commit()
    return found


def forget_offsets(connection: Any, keys: Iterable[str], schema: str = DEFAULT_SCHEMA) -> None:
    """Drop offsets of spool files that have been rotated away (their rows stay)."""
    schema = validate_identifier(schema)
    keys = list(keys)
    if keys:
        with connection, connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {schema}.spool_offsets WHERE spool_file = ANY(%s)", (keys,))


def load_labels(dsn: str, rows: Iterable[tuple[str, int | str]], schema: str = DEFAULT_SCHEMA) -> int:
    """Store late labels ``(request_id, 0|1)`` (or "0"/"1" from a CSV); a later label replaces the earlier."""
    schema = validate_identifier(schema)
    buffer = io.StringIO()
    count = 0
    for number, (request_id, label) in enumerate(rows, start=1):
        try:
            request_text = str(uuid.UUID(str(request_id).strip()))
        except ValueError:
            raise ValueError(f"label row {number}: request_id {request_id!r} is not a UUID") from None
        label_text = str(label).strip()
        if label_text not in {"0", "1", "0.0", "1.0", "True", "False"}:
            raise ValueError(f"label row {number}: label {label!r} must be 0 or 1")
        buffer.write(f"{request_text}\t{1 if label_text in {'1', '1.0', 'True'} else 0}\n")
        count += 1
    if not count:
        return 0
    buffer.seek(0)
    connection = connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE labels_staging (request_id uuid, label smallint) ON COMMIT DROP"
            )
            cursor.copy_expert("COPY labels_staging FROM STDIN", buffer)
            cursor.execute(
                f"INSERT INTO {schema}.labels (request_id, label) "
                f"SELECT DISTINCT ON (request_id) request_id, label FROM labels_staging "
                f"ON CONFLICT (request_id) DO UPDATE SET label = EXCLUDED.label, labelled_at = now()"
            )
    finally:
        connection.close()
    return count


# ---------------------------------------------------------------------------------------- reading
def _model_filter(model_name: str | None, version: str | int | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if model_name is not None:
        clauses.append("s.model_name = %s")
        params.append(model_name)
    if version is not None:
        clauses.append("s.model_version = %s")
        params.append(str(version))
    return (" AND ".join(clauses) or "TRUE"), params


def fetch_labelled_scores(
    dsn: str,
    model_name: str,
    version: str | int | None = None,
    window: WindowSettings | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> tuple[np.ndarray, np.ndarray, datetime | None, datetime | None]:
    """Scores and 0/1 labels of the labelled records in the window, with its first/last scoring time.

    ``window.kind == "count"``: the latest ``size`` labelled records; ``"time"``: those scored in the
    last ``size`` minutes. Read with binary COPY (1 M rows in well under a second).
    """
    schema = validate_identifier(schema)
    window = window or WindowSettings()
    where, params = _model_filter(model_name, version)
    label = "COALESCE(s.label, l.label)"
    query = (
        f"SELECT s.score::float8, {label}::int2, s.scored_at FROM {schema}.scoring_log s "
        f"LEFT JOIN {schema}.labels l USING (request_id) WHERE {where} AND {label} IS NOT NULL"
    )
    if window.kind == "time":
        query += " AND s.scored_at >= now() - %s * interval '1 minute'"
        params.append(window.size)
    else:
        query += " ORDER BY s.scored_at DESC LIMIT %s"
        params.append(window.size)
    connection = connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL work_mem = '64MB'")  # sort a large window in memory, not on disk
            sql = cursor.mogrify(query, params).decode()
            buffer = io.BytesIO()
            cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT binary)", buffer)
        connection.rollback()
    finally:
        connection.close()
    rows = _parse_score_rows(buffer.getvalue())
    if len(rows) == 0:
        return np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int8), None, None
    stamps = rows["ts"].astype(np.int64)
    start = _PG_EPOCH + timedelta(microseconds=int(stamps.min()))
    end = _PG_EPOCH + timedelta(microseconds=int(stamps.max()))
    return rows["score"].astype(np.float64), rows["label"].astype(np.int8), start, end


def _parse_score_rows(data: bytes) -> np.ndarray:
    if not data.startswith(_BINARY_SIGNATURE):
        raise ValueError("unexpected COPY BINARY header from PostgreSQL")
    extension = int.from_bytes(data[15:19], "big")
    body = data[19 + extension : -2]  # the trailer is int16 -1
    if len(body) % _SCORE_ROW.itemsize:
        raise ValueError("unexpected COPY BINARY row layout (a NULL score, label or time?)")
    return np.frombuffer(body, dtype=_SCORE_ROW)


def fetch_recent_labelled_records(
    dsn: str,
    model_name: str,
    limit: int,
    schema: str = DEFAULT_SCHEMA,
    label_column: str = "label",
    version: str | int | None = None,
) -> pd.DataFrame:
    """The latest ``limit`` labelled records of ``model_name``: one column per feature plus the label.

    Oldest first. Missing numeric features come back as NaN, missing categorical ones as "".
    """
    schema = validate_identifier(schema)
    where, params = _model_filter(model_name, version)
    label = "COALESCE(s.label, l.label)"
    connection = connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT s.features::text, {label} FROM {schema}.scoring_log s "
                f"LEFT JOIN {schema}.labels l USING (request_id) WHERE {where} AND {label} IS NOT NULL "
                f"ORDER BY s.scored_at DESC LIMIT %s",
                [*params, int(limit)],
            )
            fetched = cursor.fetchall()
        connection.rollback()
    finally:
        connection.close()
    import pandas as pd

    fetched.reverse()
    frame = pd.DataFrame.from_records([orjson.loads(features) for features, _ in fetched])
    frame[label_column] = np.array([value for _, value in fetched], dtype=np.int64)
    return frame


def count_records(
    dsn: str,
    model_name: str | None = None,
    version: str | int | None = None,
    schema: str = DEFAULT_SCHEMA,
    labelled_only: bool = False,
) -> int:
    schema = validate_identifier(schema)
    where, params = _model_filter(model_name, version)
    if labelled_only:
        where += " AND COALESCE(s.label, l.label) IS NOT NULL"
    connection = connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*) FROM {schema}.scoring_log s LEFT JOIN {schema}.labels l USING (request_id) "
                f"WHERE {where}",
                params,
            )
            (count,) = cursor.fetchone()
        connection.rollback()
    finally:
        connection.close()
    return int(count)
