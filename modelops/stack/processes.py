"""Start, inspect and stop the stack's OS processes: by PID and process group, never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from modelops.stack.process_identity import start_ticks


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> psutil.Process:
    """Start ``argv`` in its own session (so its whole group can be stopped) with output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return psutil.Process(popen.pid)


def find_process(pid: int | None, started: int | None) -> psutil.Process | None:
    """The live process with this PID that started at ``started`` (:func:`start_ticks`), else None
    (gone, a zombie, or the PID reused by another process); ``started=None`` matches any."""
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        if started is not None and start_ticks(pid) != started:
            return None
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def process_tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_bytes(process: psutil.Process | None) -> int:
    total = 0
    for member in process_tree(process) if process else []:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def stop_tree(process: psutil.Process, *, grace_s: float = 10.0) -> None:
    """Stop a process, its group and every descendant (flow runs may sit in their own sessions).

    SIGTERM twice (a Prefect worker ignores the first one while it shuts down), then SIGKILL.
    """
    members = process_tree(process)
    for attempt_grace in (grace_s / 2, grace_s / 2):
        _signal_all(process, members, signal.SIGTERM)
        _, members = psutil.wait_procs(_live(members), timeout=attempt_grace)
        if not members:
            return
    _signal_all(process, members, signal.SIGKILL)
    psutil.wait_procs(_live(members), timeout=5)


def _live(members: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for member in members:
        try:
            if member.is_running() and member.status() != psutil.STATUS_ZOMBIE:
                alive.append(member)
        except psutil.NoSuchProcess:
            pass
    return alive


def _signal_all(leader: psutil.Process, members: list[psutil.Process], signum: int) -> None:
    try:
        if os.getpgid(leader.pid) == leader.pid:  # we started it with start_new_session
            os.killpg(leader.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    for member in members:
        try:
            member.send_signal(signum)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is not "in use"
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_owner(port: int) -> str:
    """'pid 123 (prefect server start …)' for whoever listens on ``port``, or a neutral phrase."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return "another process"
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            try:
                cmdline = " ".join(psutil.Process(conn.pid).cmdline())[:80]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                cmdline = "?"
            return f"pid {conn.pid} ({cmdline})"
    return "another process"


def log_tail(path: Path | str | None, lines: int = 15) -> str:
    if not path or not Path(path).exists():
        return "(no log)"
    text = Path(path).read_text(errors="replace").splitlines()
    return "\n".join(f"    {line}" for line in text[-lines:]) or "    (log is empty)"
