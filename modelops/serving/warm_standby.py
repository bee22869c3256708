"""The warm standby: one process with TensorFlow imported that forks a model server per job.

A new ``modelops serve`` process spends most of its start importing TensorFlow (~2-3 CPU-seconds,
5-12 s on a busy 2-core machine); loading a small SavedModel after that takes ~0.1 CPU-second. So
while a stack serves a model, its supervisor keeps one standby (``modelops serve --standby-for
FOLDER``): it imports TensorFlow and the serving modules, writes ``FOLDER/ready`` and waits. Every
new server of that stack, a rollout's as well as a restart's, is then a fork of it:

1. the caller (:meth:`Standby.start_server`) writes ``FOLDER/jobs/<id>.json`` (owner-only): the
   ``serve`` arguments, its own environment and working directory, and the log file to write;
2. the standby takes the job (renames and reads it, then deletes it: the environment may hold
   secrets; a caller that gave up withdraws a job by deleting it first), forks, and writes
   ``<id>.started`` with the child's pid; it keeps waiting for the next job;
3. the child starts a session of its own, points its standard streams at the log, takes the
   caller's environment and directory, and runs ``modelops serve`` with the arguments, as
   ``python -m modelops serve ...`` would; when it ends, the standby writes ``<id>.exit`` with its
   exit status, so the caller reads the status of a server that failed to load as if it were its child.

TensorFlow is safe to fork here because the standby never runs a TensorFlow op: its runtime (thread
pools, the eager context) starts in each child, with that child's thread counts. The standby refuses
a job (``<id>.refused``; the caller then starts a server the cold way) when it runs a second Python
thread (a fork copies only the calling one), when the caller runs another Python, when an
environment variable read at import time differs (``TF_*``, ``OMP_*`` ...), or when a project module
it imported has changed on disk since; it exits after refusing for a changed module, and the
supervisor starts a new one. It also exits when the process that started it (the supervisor)
is gone; the servers it forked keep serving.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from modelops.source_files import changed_sources, project_sources
from modelops.stack.process_identity import is_running, start_ticks

POLL_S = 0.05
TAKEN_GRACE_S = 30.0  # a job the standby took is answered within a poll, unless the machine stalls
READY = "ready"
JOBS = "jobs"
# Environment variables read when TensorFlow, NumPy or Python start: a child cannot take another value.
IMPORT_TIME_PREFIXES = (
    "TF_",
    "OMP_",
    "KMP_",
    "MKL_",
    "OPENBLAS_",
    "CUDA_",
    "XLA_",
    "PYTHON",
    "LD_",
    "MALLOC_",
)


def import_time_environment(environ: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if key.startswith(IMPORT_TIME_PREFIXES)}


@dataclass(frozen=True)
class ForkedServer:
    """A server the standby forked for us: alive by pid and start time, its exit status from a file."""

    pid: int
    start_ticks: int | None
    exit_file: Path

    def exit_code(self) -> int | None:
        """The exit status once it ended (-1 when the standby could not tell), else None."""
        if is_running(self.pid, self.start_ticks):
            return None
        deadline = time.monotonic() + 1.0  # the standby writes the status within a poll of the exit
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(self.exit_file.read_text())
            time.sleep(POLL_S)
        return -1


@dataclass(frozen=True)
class Standby:
    """A warm standby process (see the module docstring), named by pid and start time."""

    pid: int
    start_ticks: int | None
    folder: Path
    log: Path

    @property
    def alive(self) -> bool:
        return is_running(self.pid, self.start_ticks)

    @property
    def ready(self) -> bool:
        return (self.folder / READY).exists() and self.alive

    def start_server(
        self, argv: list[str], *, log: Path, cwd: Path, timeout_s: float = 10.0
    ) -> ForkedServer | str:
        """Have the standby fork ``modelops serve <argv>`` with this process's environment.

        Returns the forked server, or why not (refused, gone, no answer): the caller then starts the
        server itself."""
        jobs = self.folder / JOBS
        job_id = uuid.uuid4().hex
        job = {
            "argv": argv,
            "env": dict(os.environ),
            "cwd": str(cwd),
            "log": str(log),
            "executable": sys.executable,
        }
        _write(jobs / f"{job_id}.json", json.dumps(job))  # owner-only: the environment may hold secrets
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError):
                started = json.loads((jobs / f"{job_id}.started").read_text())
                return ForkedServer(started["pid"], started["start_ticks"], jobs / f"{job_id}.exit")
            with contextlib.suppress(FileNotFoundError):
                return f"refused: {(jobs / f'{job_id}.refused').read_text().strip()}"
            gone = not self.alive
            if gone or time.monotonic() > deadline:
                try:
                    (jobs / f"{job_id}.json").unlink()  # not taken: now it never will be
                    return "the standby is gone" if gone else f"no answer within {timeout_s:g} s"
                except FileNotFoundError:  # taken: the answer follows within a poll
                    if gone or time.monotonic() > deadline + TAKEN_GRACE_S:
                        return "the standby took the job but did not answer"
            time.sleep(POLL_S / 5)


def find_ready(root: Path) -> Standby | None:
    """A ready, live standby among the folders under ``root`` (``<serving home>/standby``), if any."""
    for ready in sorted(root.glob(f"*/{READY}"), reverse=True):
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            info = json.loads(ready.read_text())
            standby = Standby(info["pid"], info["start_ticks"], ready.parent, Path(info["log"]))
            if standby.alive:
                return standby
    return None


# ----------------------------------------------------------------------------- the standby side


def serve_jobs(folder: Path, log: Path, run_serve: Callable[[list[str]], int]) -> int:
    """The standby's loop (TensorFlow and the serving modules already imported by the caller)."""
    parent = os.getppid()
    jobs = folder / JOBS
    jobs.mkdir(mode=0o700, parents=True, exist_ok=True)
    sources = project_sources()
    own_environments = (
        import_time_environment(_initial_environment()),
        import_time_environment(dict(os.environ)),
    )
    children: dict[int, str] = {}
    gc.freeze()  # what is imported now stays out of the collector's walks: children share its pages
    ready = {"pid": os.getpid(), "start_ticks": start_ticks(os.getpid()), "log": str(log)}
    (folder / READY).write_text(json.dumps(ready))
    print(f"standby (pid {os.getpid()}): TensorFlow loaded; waiting for jobs in {jobs}", flush=True)
    try:
        while os.getppid() == parent:
            _reap(children, jobs)
            for job_file in sorted(jobs.glob("*.json")):
                job_id = job_file.stem
                taken = job_file.with_suffix(".taken")
                try:
                    os.replace(job_file, taken)  # the caller can no longer withdraw it
                except FileNotFoundError:
                    continue  # withdrawn by a caller that stopped waiting
                try:
                    job = json.loads(taken.read_text())
                except (OSError, ValueError) as exc:
                    _write(jobs / f"{job_id}.refused", f"unreadable job: {exc}")
                    continue
                finally:
                    taken.unlink(missing_ok=True)  # it holds the caller's environment: keep it no longer
                changed = changed_sources(sources)
                reason: str | None
                if changed:
                    reason = f"{changed} changed since the standby imported it"
                else:
                    reason = _refusal(job, own_environments)
                if reason:
                    print(f"standby: job {job_id} refused ({reason})", flush=True)
                    _write(jobs / f"{job_id}.refused", reason)
                    if changed:
                        return 0  # a stale standby: the supervisor starts a new one
                    continue
                pid = _fork(job, run_serve)
                children[pid] = job_id
                started = {"pid": pid, "start_ticks": start_ticks(pid)}
                _write(jobs / f"{job_id}.started", json.dumps(started))
                print(f"standby: job {job_id}: forked pid {pid}: serve {' '.join(job['argv'])}", flush=True)
            time.sleep(POLL_S)
        print("standby: the supervisor is gone; exiting (the servers it forked keep serving)", flush=True)
        return 0
    finally:
        (folder / READY).unlink(missing_ok=True)


