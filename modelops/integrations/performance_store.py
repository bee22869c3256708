"""PostgreSQL side of monitoring: the labelled window for KS, ks_checks rows, the approvals audit.

Tables and the ``labelled_scores`` view are defined in ``infra/sql/001_scoring_log.sql``.
The window is read with a binary ``COPY`` of fixed-width columns straight into NumPy: for 1 M rows
that is a few hundred milliseconds where a row-by-row cursor takes over a second. The query walks
the (model_name, model_version, scored_at) index backwards, so "the latest N" reads only N rows.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg2

from modelops.config import WindowSettings
from modelops.integrations.database import apply_migrations, redact, validate_identifier
from modelops.integrations.database import connect as database_connect

DEFAULT_SCHEMA = "modelops"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_SORT_WORK_MEM = "256MB"


@dataclass(frozen=True)
class LabelledWindow:
    """Scores and true labels of the most recent labelled records of one model version."""

    scores: np.ndarray
    labels: np.ndarray
    start: datetime | None
    end: datetime | None
    window: WindowSettings

    @property
    def n(self) -> int:
        return int(len(self.scores))

    @property
    def n_events(self) -> int:
        return int((self.labels == 1).sum())

    def describe(self) -> str:
        what = (
            f"latest {self.window.size} labelled records"
            if self.window.kind == "count"
            else f"labelled records of the last {self.window.size} minutes"
        )
        return f"{what} (n={self.n}, events={self.n_events})"

    def info(self) -> dict[str, Any]:
        """The window as stored with a KS check and carried by its event."""
        return {
            "kind": self.window.kind,
            "size": self.window.size,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }


def connect(dsn: str):
    """A connection to the scoring-log database; the error names it (password redacted) and the fix."""
    try:
        return database_connect(dsn, application_name="modelops-monitoring")
    except psycopg2.OperationalError as exc:
        first_line = (str(exc).strip().splitlines() or ["unreachable"])[0]
        raise ConnectionError(
            f"cannot connect to the scoring-log database {redact(dsn)}: {first_line}; "
            "check database.url / MODELOPS_DATABASE_URL and that PostgreSQL is running"
        ) from None


def _window_filter(cursor, window: WindowSettings) -> tuple[str, str]:
    """(extra WHERE clause, ORDER/LIMIT clause) for a count or a time window."""
    if window.kind == "count":
        return "", cursor.mogrify(" ORDER BY scored_at DESC LIMIT %s", (int(window.size),)).decode()
    return cursor.mogrify(" AND scored_at >= now() - %s", (timedelta(minutes=window.size),)).decode(), ""


def _copy_binary(connection, query: str) -> bytes:
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        # "latest N" sorts up to N rows: with the default 4 MB work_mem a 1 M-row window spills to
        # disk (external merge, ~3x slower). The setting lasts for this transaction only.
        cursor.execute(f"SET LOCAL work_mem = '{_SORT_WORK_MEM}'")
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT binary)", buffer)
    connection.rollback()  # read-only: end the transaction (and the SET LOCAL)
    return buffer.getvalue()


def _parse_copy(data: bytes, fields: list[tuple[str, str]]) -> np.ndarray:
    """Parse a binary COPY of NOT NULL fixed-width columns into a NumPy record array."""
    if not data.startswith(_COPY_SIGNATURE):
        raise ValueError("not a PostgreSQL binary COPY stream")
    extension = int.from_bytes(data[15:19], "big")
    offset = 19 + extension
    dtype_fields: list[tuple[str, str]] = [("_count", ">i2")]
    for name, kind in fields:
        dtype_fields += [(f"_len_{name}", ">i4"), (name, kind)]
    row = np.dtype(dtype_fields)
    body = len(data) - offset - 2  # 2-byte trailer (-1)
    if body % row.itemsize:
        raise ValueError("binary COPY rows are not fixed-width: a NULL or an unexpected column type")
    records = np.frombuffer(data, dtype=row, offset=offset, count=body // row.itemsize)
    if len(records) and (records["_count"] != len(fields)).any():
        raise ValueError("binary COPY rows have an unexpected number of columns")
    return records


def _timestamps(micros: np.ndarray) -> tuple[datetime | None, datetime | None]:
    if len(micros) == 0:
        return None, None
    return (
        _PG_EPOCH + timedelta(microseconds=int(micros.min())),
        _PG_EPOCH + timedelta(microseconds=int(micros.max())),
    )


def read_labelled_window(
    dsn: str, model_name: str, model_version: str, window: WindowSettings, schema: str = DEFAULT_SCHEMA
) -> LabelledWindow:
    """Score and label of the window's labelled records (view ``labelled_scores``), in no particular order.

    A count window ("the latest N labelled records") is read without an SQL sort, which would cost
    more than the read itself for a large N: the index gives a time bound that holds at most
    ``lookahead`` records, the labelled ones inside it come out unordered, and older ranges follow
    only when too few of them carry a label. NumPy then keeps the newest N.
    """
    schema = validate_identifier(schema)  # interpolated into SQL below: never trust the caller
    connection = connect(dsn)
    try:
        if window.kind == "time":
            with connection.cursor() as cursor:
                query = cursor.mogrify(
                    f"SELECT score, label::int2, scored_at FROM {schema}.labelled_scores"
                    " WHERE model_name = %s AND model_version = %s AND scored_at >= now() - %s",
                    (model_name, str(model_version), timedelta(minutes=window.size)),
                ).decode()
            records = _parse_copy(_copy_binary(connection, query), _WINDOW_FIELDS)
        else:
            records = _latest_labelled(connection, model_name, str(model_version), int(window.size), schema)
    finally:
        connection.close()
    start, end = _timestamps(records["scored_at"])
    return LabelledWindow(
        scores=records["score"].astype(np.float64),
        labels=records["label"].astype(np.int8),
        start=start,
        end=end,
        window=window,
    )


_WINDOW_FIELDS = [("score", ">f8"), ("label", ">i2"), ("scored_at", ">i8")]


def _latest_labelled(connection, model_name: str, version: str, size: int, schema: str) -> np.ndarray:
    chunks: list[np.ndarray] = []
    found, scanned, upper = 0, 0, None  # upper: the previous range's lower bound (inclusive next time)
    lookahead = size
    while found < size:
        with connection.cursor() as cursor:
            below = cursor.mogrify(" AND scored_at <= %s", (upper,)).decode() if upper is not None else ""
            # the (lookahead+1)-th newest record bounds a range of at most `lookahead` records (index only)
            cursor.execute(
                f"SELECT scored_at FROM {schema}.scoring_log WHERE model_name = %s AND model_version = %s"
                + below
                + " ORDER BY scored_at DESC OFFSET %s LIMIT 1",
                (model_name, version, lookahead),
            )
            row = cursor.fetchone()
            cutoff = row[0] if row else None
            above = cursor.mogrify(" AND scored_at > %s", (cutoff,)).decode() if cutoff is not None else ""
            query = (
                cursor.mogrify(
                    f"SELECT score, label::int2, scored_at FROM {schema}.labelled_scores"
                    " WHERE model_name = %s AND model_version = %s",
                    (model_name, version),
                ).decode()
                + below
                + above
            )
        chunk = _parse_copy(_copy_binary(connection, query), _WINDOW_FIELDS)
        chunks.append(chunk)
        found += len(chunk)
        scanned += lookahead
        if cutoff is None:
            break  # reached the oldest record
        upper = cutoff
        share = max(found / scanned, 0.01)  # labelled share so far: how far back to look next
        lookahead = int((size - found) / share * 1.2) + 100
    records = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    if len(records) > size:
        records = records[np.argpartition(-records["scored_at"], size - 1)[:size]]
    return records


def read_window_scores(
    dsn: str, model_name: str, model_version: str, window: WindowSettings, schema: str = DEFAULT_SCHEMA
) -> np.ndarray:
    """All scores of the window, labelled or not: the label-free score distribution."""
    schema = validate_identifier(schema)  # interpolated into SQL below: never trust the caller
    connection = connect(dsn)
    try:
        with connection.cursor() as cursor:
            where, limit = _window_filter(cursor, window)
            query = (
                cursor.mogrify(
                    f"SELECT score FROM {schema}.scoring_log WHERE model_name = %s AND model_version = %s",
                    (model_name, str(model_version)),
                ).decode()
                + where
                + limit
            )
        records = _parse_copy(_copy_binary(connection, query), [("score", ">f8")])
    finally:
        connection.close()
    return records["score"].astype(np.float64)


def read_window_features(
    dsn: str, model_name: str, model_version: str, window: WindowSettings, schema: str = DEFAULT_SCHEMA
):
    """The input features of the window's records as a DataFrame (for PSI against a reference)."""
    schema = validate_identifier(schema)  # interpolated into SQL below: never trust the caller
    connection = connect(dsn)
    try:
        with connection.cursor() as cursor:
            where, limit = _window_filter(cursor, window)
            cursor.execute(
                f"SELECT features FROM {schema}.scoring_log WHERE model_name = %s AND model_version = %s"
                + where
                + limit,
                (model_name, str(model_version)),
            )
            rows = [r[0] for r in cursor.fetchall()]
    finally:
        connection.close()
    return pd.DataFrame.from_records(rows)


