"""Flow runs on a warm engine: a process that has already imported Prefect and the flows takes the run.

The process pool's command (:func:`modelops.stack.work_pools.engine_command`) is::

    <python> -m modelops.stack.engine_standby

This *launcher* imports nothing of Prefect (~0.1 s). It hands the run to a *standby*: a process started
earlier for the same worker and the same environment, which has imported Prefect's engine and every
module of ``flows/`` (with the tasks and libraries under them, ~2.5 s on 2 cores) and waits on a unix
socket. The launcher passes its standard streams (as file descriptors), working directory, arguments
and environment; the standby forks, and the child runs ``prefect.engine`` as ``__main__`` with them,
exactly as ``python -m prefect.engine`` would, and the launcher exits with its exit status. A signal
the launcher gets (the worker's SIGTERM when a run is cancelled) goes to that child; if the launcher
is killed, the child kills itself, so a run never outlives the process the worker watches.

The standby itself keeps waiting for the next run, so a worker's runs after the first cost a fork,
not a new import of Prefect and the flows (~5 CPU-seconds each, which every run used to spend on
the standby for the next one). It forks only while it has a single Python thread (a fork copies only
the calling thread); with more after the imports it runs one flow run itself and the launcher starts
the next standby, as when none waits.

A run's process ends as soon as it has reported its exit status, after every exit handler (Prefect's
log flushing among them), without tearing down its modules: that took ~0.5 CPU-second, and the worker,
reading the run's output until the last process holding it ends, waited for it.

When there is no ready standby, or the standby refuses the run (a source file it imported changed
since; it exits then), the launcher becomes ``python -m prefect.engine`` itself (``os.execv``): the
run starts cold, as Prefect starts it, and the launcher starts a standby in the background first;
one waits per worker and environment (an ``flock`` keeps it to one), and it exits when its worker
does.

The environment is part of the standby's key, all of it but Prefect's per-run variables
(``PREFECT__FLOW_RUN_ID`` and the other ``PREFECT__*``): Prefect reads its settings when it is
imported, so a standby only ever runs flows for the environment it was started with. The standby's
own log (until it takes a run) is ``<key>.log`` in :func:`standby_directory`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from modelops.source_files import changed_sources, project_sources

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PER_RUN_PREFIX = "PREFECT__"  # set by the worker for each run: not part of the key
MAX_MESSAGE = 1 << 20
UNIX_PATH_MAX = 107  # sun_path is 108 bytes on Linux, its last one the terminating NUL
# The module run as the engine: Prefect's (tests run a stand-in through this variable).
ENGINE_VARIABLE = "MODELOPS_ENGINE_STANDBY_ENGINE"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def standby_directory() -> Path:
    return Path(
        os.environ.get("MODELOPS_ENGINE_STANDBY_DIR") or f"/tmp/modelops-engine-standby-{os.getuid()}"
    )


def private_directory() -> Path | None:
    """:func:`standby_directory`, created 0700; None when it exists and is not ours alone."""
    directory = standby_directory()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError:
        return None
    return directory if info.st_uid == os.getuid() and info.st_mode & 0o077 == 0 else None


def unix_address(path: Path) -> contextlib.AbstractContextManager[str]:
    """The address to bind or connect a unix socket at ``path``, however deep ``path`` is.

    A unix socket's address holds at most 107 bytes of path. A standby directory deep in a temporary
    tree (a test's, a CI job's) makes ``<directory>/<pid>-<key>.sock`` longer, and then the standby
    could not listen at all: every run would start cold. Through an ``O_PATH`` descriptor of the
    directory, ``/proc/self/fd/<n>/<name>`` names the same file in a few bytes.
    """
    return (
        _short_unix_address(path)
        if len(os.fsencode(path)) > UNIX_PATH_MAX
        else contextlib.nullcontext(str(path))
    )


@contextlib.contextmanager
def _short_unix_address(path: Path) -> Iterator[str]:
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)


def engine_module() -> str:
    return os.environ.get(ENGINE_VARIABLE) or "prefect.engine"


def environment_key(environ: dict[str, str]) -> str:
    kept = sorted((k, v) for k, v in environ.items() if not k.startswith(PER_RUN_PREFIX))
    return hashlib.sha256(json.dumps([sys.executable, kept]).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StandbyPaths:
    """Where the standby for one worker and environment listens, locks and logs."""

    socket: Path
    lock: Path
    log: Path

    @classmethod
    def for_run(cls, directory: Path, worker_pid: int, environ: dict[str, str]) -> StandbyPaths:
        stem = directory / f"{worker_pid}-{environment_key(environ)}"
        return cls(Path(f"{stem}.sock"), Path(f"{stem}.lock"), Path(f"{stem}.log"))


# -- the launcher (the pool's command) ---------------------------------------------------------------


def launch(argv: list[str]) -> int:
    """Run this flow run on the standby, or exec the cold engine and start a standby for the next."""
    # Held until the run has a process to forward them to (or this one becomes the engine).
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
    worker_pid = os.getppid()
    directory = private_directory()
    taken = None
    if directory is not None:
        paths = StandbyPaths.for_run(directory, worker_pid, dict(os.environ))
        taken = _hand_over(paths, argv)
        if taken is None or not taken.standby_stays:  # the next run needs a standby of its own
            start_standby(paths, worker_pid)
    if taken is None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)
        os.execv(sys.executable, [sys.executable, "-m", engine_module(), *argv])
    return _relay(taken.connection, taken.pid)


@dataclass(frozen=True)
class HandOver:
    """A run a standby took: the connection its exit status comes on, and the process running it."""

    connection: socket.socket
    pid: int
    standby_stays: bool  # the standby forked the run and waits for the next one


def _hand_over(paths: StandbyPaths, argv: list[str]) -> HandOver | None:
    """The run, once a standby took it; None when none is waiting or it refused."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with unix_address(paths.socket) as address:
            sock.connect(address)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
        socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
        answer = json.loads(sock.recv(MAX_MESSAGE) or b"{}")
    except (OSError, ValueError):
        sock.close()
        return None
    if "pid" not in answer:
        print(
            f"engine standby: {answer.get('refused', 'no answer')}: starting the engine cold", file=sys.stderr
        )
        sock.close()
        return None
    return HandOver(sock, int(answer["pid"]), bool(answer.get("standby_stays")))