def _refusal(job: dict, own_environments: tuple[dict[str, str], dict[str, str]]) -> str | None:
    """Why a server forked for ``job`` would not be what a new process would be, or None.

    A variable read at import may hold the value the standby started with or the one its own imports
    left (TensorFlow sets some when imported, ``modelops`` a log level): a new process would start
    from the first and end with the second."""
    if threading.active_count() > 1:  # a fork copies the calling thread only: another may hold a lock
        return f"the standby runs {threading.active_count()} Python threads; it forks with one only"
    if job.get("executable") != sys.executable:
        return f"another Python ({job.get('executable')}; the standby runs {sys.executable})"
    wanted = import_time_environment(job["env"])
    initial, current = own_environments
    differing = sorted(
        key
        for key in initial.keys() | current.keys() | wanted.keys()
        if wanted.get(key) not in (initial.get(key), current.get(key))
    )
    if differing:
        return f"environment read at import differs: {', '.join(differing)}"
    return None


def _initial_environment() -> dict[str, str]:
    """This process's environment as it started (``/proc/self/environ``), before imports changed it."""
    try:
        raw = Path("/proc/self/environ").read_bytes()
    except OSError:
        return dict(os.environ)
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {os.fsdecode(key): os.fsdecode(value) for key, value in pairs}


def _fork(job: dict, run_serve: Callable[[list[str]], int]) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _become_server(job, run_serve)
    return pid


def _become_server(job: dict, run_serve: Callable[[list[str]], int]) -> NoReturn:
    code = 1
    try:
        os.setsid()  # its own process group: stopping the server never stops the standby, and back
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        log_fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null_fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null_fd, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.close(null_fd)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        sys.argv = [sys.argv[0], "serve", *job["argv"]]
        print(f"forked from the warm standby (pid {os.getppid()})", flush=True)
        code = run_serve(list(job["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never return into the standby's loop
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    os._exit(code)


def _reap(children: dict[int, str], jobs: Path) -> None:
    """Collect the exit of forked servers that ended and record it for whoever started them."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job_id = children.pop(pid, None)
        if job_id is not None:
            _write(jobs / f"{job_id}.exit", str(os.waitstatus_to_exitcode(status)))


def _write(path: Path, text: str) -> None:
    """Write ``path`` whole (a reader never sees half of it), readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
