"""The ``local`` serving target: the model served by a ``modelops serve`` process on this machine.

Each model has its own port and so its own URL (``serving.host:<port>``): the first model gets
``serving.port``, later ones the next free port, sticky in ``<stack_home>/serving/ports.json``
(:mod:`modelops.stack.serving_ports`). A rollout never interrupts what serves now and clients keep
the model's URL:

1. the SavedModel is copied to ``<stack_home>/serving/models/<model>/<version>/``;
2. a NEW server process starts (its own session, log under ``<stack_home>/serving/logs/``) pinned to
   that version, listening only on a private admin port;
3. through the private port the target waits for the version to be AVAILABLE and smoke-tests it;
4. the new process then also listens on the model's port with ``SO_REUSEPORT``, beside the old one
   (the same model's previous version), and the old process is stopped gracefully (it finishes the
   requests it holds).

If anything fails before step 4 the new process is killed, its version folder removed, and
:class:`DeployError` is raised: the old process was never touched. State (pid, version, ports) is a
JSON file under the stack home, so ``current()`` and ``stop()`` work from any process.
``suspend()`` stops a server but keeps its record (``modelops down``); ``revive()`` serves the recorded
version again from the served copy on the same port (``modelops up``, the supervisor after a crash).
When the stack's warm standby (:mod:`modelops.serving.warm_standby`, kept by the supervisor; or one
passed in) is ready, the new process of step 2 is forked from it, so a rollout or a revive costs one
model load instead of a start of Python and TensorFlow; otherwise it starts the cold way.

Why SO_REUSEPORT and not a proxy: a proxy adds a hop to every request; here the kernel hands new
connections to either listener while both run. A connection still waiting in the old socket's
accept queue when it closes is reset unless ``sysctl net.ipv4.tcp_migrate_req=1`` (Linux >= 5.14),
which migrates it to the new listener; set it for zero-drop swaps under heavy load.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from modelops.config import ModelOpsConfig, load_config
from modelops.serving.rest_client import HttpTransport, ServingClient, ServingClientError
from modelops.serving.warm_standby import ForkedServer, Standby, find_ready
from modelops.stack.process_identity import start_ticks, upgrade_record
from modelops.stack.processes import find_process
from modelops.stack.serving_ports import configured_port, port_map
from modelops.targets.base import DeployError, Rollout, ServingTarget
from modelops.tls import tls_context

log = logging.getLogger(__name__)

_SERVE = "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass(frozen=True)
class ServingProcess:
    """What the state file records about the process serving a model."""

    model_name: str
    version: str
    pid: int
    start_ticks: int  # with the pid, names the process (modelops.stack.process_identity.start_ticks)
    host: str
    port: int
    admin_port: int
    base_path: str
    log: str
    started_at: float
    previous_version: str | None = None
    stopped: bool = False  # suspended by `modelops down`: `up` serves it again

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"


class _Started:
    """The new server process: one we spawned (``Popen``) or a standby we handed the job to."""

    def __init__(self, pid: int, exit_code: Callable[[], int | None]) -> None:
        self.pid = pid
        self.exit_code = exit_code


class LocalTarget(ServingTarget):
    name = "local"

    def __init__(
        self,
        config: ModelOpsConfig | None = None,
        *,
        home: Path | None = None,
        smoke_records: list[dict[str, Any]] | None = None,
        startup_timeout_s: float | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.config = config or load_config()
        self.home = (home or self.config.stack_home / "serving").resolve()
        self.host = self.config.serving.host
        self.ports = port_map(self.config, self.home)
        self.smoke_records = smoke_records
        self.startup_timeout_s = startup_timeout_s or self.config.serving.rollout_timeout_s
        self.extra_args = extra_args

    # -- paths and state ------------------------------------------------------------------------

    def base_path(self, model_name: str) -> Path:
        return self.home / "models" / model_name

    def port_for(self, model_name: str) -> int:
        """The model's own port (sticky; allocated on first use)."""
        return self.ports.port_for(model_name, configured_port(self.config, model_name))

    def url_for(self, model_name: str) -> str:
        return f"http://{self.host}:{self.port_for(model_name)}"

    def models(self) -> list[str]:
        """Every model with a serving record (running, crashed or suspended)."""
        return sorted(path.stem for path in (self.home / "state").glob("*.json"))

    def record(self, model_name: str) -> ServingProcess | None:
        """What the state file says about the model's server (alive or not)."""
        return self._read_state(model_name)

    def served_copy(self, model_name: str, version: str) -> Path:
        return self.base_path(model_name) / version

    def _state_file(self, model_name: str) -> Path:
        return self.home / "state" / f"{model_name}.json"

    def _read_state(self, model_name: str) -> ServingProcess | None:
        path = self._state_file(model_name)
        try:
            return ServingProcess(**upgrade_record(json.loads(path.read_text())))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable serving state %s: %s", path, exc)
            return None

    def _write_state(self, state: ServingProcess) -> None:
        path = self._state_file(state.model_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _lock(self, model_name: str, blocking: bool = True) -> Iterator[bool]:
        """Held for a whole rollout; ``blocking=False`` yields False when another one holds it."""
        path = self.home / "state" / f"{model_name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True

    # -- the interface --------------------------------------------------------------------------

    def current(self, model_name: str) -> Rollout | None:
        state = self._read_state(model_name)
        if state is None or state.stopped or not _alive(state.pid, state.start_ticks):
            return None
        return self._rollout(state)

    def suspend(self, model_name: str) -> ServingProcess | None:
        """Stop the model's server but keep its record, so :meth:`revive` can serve it again."""
        with self._lock(model_name):
            state = self._read_state(model_name)
            if state is None:
                return None
            _terminate(state.pid, state.start_ticks)
            self._write_state(replace(state, stopped=True))
            log.info("suspended %s version %s (pid %d)", model_name, state.version, state.pid)
            return state

    def revive(
        self, model_name: str, *, blocking: bool = True, standby: Standby | None = None
    ) -> Rollout | None:
        """Serve the recorded version again from the served copy, on the model's port.

        For a server that died or was suspended. Returns the running rollout (unchanged when it is
        alive), or None when there is no record or, with ``blocking=False``, a rollout is under way.
        Raises :class:`DeployError` when the served copy is gone or the server does not come up.
        """
        with self._lock(model_name, blocking) as acquired:
            state = self._read_state(model_name) if acquired else None
            if state is None:
                return None
            if not state.stopped and _alive(state.pid, state.start_ticks):
                return self._rollout(state)
            source = self.served_copy(model_name, state.version)
            if not (source / "saved_model.pb").is_file():
                raise DeployError(
                    f"cannot serve {model_name} version {state.version} again: its served copy {source} "
                    "is gone; deploy the champion again (modelops up does so from the registry)"
                )
            revived = self._roll_out(model_name, state.version, None, None, standby)
            log.info(
                "revived %s version %s on %s (pid %d; was pid %d)",
                model_name, state.version, revived.url, revived.pid, state.pid,
            )  # fmt: skip
            return self._rollout(revived)

    def stop(self, model_name: str) -> None:
        with self._lock(model_name):
            state = self._read_state(model_name)
            if state is not None:
                _terminate(state.pid, state.start_ticks)
                self._state_file(model_name).unlink(missing_ok=True)
                log.info("stopped %s version %s (pid %d)", model_name, state.version, state.pid)

    def deploy(self, model_name: str, version: str, model_dir: Path, image: str | None = None) -> Rollout:
        version = str(version)
        if not version.isdigit():
            raise DeployError(f"version {version!r} is not a number: TF Serving version folders are integers")
        model_dir = Path(model_dir)
        if not (model_dir / "saved_model.pb").is_file():
            raise DeployError(
                f"{model_dir} is not a SavedModel (no saved_model.pb): pass the exported model folder"
            )
        with self._lock(model_name):
            old = self._read_state(model_name)
            if old is not None and not _alive(old.pid, old.start_ticks):
                log.warning(
                    "previous server for %s (pid %d) is gone; deploying without a swap", model_name, old.pid
                )
                old = None
            placed = _Placement(self.base_path(model_name), version, model_dir)
            placed.put()
            state = self._roll_out(model_name, version, old, placed)
            placed.commit()
            if old is not None:
                _terminate(old.pid, old.start_ticks)
                log.info(
                    "swapped %s: version %s (pid %d) replaced version %s (pid %d)",
                    model_name,
                    version,
                    state.pid,
                    old.version,
                    old.pid,
                )
            return self._rollout(state)

    # -- steps ----------------------------------------------------------------------------------

    def start_standby(self) -> Standby:
        """Start the warm standby (see :mod:`modelops.serving.warm_standby`); it serves this target's
        later rollouts and revives, and exits with the process that started it."""
        stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}"
        folder = self.standby_root / stamp
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # its jobs carry the callers' environments
        log_path = self.home / "logs" / f"standby-{stamp}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-c", _SERVE, "serve", "--model-name", "standby",
                   "--model-base-path", str(folder), "--standby-for", str(folder)]  # fmt: skip
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(self.home),
            )  # fmt: skip
        return Standby(process.pid, _started(process.pid), folder, log_path)

    @property
    def standby_root(self) -> Path:
        return self.home / "standby"

    def _roll_out(
        self,
        model_name: str,
        version: str,
        old: ServingProcess | None,
        placed: _Placement | None,
        standby: Standby | None = None,
    ) -> ServingProcess:
        """Start, check and open a server for the placed version; record it. Undoes itself on failure."""
        process: _Started | None = None
        try:
            process, state = self._start(model_name, version, old, standby)
            self._check(state, process)
            _post(f"{state.admin_url}/-/open-public", self.startup_timeout_s)
        except Exception as exc:
            if process is not None:
                _terminate(process.pid, None, grace_s=2)
            if placed is not None:
                placed.undo()
            if isinstance(exc, DeployError):
                raise
            raise DeployError(f"deploying {model_name} version {version} failed: {exc}") from exc
        self._write_state(state)
        return state

    def _start(
        self, model_name: str, version: str, old: ServingProcess | None, standby: Standby | None = None
    ) -> tuple[_Started, ServingProcess]:
        serving = self.config.serving
        port = self.port_for(model_name)
        admin_port = _free_port(self.host)
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{model_name}-v{version}-{time.strftime('%Y%m%dT%H%M%S')}.log"
        command = [
            sys.executable,
            "-c",
            _SERVE,
            "serve",
            "--model-name",
            model_name,
            "--model-base-path",
            str(self.base_path(model_name)),
            "--versions",
            version,
            "--host",
            self.host,
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--defer-public",
            "--max-batch-size",
            str(serving.max_batch_size),
            "--batch-timeout-ms",
            str(serving.batch_timeout_ms),
            "--batching" if serving.batching else "--no-batching",
            *self.extra_args,
        ]
        forked = self._fork_from_standby(standby, command[4:], log_path)  # the arguments after `serve`
        if forked is not None:
            process = _Started(forked.pid, forked.exit_code)
        else:
            with log_path.open("ab") as log_file:
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=str(self.home),
                )
            process = _Started(popen.pid, popen.poll)
        log.info(
            "started %s version %s: pid %d%s, admin port %d, log %s",
            model_name,
            version,
            process.pid,
            " (forked from the warm standby)" if forked is not None else "",
            admin_port,
            log_path,
        )
        state = ServingProcess(
            model_name=model_name,
            version=version,
            pid=process.pid,
            start_ticks=_started(process.pid),
            host=self.host,
            port=port,
            admin_port=admin_port,
            base_path=str(self.base_path(model_name)),
            log=str(log_path),
            started_at=time.time(),
            previous_version=old.version if old else None,
        )
        return process, state

    def _fork_from_standby(
        self, standby: Standby | None, argv: list[str], log_path: Path
    ) -> ForkedServer | None:
        """The new server forked from ``standby`` or the stack's ready one; None: start it cold."""
        standby = standby if standby is not None and standby.ready else find_ready(self.standby_root)
        if standby is None:
            return None
        outcome = standby.start_server(argv, log=log_path, cwd=self.home)
        if isinstance(outcome, str):
            log.info(
                "the warm standby (pid %d) did not start the server (%s): starting it cold",
                standby.pid,
                outcome,
            )
            return None
        return outcome

    def _check(self, state: ServingProcess, process: _Started) -> None:
        """Through the private admin port: the version comes AVAILABLE, then the smoke test passes."""
        poll = ServingClient(HttpTransport(state.admin_url, timeout=0.5))
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = process.exit_code()
            if code is not None:
                raise DeployError(
                    f"the server for {state.model_name} version {state.version} exited with code "
                    f"{code} while loading; log {state.log}:\n{_tail(state.log)}"
                )
            try:
                poll.wait_until_available(state.model_name, state.version, timeout=0.5, interval=0.2)
                break
            except ServingClientError as exc:
                if time.monotonic() > deadline:
                    raise DeployError(
                        f"{state.model_name} version {state.version} not AVAILABLE after "
                        f"{self.startup_timeout_s:.0f}s ({exc}); log {state.log}:\n{_tail(state.log)}"
                    ) from None
        serving = ServingClient(state.admin_url)
        try:
            records = self.smoke_records or _synthetic_records(serving, state)
            serving.smoke_test(state.model_name, records, expected_version=state.version)
        except ServingClientError as exc:
            raise DeployError(
                f"smoke test of {state.model_name} version {state.version} failed, previous version kept: "
                f"{exc}"
            ) from None

    def _rollout(self, state: ServingProcess) -> Rollout:
        return Rollout(
            target=self.name,
            model_name=state.model_name,
            version=state.version,
            url=state.url,
            previous_version=state.previous_version,
            details={
                "pid": state.pid,
                "admin_url": state.admin_url,
                "log": state.log,
                "base_path": state.base_path,
            },
        )


