"""The stack's state file (``<stack home>/stack.json``): what ``modelops up`` started and where.

``down`` stops exactly the processes recorded here (PID + start time after boot, so a recycled PID is
never signalled) and then deletes the file. Data directories (databases, artifacts) are kept.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from modelops.stack.process_identity import upgrade_record

STATE_FILE = "stack.json"


@dataclass
class ComponentRecord:
    """One running component: a process we started, or an external service we only check."""

    name: str
    url: str
    pid: int | None = None  # None: external (e.g. a configured PostgreSQL DSN)
    start_ticks: int | None = None  # process_identity.start_ticks(pid): guards against PID reuse
    log: str | None = None
    port: int | None = None

    @property
    def external(self) -> bool:
        return self.pid is None


@dataclass
class StackState:
    home: str
    components: dict[str, ComponentRecord] = field(default_factory=dict)
    database_url: str | None = None
    # The embedded PostgreSQL's binaries, data directory and log (see stack.postgres.place); None in a
    # state file written before they were recorded: then they are the wheel's and under the home.
    postgres_bin: str | None = None
    postgres_data: str | None = None
    postgres_log: str | None = None
    # Where the Prefect server and MLflow keep their state ("postgres" | "sqlite"): fixed while any
    # of them runs, so a restart never moves a server to an empty store. None in an older file: sqlite.
    backend: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StackState:
        raw = json.loads(text)
        records = raw.get("components", {})
        components = {name: ComponentRecord(**upgrade_record(rec)) for name, rec in records.items()}
        return cls(
            home=raw["home"],
            components=components,
            database_url=raw.get("database_url"),
            postgres_bin=raw.get("postgres_bin"),
            postgres_data=raw.get("postgres_data"),
            postgres_log=raw.get("postgres_log"),
            backend=raw.get("backend"),
        )


def state_path(home: Path) -> Path:
    return home / STATE_FILE


def load_state(home: Path) -> StackState | None:
    path = state_path(home)
    if not path.exists():
        return None
    try:
        return StackState.from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"stack state file {path} is unreadable ({exc}); delete it after checking no "
            "stack process still runs (ps -ef | grep -e prefect -e mlflow -e postgres)"
        ) from exc


def save_state(state: StackState) -> None:
    """Write atomically so a crash never leaves half a state file behind."""
    path = state_path(Path(state.home))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.to_json())
    os.replace(tmp, path)


def remove_state(home: Path) -> None:
    state_path(home).unlink(missing_ok=True)


@contextmanager
def home_lock(home: Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock on ``<home>/<name>``: ``.lock`` lets one ``up``/``down`` run at a time."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / name).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
