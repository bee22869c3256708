"""The scoring-log PostgreSQL: a configured DSN (only checked), or an embedded server from ``pgserver``.

``pgserver`` ships real PostgreSQL binaries. Its own ``get_server`` listens on a unix socket only and
stops the server from an ``atexit`` hook of the last Python process holding a handle. The stack needs
a server that outlives ``modelops up`` and a TCP DSN every process (flow runs, sidecars, containers on
the host network) can use, so we drive the same binaries directly: ``initdb`` once, then
``pg_ctl start`` which detaches the postmaster into its own session (it keeps running after we exit;
its PID is the first line of ``<pgdata>/postmaster.pid``), and ``pg_ctl stop -m fast`` to stop it.
PostgreSQL refuses to run as root, so as root the server runs as the ``pgserver`` system user, like
``pgserver`` itself does.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import warnings
from pathlib import Path

import psutil
import psycopg2

with warnings.catch_warnings():  # pgserver's package import warns about XDG_RUNTIME_DIR: unused here
    warnings.simplefilter("ignore")
    from pgserver._commands import POSTGRES_BIN_PATH  # where the wheel keeps initdb, pg_ctl
    from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

DATABASE = "modelops"
SUPERUSER = "postgres"
SYSTEM_USER_WHEN_ROOT = "pgserver"


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


class EmbeddedPostgres:
    """A PostgreSQL data directory under the stack home, served on ``host:port``."""

    def __init__(self, home: Path, host: str, port: int) -> None:
        self.pgdata = home / "postgres" / "data"
        self.log = home / "logs" / "postgres.log"
        self.host = host
        self.port = port

    @property
    def dsn(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{DATABASE}"

    def running_pid(self) -> int | None:
        """PID of a live postmaster serving this data directory, from ``postmaster.pid``."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE and str(self.pgdata) in " ".join(process.cmdline()):
                return pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        return None

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
        connection = psycopg2.connect(
            f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres", connect_timeout=5
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            connection.close()

    def _system_user(self) -> str | None:
        return SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None

    def _prepare_directories(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch(exist_ok=True)
        user = self._system_user()
        if user is None:
            self.pgdata.chmod(0o700)
            return
        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        ensure_prefix_permissions(self.pgdata)  # the postgres user must traverse the home's parents
        for path in (self.pgdata.parent, self.pgdata, self.log):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)

    def _run(self, program: str, args: list[str], timeout_s: float) -> None:
        # Output goes to files: pg_ctl's detached postmaster would keep a pipe open and hang us.
        with self.log.open("ab") as out:
            try:
                result = subprocess.run(
                    [str(POSTGRES_BIN_PATH / program), *args],
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