def store_ks_check(
    dsn: str,
    *,
    model_name: str,
    model_version: str,
    status: str,
    ks: float | None,
    auc: float | None,
    threshold: float,
    n: int,
    n_events: int,
    window_start: datetime | None,
    window_end: datetime | None,
    details: dict[str, Any] | None = None,
    schema: str = DEFAULT_SCHEMA,
) -> int:
    """Insert one ks_checks row; returns its id."""
    schema = validate_identifier(schema)  # interpolated into SQL below: never trust the caller
    connection = connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {schema}.ks_checks (model_name, model_version, status, ks, auc, threshold, n,"
                " n_events, window_start, window_end, details)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    model_name,
                    str(model_version),
                    status,
                    ks,
                    auc,
                    threshold,
                    n,
                    n_events,
                    window_start,
                    window_end,
                    json.dumps(details or {}, default=str),
                ),
            )
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def read_recent_checks(
    dsn: str, model_name: str, limit: int = 20, schema: str = DEFAULT_SCHEMA
) -> list[dict[str, Any]]:
    """The latest KS checks of a model (all versions), oldest first: the trend."""
    schema = validate_identifier(schema)  # interpolated into SQL below: never trust the caller
    connection = connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, checked_at, model_version, status, ks, auc, threshold, n, n_events"
                f" FROM {schema}.ks_checks WHERE model_name = %s ORDER BY checked_at DESC, id DESC LIMIT %s",
                (model_name, limit),
            )
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()
    return rows[::-1]


