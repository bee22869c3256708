"""``modelops down --purge``: after ``down``, delete what a stopped stack keeps on disk.

``down`` keeps every file, so the next ``up`` finds the same runs, models and scores. ``--purge`` is
for when that is not wanted (a throw-away stack, a CI job, ``make clean``): it deletes the stack home
and, when the embedded PostgreSQL ran as another user (as root), its data kept outside the home
(``/var/lib/modelops/postgres-<hash>``, see :mod:`modelops.stack.postgres`), but only when that
folder's ``stack-home`` file names this home. A configured (external) database is never touched.

It refuses, deleting nothing, when the home could be something else than a stack home: ``/``, the
user's home directory, the project's folder or one above it, or a folder without the ``logs/`` and
``prefect/`` folders that ``up`` creates. It also refuses while the home's PostgreSQL still runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from modelops.config import PROJECT_ROOT, ModelOpsConfig
from modelops.stack.postgres import HOME_MARKER, postmaster_pid, relocated_dir
from modelops.stack.state import state_path

Echo = Callable[[str], None]
STACK_MARKERS = ("logs", "prefect")  # folders every `up` creates in its home


class PurgeRefused(RuntimeError):
    """The home does not look like a stack home, or something in it still runs: nothing was deleted."""


def relocated_data(home: Path) -> Path | None:
    """The PostgreSQL data folder kept outside ``home`` for it (as root), if there is one."""
    folder = relocated_dir(home)
    marker = folder / HOME_MARKER
    try:
        named = marker.read_text().strip()
    except OSError:
        return None
    return folder if named == str(home.resolve()) else None


def refusal(home: Path) -> str | None:
    """Why ``home`` must not be deleted, or None when it is a stopped stack home."""
    resolved = home.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        return f"{resolved} is not a stack home"
    if resolved == PROJECT_ROOT or resolved in PROJECT_ROOT.parents:
        return f"{resolved} holds the project itself"
    missing = [name for name in STACK_MARKERS if not (resolved / name).is_dir()]
    if missing:
        return f"{resolved} has no {' and no '.join(f'{name}/' for name in missing)}: not a stack home"
    if state_path(resolved).exists():  # `down` removes it once everything is stopped
        return f"the stack in {resolved} is still recorded as running (stack.json): run `modelops down` first"
    outside = relocated_data(resolved)
    return _still_served(resolved / "postgres" / "data") or (
        _still_served(outside / "data") if outside else None
    )


def _still_served(pgdata: Path) -> str | None:
    pid = postmaster_pid(pgdata)
    return None if pid is None else f"PostgreSQL (pid {pid}) still serves {pgdata}"


def purge(config: ModelOpsConfig, echo: Echo) -> list[Path]:
    """Delete the stopped stack's home and its relocated PostgreSQL data (also when the home itself is
    already gone); returns what was deleted."""
    home = config.stack_home
    outside = relocated_data(home)  # also left behind when the home was deleted by hand
    folders = [folder for folder in (outside, home) if folder is not None and folder.exists()]
    if not folders:
        echo(f"purge: {home} does not exist: nothing to delete")
        return []
    reason = refusal(home) if home.exists() else _still_served(folders[0] / "data")
    if reason is not None:
        raise PurgeRefused(f"purge refused, nothing deleted: {reason}")
    deleted = []
    for folder in folders:
        size_mb = _size_bytes(folder) / 1e6
        shutil.rmtree(folder)
        echo(f"purge: deleted {folder} ({size_mb:,.1f} MB)")
        deleted.append(folder)
    if config.database.url:
        echo("purge: the configured database (database.url) was not touched")
    return deleted


def _size_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total
