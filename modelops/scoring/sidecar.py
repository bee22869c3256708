"""The log sidecar: tails the spool directory and ships scored records to PostgreSQL.

Guarantees:

* **Nothing lost, nothing twice.** A batch of rows and the spool offsets it advances are committed
  in one transaction, and the insert is idempotent on ``request_id``. Kill the process at any
  moment: on restart the offsets in the database say exactly where to resume.
* **Only complete lines** (ending in ``\\n``) are read; a line being written is left for later.
* **Bad lines never block.** A line that is not a valid record goes to ``dead-letter/`` with the
  reason, source file and byte offset (written before the commit: a crash can repeat an entry,
  never lose one), and the rest of the batch ships.
* **PostgreSQL down:** the spool is kept, retries back off exponentially (capped) and the sidecar
  catches up when the database returns.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import psycopg2

from modelops.integrations import scoring_log
from modelops.integrations.database import DEFAULT_SCHEMA, apply_migrations, connect, redact
from modelops.scoring.records import InvalidRecord, copy_row
from modelops.scoring.spool import (
    DEAD_LETTER_DIR,
    SHIPPED_DIR,
    SpoolFile,
    list_spool_files,
    read_complete_lines,
)

log = logging.getLogger(__name__)
HEARTBEAT_FILE = ".sidecar-heartbeat"


@dataclass(frozen=True)
class ShipperSettings:
    spool_dir: Path
    schema: str = DEFAULT_SCHEMA
    batch_rows: int = 20_000
    batch_bytes: int = 16 * 1024 * 1024
    poll_interval_s: float = 0.5
    rotate: Literal["move", "delete"] = "move"
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    give_up_after_s: float | None = None  # None: retry for ever
    abandoned_after_s: float = 900.0  # an unfinished file untouched this long: its writer is gone
    progress_every_s: float = 10.0


@dataclass
class ShipStats:
    rows_read: int = 0
    rows_inserted: int = 0
    dead_letters: int = 0
    batches: int = 0
    files_rotated: int = 0
    db_failures: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def duplicates_skipped(self) -> int:
        return self.rows_read - self.dead_letters - self.rows_inserted

    def as_dict(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        return {
            "rows_read": self.rows_read,
            "rows_inserted": self.rows_inserted,
            "duplicates_skipped": self.duplicates_skipped,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "files_rotated": self.files_rotated,
            "db_failures": self.db_failures,
            "seconds": round(elapsed, 3),
        }


@dataclass
class _Batch:
    rows: list[str] = field(default_factory=list)
    sources: list[tuple[str, int]] = field(default_factory=list)  # (file name, byte offset) per row
    dead: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (new offset, lines)
    lines: int = 0


class DatabaseDown(Exception):
    pass


class LogShipper:
    def __init__(self, dsn: str, settings: ShipperSettings) -> None:
        self.dsn = dsn
        self.settings = settings
        self.stats = ShipStats()
        self.stop_event = threading.Event()
        self._connection: Any = None
        self._offsets: dict[str, int] = {}
        self._migrated = False
        self.spool_dir = Path(settings.spool_dir)
        self.dead_letter_path = self.spool_dir / DEAD_LETTER_DIR / "dead-letter.jsonl"
        self._reader_pool: ThreadPoolExecutor | None = None
        self._on_batch: Callable[[ShipStats], None] | None = None
        self._last_progress = time.monotonic()

    # ------------------------------------------------------------------------------------- loop
    def run(self, once: bool = False, on_batch: Callable[[ShipStats], None] | None = None) -> ShipStats:
        """Ship until stopped (``once``: until the spool holds nothing more to ship, then return)."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._on_batch = on_batch
        delay = self.settings.backoff_initial_s
        down_since: float | None = None
        log.info(
            "log sidecar: shipping %s to %s (schema %s)",
            self.spool_dir,
            redact(self.dsn),
            self.settings.schema,
        )
        while not self.stop_event.is_set():
            self._heartbeat()
            try:
                shipped = self.ship_pass()
                if down_since is not None:
                    log.info("PostgreSQL is back after %.1f s; catching up", time.monotonic() - down_since)
                delay, down_since = self.settings.backoff_initial_s, None
            except (psycopg2.OperationalError, psycopg2.InterfaceError, DatabaseDown) as exc:
                self.stats.db_failures += 1
                self._drop_connection()
                now = time.monotonic()
                down_since = down_since or now
                if (
                    self.settings.give_up_after_s is not None
                    and now - down_since > self.settings.give_up_after_s
                ):
                    raise DatabaseDown(
                        f"PostgreSQL at {redact(self.dsn)} unreachable for {now - down_since:.0f} s "
                        f"({_first_line(exc)}); the spool in {self.spool_dir} is kept: start the database "
                        "and run `modelops ship` again"
                    ) from None
                wait = delay * random.uniform(0.8, 1.2)
                log.warning(
                    "PostgreSQL at %s unreachable (%s); spool kept, retrying in %.1f s",
                    redact(self.dsn),
                    _first_line(exc),
                    wait,
                )
                self.stop_event.wait(wait)
                delay = min(delay * 2, self.settings.backoff_max_s)
                continue
            self._maybe_log_progress()
            if not shipped:
                if once:
                    break
                self.stop_event.wait(self.settings.poll_interval_s)
        self._drop_connection()
        self.close()
        self._log_progress()
        return self.stats

    @property
    def _reader(self) -> ThreadPoolExecutor:
        if self._reader_pool is None:
            self._reader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-reader")
        return self._reader_pool

    def close(self) -> None:
        if self._reader_pool is not None:
            self._reader_pool.shutdown(wait=True)
            self._reader_pool = None

    def stop(self) -> None:
        self.stop_event.set()

    # ------------------------------------------------------------------------------------ batch
    def ship_pass(self, max_batches: int | None = None) -> int:
        """Ship what the spool holds now, batch after batch; returns the lines consumed (0: idle).

        Reading and checking batch N+1 (Python) overlaps with the database work on batch N: the
        next batch is read from the offsets batch N will commit, and is thrown away if N fails.
        """
        connection = self._connect()
        files = list_spool_files(self.spool_dir)
        self._load_unknown_offsets(connection, files)
        consumed = 0
        batch = self._read_batch(files, self._offsets)
        batches = 0
        while batch.lines:
            following = None
            if not self.stop_event.is_set() and (max_batches is None or batches + 1 < max_batches):
                ahead = dict(self._offsets)
                ahead.update((key, offset) for key, (offset, _) in batch.offsets.items())
                following = self._reader.submit(self._read_batch, files, ahead)
            try:
                self._commit(connection, batch)
            finally:
                if following is not None and not following.done():
                    following.result() if sys.exc_info()[0] is None else following.cancel()
            consumed += batch.lines
            batches += 1
            if self._on_batch:
                self._on_batch(self.stats)
            self._maybe_log_progress()
            if following is None:
                break
            batch = following.result()
        self._rotate_finished(connection, files)
        return consumed

    def _read_batch(self, files: list[SpoolFile], offsets: dict[str, int]) -> _Batch:
        batch = _Batch()
        budget_bytes = self.settings.batch_bytes
        for spool_file in files:
            if batch.lines >= self.settings.batch_rows or budget_bytes <= 0:
                break
            offset = offsets.get(spool_file.key, 0)
            try:
                data = read_complete_lines(spool_file.path, offset, budget_bytes)
            except FileNotFoundError:
                continue  # renamed .open -> .jsonl since the listing: next pass
            if not data:
                continue
            position = offset
            start = 0
            lines_here = 0
            while start < len(data) and batch.lines < self.settings.batch_rows:
                end = data.index(b"\n", start)
                line = data[start:end]
                line_offset = offset + start
                start = end + 1
                batch.lines += 1
                lines_here += 1
                if not line.strip():
                    continue  # an empty line carries no record
                try:
                    batch.rows.append(copy_row(line))
                    batch.sources.append((spool_file.path.name, line_offset))
                except InvalidRecord as exc:
                    batch.dead.append(_dead_letter(str(exc), spool_file.path.name, line_offset, line))
            position = offset + start
            budget_bytes -= start
            batch.offsets[spool_file.key] = (position, lines_here)
        return batch

    def _commit(self, connection: Any, batch: _Batch) -> None:
        schema = self.settings.schema
        inserted = 0
        try:
            with connection.cursor() as cursor:
                if batch.rows:
                    inserted = scoring_log.insert_copy_rows(cursor, "".join(batch.rows), schema)
                scoring_log.save_offsets(cursor, batch.offsets, schema)
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
            connection.rollback()
            log.warning(
                "PostgreSQL refused a batch (%s); inserting its %d rows one by one",
                _first_line(exc),
                len(batch.rows),
            )
            with connection.cursor() as cursor:
                errors = scoring_log.insert_rows_individually(cursor, batch.rows, schema)
                scoring_log.save_offsets(cursor, batch.offsets, schema)
            inserted = errors.count(None)
            for error, row, (name, line_offset) in zip(errors, batch.rows, batch.sources, strict=True):
                if error:
                    batch.dead.append(_dead_letter(error, name, line_offset, row.encode()))
        except BaseException:
            connection.rollback()
            raise
        if batch.dead:
            self._write_dead_letters(batch.dead)  # before the commit: a crash repeats, never loses
        connection.commit()
        for key, (offset, _) in batch.offsets.items():
            self._offsets[key] = offset
        self.stats.rows_read += len(batch.rows) + sum(1 for d in batch.dead if d["stage"] == "spool")
        self.stats.rows_inserted += inserted
        self.stats.dead_letters += len(batch.dead)
        self.stats.batches += 1
        if batch.dead:
            log.warning(
                "%d malformed spool line(s) written to %s (first: %s)",
                len(batch.dead),
                self.dead_letter_path,
                batch.dead[0]["reason"],
            )

    def _rotate_finished(self, connection: Any, files: list[SpoolFile]) -> None:
        done: list[str] = []
        now = time.time()
        for spool_file in files:
            try:
                stat = spool_file.path.stat()
            except FileNotFoundError:
                continue
            offset = self._offsets.get(spool_file.key)
            if offset is None:
                continue
            finished = spool_file.finished
            if not finished and now - stat.st_mtime > self.settings.abandoned_after_s:
                if offset < stat.st_size:  # an abandoned file's unfinished last line
                    with open(spool_file.path, "rb") as handle:
                        handle.seek(offset)
                        tail = handle.read()
                    if b"\n" in tail:
                        continue  # complete lines still to ship first
                    self._write_dead_letters(
                        [
                            _dead_letter(
                                "incomplete last line of an abandoned spool file",
                                spool_file.path.name,
                                offset,
                                tail,
                            )
                        ]
                    )
                    self.stats.dead_letters += 1
                log.warning(
                    "spool file %s untouched for %.0f s: its writer is gone; closing it",
                    spool_file.path.name,
                    now - stat.st_mtime,
                )
                finished, offset = True, stat.st_size
            if not finished or offset < stat.st_size:
                continue
            if self.settings.rotate == "delete":
                spool_file.path.unlink(missing_ok=True)
            else:
                target = self.spool_dir / SHIPPED_DIR
                target.mkdir(exist_ok=True)
                os.replace(spool_file.path, target / spool_file.path.name)
            done.append(spool_file.key)
        if done:
            scoring_log.forget_offsets(connection, done, self.settings.schema)
            for key in done:
                self._offsets.pop(key, None)
            self.stats.files_rotated += len(done)

    # ------------------------------------------------------------------------------- helpers
    def _connect(self) -> Any:
        if self._connection is None or self._connection.closed:
            self._connection = connect(self.dsn, application_name="modelops-sidecar")
            if not self._migrated:
                apply_migrations(self.dsn, self.settings.schema)
                self._migrated = True
            self._offsets.clear()  # the database is the truth after any reconnect
        return self._connection

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # already broken
                pass
        self._connection = None
        self._offsets.clear()

    def _load_unknown_offsets(self, connection: Any, files: list[SpoolFile]) -> None:
        unknown = [f.key for f in files if f.key not in self._offsets]
        if unknown:
            found = scoring_log.load_offsets(connection, unknown, self.settings.schema)
            for key in unknown:
                self._offsets[key] = found.get(key, 0)

    def _write_dead_letters(self, entries: list[dict[str, Any]]) -> None:
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(orjson.dumps(entry) + b"\n" for entry in entries)
        fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _heartbeat(self) -> None:
        try:
            (self.spool_dir / HEARTBEAT_FILE).write_text(datetime.now(UTC).isoformat())
        except OSError:
            pass

    def _maybe_log_progress(self) -> None:
        if time.monotonic() - self._last_progress >= self.settings.progress_every_s:
            self._last_progress = time.monotonic()
            self._log_progress()

    def _log_progress(self) -> None:
        stats = self.stats.as_dict()
        rate = stats["rows_inserted"] / stats["seconds"] if stats["seconds"] else 0.0
        log.info(
            "shipped %d rows (%.0f rows/s), %d duplicates skipped, %d dead letters, %d files rotated",
            stats["rows_inserted"],
            rate,
            stats["duplicates_skipped"],
            stats["dead_letters"],
            stats["files_rotated"],
        )


def _dead_letter(reason: str, source: str, offset: int, line: bytes) -> dict[str, Any]:
    return {
        "reason": reason,
        "source_file": source,
        "offset": offset,
        "stage": "database" if reason.startswith("rejected by PostgreSQL") else "spool",
        "line": line.decode("utf-8", errors="replace"),
        "at": datetime.now(UTC).isoformat(),
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