def record_approval(
    dsn: str,
    decision: Any,
    evidence: Any = None,
    schema: str = DEFAULT_SCHEMA,
) -> int:
    """Write the approvals audit row for an :class:`~flows.approval.ApprovalDecision`."""
    evidence_json = (
        asdict(evidence) if is_dataclass(evidence) and not isinstance(evidence, type) else (evidence or {})
    )
    schema = validate_identifier(schema)  # interpolated into SQL below: never trust the caller
    apply_migrations(dsn, schema)  # a database nobody prepared (no `modelops up`): the audit still lands
    connection = connect(dsn)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {schema}.approvals (model_name, model_version, approved, reviewer, image_tag,"
                " comment, evidence, flow_run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    decision.model_name,
                    str(decision.model_version),
                    bool(decision.approved),
                    decision.reviewer or "(nobody: " + decision.reason + ")",
                    decision.image_tag or None,
                    decision.comment or None,
                    json.dumps(
                        {"reason": decision.reason, "attempts": decision.attempts, **evidence_json},
                        default=str,
                    ),
                    decision.flow_run_id,
                ),
            )
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def read_decisions(
    dsn: str, model_name: str, since: datetime | None = None, schema: str = DEFAULT_SCHEMA
) -> list[dict[str, Any]]:
    """Approval decisions of a model (approvals audit) since ``since``, oldest first: the chart's marks."""
    schema = validate_identifier(schema)  # interpolated into SQL below: never trust the caller
    connection = connect(dsn)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT decided_at, model_version, approved, reviewer FROM {schema}.approvals"
                " WHERE model_name = %s AND decided_at >= %s ORDER BY decided_at, id",
                (model_name, since or datetime(1970, 1, 1, tzinfo=UTC)),
            )
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        connection.close()
    return rows
