"""The spool directory between the scoring client and the log sidecar.

The client appends JSON lines to ``scores-<utc>-<host>-<pid>-<seq>-<token>.jsonl.open``; every
line (or batch of lines) goes out in one ``write`` on an ``O_APPEND`` descriptor, so a reader
never sees half a line followed by more data. When a file reaches its size, record-count or age
limit it is renamed to ``….jsonl`` ("finished"): nothing will be appended any more, so once the
sidecar has shipped it to the end it may move it to ``shipped/`` or delete it.

A file's identity (its *key*, used for the sidecar's offsets) is its name without the suffix, so it
survives the rename. Failed requests go to ``errors/`` beside it and are never shipped as scored.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

OPEN_SUFFIX = ".jsonl.open"
FINISHED_SUFFIX = ".jsonl"
SCORES_PREFIX = "scores-"
ERRORS_DIR = "errors"
SHIPPED_DIR = "shipped"
DEAD_LETTER_DIR = "dead-letter"


def spool_key(path: Path) -> str:
    name = path.name
    for suffix in (OPEN_SUFFIX, FINISHED_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class SpoolFile:
    path: Path
    key: str
    finished: bool


def list_spool_files(spool_dir: Path) -> list[SpoolFile]:
    """Score files in ``spool_dir`` (not sub-directories), oldest name first."""
    files: list[SpoolFile] = []
    try:
        entries = list(os.scandir(spool_dir))
    except FileNotFoundError:
        return []
    for entry in entries:
        name = entry.name
        if not name.startswith(SCORES_PREFIX) or not entry.is_file():
            continue
        if name.endswith(OPEN_SUFFIX):
            files.append(SpoolFile(Path(entry.path), name[: -len(OPEN_SUFFIX)], False))
        elif name.endswith(FINISHED_SUFFIX):
            files.append(SpoolFile(Path(entry.path), name[: -len(FINISHED_SUFFIX)], True))
    files.sort(key=lambda f: f.key)
    return files


def read_complete_lines(path: Path, offset: int, max_bytes: int) -> bytes:
    """Bytes from ``offset`` up to the last ``\\n`` within ``max_bytes`` (empty if no complete line).

    If a single line is longer than ``max_bytes`` the read grows until the line is complete.
    """
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(max_bytes)
        end = data.rfind(b"\n")
        while end < 0 and len(data) >= max_bytes:
            more = handle.read(max_bytes)
            if not more:
                break
            data += more
            end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


class SpoolWriter:
    """Appends lines to rotating spool files; thread-safe; ``close()`` finishes the current file."""

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        *,
        prefix: str = SCORES_PREFIX,
        max_bytes: int = 16 * 1024 * 1024,
        max_records: int = 100_000,
        max_age_s: float = 30.0,
        fsync: bool = False,
    ) -> None:
        self.directory = Path(spool_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.max_age_s = max_age_s
        self.fsync = fsync
        self.files_finished: list[Path] = []
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._bytes = 0
        self._records = 0
        self._opened_at = 0.0
        self._seq = 0
        self._host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"

    def write_lines(self, lines: Iterable[bytes]) -> None:
        """Append complete lines (each ending in ``\\n``) in one write."""
        batch = list(lines)
        if not batch:
            return
        data = b"".join(batch)
        if not data.endswith(b"\n"):
            raise ValueError("spool lines must end with a newline")
        with self._lock:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
            self._bytes += len(data)
            self._records += len(batch)
            if (
                self._bytes >= self.max_bytes
                or self._records >= self.max_records
                or time.monotonic() - self._opened_at >= self.max_age_s
            ):
                self._finish()

    def rotate_if_old(self) -> None:
        """Finish the current file if it is older than ``max_age_s`` (call now and then when idle)."""
        with self._lock:
            if self._fd is not None and time.monotonic() - self._opened_at >= self.max_age_s:
                self._finish()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                self._finish()

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        self._seq += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{self.prefix}{stamp}-{self._host}-{os.getpid()}-{self._seq:06d}-{uuid.uuid4().hex[:8]}"
        self._path = self.directory / f"{name}{OPEN_SUFFIX}"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._bytes = 0
        self._records = 0
        self._opened_at = time.monotonic()

    def _finish(self) -> None:
        assert self._fd is not None and self._path is not None
        if self.fsync:
            os.fsync(self._fd)
        os.close(self._fd)
        finished = self._path.with_name(self._path.name[: -len(OPEN_SUFFIX)] + FINISHED_SUFFIX)
        os.replace(self._path, finished)
        self.files_finished.append(finished)
        self._fd = None
        self._path = None