class _Placement:
    """Copy a SavedModel into the served base path, with undo (failed deploy) and commit."""

    def __init__(self, base_path: Path, version: str, source: Path) -> None:
        self.target = base_path / version
        self.source = source
        self.backup: Path | None = None

    def put(self) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        # Copy first: the source may be the served folder itself (a restart redeploys from it).
        staging = self.target.with_name(f".{self.target.name}.staging-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.source, staging)
        if self.target.exists():  # redeploying a version: keep the old files until the new process is healthy
            self.backup = self.target.with_name(f".{self.target.name}.previous-{os.getpid()}")
            shutil.rmtree(self.backup, ignore_errors=True)
            os.replace(self.target, self.backup)
        os.replace(staging, self.target)

    def undo(self) -> None:
        shutil.rmtree(self.target, ignore_errors=True)
        if self.backup is not None:
            os.replace(self.backup, self.target)

    def commit(self) -> None:
        if self.backup is not None:
            shutil.rmtree(self.backup, ignore_errors=True)


def _synthetic_records(serving: ServingClient, state: ServingProcess) -> list[dict[str, Any]]:
    """Without sample records: one all-missing record and one all-zero record, from the signature."""
    inputs = serving.signature_inputs(state.model_name, state.version, refresh=True)
    missing = {n: ("" if d == "DT_STRING" else math.nan) for n, d in inputs.items()}
    zeros = {n: ("" if d == "DT_STRING" else 0) for n, d in inputs.items()}
    return [missing, zeros]


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _post(url: str, timeout: float) -> None:
    try:
        response = httpx.post(url, timeout=timeout, verify=tls_context())
    except httpx.HTTPError as exc:
        raise DeployError(f"POST {url} failed: {exc}") from None
    if response.status_code != 200:
        raise DeployError(f"could not open the public port ({url}): {response.text[:300]}")


def _started(pid: int) -> int:
    started = start_ticks(pid)
    if started is None:  # it has not been reaped, so even a server that died at once is still a zombie
        raise DeployError(f"the server process (pid {pid}) vanished as it started")
    return started


def _alive(pid: int, started: int | None) -> bool:
    return find_process(pid, started) is not None


def _terminate(pid: int, started: int | None, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group (graceful: in-flight requests finish), SIGKILL after grace."""
    if not _alive(pid, started):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
            psutil.Process(pid).wait(0)  # reap our own zombie child (no-op for someone else's)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    if not _gone_within(pid, started, grace_s):
        log.warning("server pid %d ignored SIGTERM for %.0fs; killing it", pid, grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        # SIGKILL cannot be ignored, but a process in uninterruptible sleep (a loaded machine
        # reclaiming memory) dies only when it wakes: callers count on it being gone
        if not _gone_within(pid, started, 30):
            log.error("server pid %d still present 30 s after SIGKILL", pid)


def _gone_within(pid: int, started: int | None, timeout_s: float) -> bool:
    """Polls rather than ``psutil.wait``: a server another process started stays a zombie until that
    parent reaps it, and a zombie serves nothing."""
    deadline = time.monotonic() + timeout_s
    while _alive(pid, started):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired, ChildProcessError):
            psutil.Process(pid).wait(0.1)  # reaps our own child; a short sleep for anyone else's
        if time.monotonic() > deadline:
            return False
    # It may have exited between two waits: then it is our zombie until reaped here. A blocking
    # waitpid, and only on a zombie (which returns at once): psutil's wait(0) has been seen to leave
    # the zombie of a just-exited server behind (tests/targets/test_local_target.py swap test).
    with contextlib.suppress(psutil.NoSuchProcess, ChildProcessError):
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            os.waitpid(pid, 0)
    return True


def _tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])