def _relay(sock: socket.socket, standby_pid: int) -> int:
    """Forward signals to the standby until it reports its exit status; that status is ours."""

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(standby_pid, signum)

    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # one that came meanwhile goes now
    while True:
        try:
            message = sock.recv(MAX_MESSAGE)
        except InterruptedError:
            continue
        if not message:  # the standby died without reporting (killed): as a killed engine would
            print(f"engine standby: pid {standby_pid} ended without an exit status", file=sys.stderr)
            return 1
        return int(json.loads(message)["exit"])


def start_standby(paths: StandbyPaths, worker_pid: int) -> None:
    """Start a standby in the background; it exits at once when another one holds the lock.

    Through an intermediate process that exits at once, so the standby is nobody's child here: the
    engine this process may become never finds an unknown child (or its zombie) under it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(PER_RUN_PREFIX)}
    command = [sys.executable, "-m", "modelops.stack.engine_standby", "--serve", str(paths.socket),
               "--lock", str(paths.lock), "--worker-pid", str(worker_pid)]  # fmt: skip
    intermediate = os.fork()
    if intermediate == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED_SIGNALS)  # the mask would pass to the standby
        try:
            with paths.log.open("ab") as log:
                subprocess.Popen(
                    command, env=env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,  # not in the worker's process group
                )  # fmt: skip
        finally:
            os._exit(0)
    os.waitpid(intermediate, 0)


# -- the standby -------------------------------------------------------------------------------------


class Standby:
    def __init__(self, socket_path: Path, lock_path: Path, worker_pid: int) -> None:
        self.socket_path = socket_path
        self.lock_path = lock_path
        self.worker: psutil.Process | None = None  # None: gone already
        with contextlib.suppress(psutil.Error):
            self.worker = psutil.Process(worker_pid)  # is_running() also compares its start time
        self.exit_status = 1
        self.connection: socket.socket | None = None
        self.finished = threading.Event()
        self.ready_at = time.monotonic()
        self.forked = False  # True in a run's process forked from the standby

    def serve(self) -> int:
        # First registered, so last to run at exit: after Prefect's own handlers (log flushing).
        atexit.register(self.report)
        lock = self.lock_path.open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # another standby for this worker and environment is starting or waiting
        if not _alive(self.worker):
            return 0
        sources = preload()
        # A fork copies only the forking thread. Native pools some imports start (OpenBLAS, jemalloc)
        # come back through their fork handlers; a Python thread would be lost: then one run per standby.
        threads = threading.active_count()
        forking = threads == 1
        if not forking:
            print(f"engine standby: {threads} threads after the imports: one run per standby", flush=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.socket_path.unlink(missing_ok=True)
        with unix_address(self.socket_path) as address:
            listener.bind(address)
        listener.listen(8)
        listener.settimeout(1.0)
        self.ready_at = time.monotonic()
        print(f"engine standby: pid {os.getpid()} ready on {self.socket_path}", flush=True)

        def close(*, for_good: bool) -> None:
            listener.close()
            lock.close()
            if for_good:  # the next standby may start from here on
                self.socket_path.unlink(missing_ok=True)

        while True:
            taken = self._wait_for_run(listener)
            if taken is None:
                close(for_good=True)
                print("engine standby: the worker is gone or stopped it; exiting", flush=True)
                self.lock_path.unlink(missing_ok=True)  # no standby comes for a gone worker
                self.socket_path.with_suffix(".log").unlink(missing_ok=True)
                return 0
            connection, request, fds = taken
            changed = changed_sources(sources)
            if changed:
                close(for_good=True)  # before the answer: the launcher starts the next standby on it
                for fd in fds:
                    os.close(fd)
                _send(connection, {"refused": f"{changed} changed since the standby imported it"})
                print(f"engine standby: {changed} changed; exiting", flush=True)
                return 0
            if not forking:
                close(for_good=True)
                return self.run(connection, request, fds)
            if os.fork() == 0:  # the run's process: Prefect and the flows already imported
                close(for_good=False)
                self.forked = True
                _reseed_numpy()
                return self.run(connection, request, fds)
            connection.close()
            for fd in fds:
                os.close(fd)

    def _wait_for_run(self, listener: socket.socket) -> tuple[socket.socket, dict, list[int]] | None:
        """The launcher's connection and request; None once the worker is gone or on SIGTERM."""
        stopping = threading.Event()
        signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())
        while _alive(self.worker) and not stopping.is_set():
            _reap_runs()
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                request, fds = _receive(connection)
            except (OSError, ValueError):
                connection.close()  # a launcher that died while handing over: wait for the next
                continue
            return connection, request, fds
        return None

    def run(self, connection: socket.socket, request: dict, fds: list[int]) -> int:
        """Become the flow run's engine process: its streams, directory, environment and arguments."""
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a new engine process, until Prefect's own
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        self.connection = connection
        _send(connection, {"pid": os.getpid(), "standby_stays": self.forked})
        print(
            f"engine standby: pid {os.getpid()} runs flow run {os.environ.get('PREFECT__FLOW_RUN_ID')} "
            f"(Prefect and the flows imported {time.monotonic() - self.ready_at:.0f} s ago)",
            file=sys.stderr,
            flush=True,
        )
        threading.Thread(target=self._die_with_launcher, daemon=True).start()
        engine = engine_module()
        sys.argv = [engine, *request["argv"]]
        try:
            runpy.run_module(engine, run_name="__main__", alter_sys=True)
            self.exit_status = 0
        except SystemExit as exit_:
            code = exit_.code
            self.exit_status = code if isinstance(code, int) else (0 if code is None else 1)
        except BaseException:  # as an uncaught exception ends `python -m prefect.engine`
            traceback.print_exc()
            self.exit_status = 1
        return self.exit_status

    def report(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self.finished.set()
        if self.connection is not None:
            with contextlib.suppress(OSError):
                _send(self.connection, {"exit": self.exit_status})
            # Registered first, so this runs after every other exit handler (Prefect's, logging's). All
            # that is left is tearing down ~1,900 modules: ~0.5 CPU-second during which the run's
            # output pipes, held open here, keep the worker waiting for the end of its output.
            os._exit(self.exit_status)

    def _die_with_launcher(self) -> None:
        assert self.connection is not None
        with contextlib.suppress(OSError):
            self.connection.recv(1)  # the launcher never sends again: this returns when it is gone
        if not self.finished.is_set():
            os.kill(os.getpid(), signal.SIGKILL)


def standby_processes(worker_pid: int | None) -> list[psutil.Process]:
    """The standbys started for this worker, waiting or running a flow run."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "modelops.stack.engine_standby" in command and command[-2:] == ["--worker-pid", str(worker_pid)]:
            found.append(process)
    return found


def stop_standbys(worker_pid: int, timeout_s: float = 10.0) -> list[int]:
    """Stop this worker's standbys and remove their files (``modelops down``, after the worker).

    Returns the pids it stopped (one that noticed the worker was gone may have left already). One
    running a flow run is stopped too: that run's launcher went with the worker's process group.
    """
    found = standby_processes(worker_pid)
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _gone, alive = psutil.wait_procs(found, timeout=timeout_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    for leftover in standby_directory().glob(f"{worker_pid}-*"):
        leftover.unlink(missing_ok=True)
    return [process.pid for process in found]


def _reseed_numpy() -> None:
    """A forked run draws its own NumPy numbers (Python's ``random`` reseeds itself after a fork)."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _reap_runs() -> None:
    """Collect the exit of runs forked earlier that have ended (their launchers got the status)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _alive(process: psutil.Process | None) -> bool:
    return process is not None and process.is_running()


def preload() -> dict[Path, int]:
    """Import Prefect's engine and every flow module; return the project files now loaded (mtimes)."""
    importlib.import_module("prefect.engine")
    importlib.import_module("prefect.flow_engine")
    importlib.import_module("prefect.deployments.steps.core")
    from modelops.integrations.prefect_client import prefect_tls_context, share_tls_context

    share_tls_context()  # a run's engine opens ~5 clients: each forked run inherits one context, built here
    prefect_tls_context()
    # The flows by name, as Prefect imports them by their entrypoint: this module sits under them
    # (library layer) and only warms them up. One that fails to import is left to the engine, which
    # reports the error on the run as it always does.
    for path in sorted((PROJECT_ROOT / "flows").glob("*.py")):
        if path.stem != "__init__":
            try:
                importlib.import_module(f"flows.{path.stem}")
            except Exception as exc:  # noqa: BLE001
                print(f"engine standby: flows.{path.stem} not preloaded: {exc!r}", flush=True)
    return project_sources()


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _address = socket.recv_fds(connection, MAX_MESSAGE, 3)
    return json.loads(data), list(fds)


def _send(connection: socket.socket, message: dict) -> None:
    connection.send(json.dumps(message).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelops.stack.engine_standby")
    parser.add_argument("--serve", type=Path, help="run as the standby listening on this socket")
    parser.add_argument("--lock", type=Path)
    parser.add_argument("--worker-pid", type=int)
    args, engine_argv = parser.parse_known_args(argv)
    if args.serve is None:
        return launch(engine_argv)
    return Standby(args.serve, args.lock, args.worker_pid).serve()


if __name__ == "__main__":
    sys.exit(main())
