"""The stack's supervisor: a killed worker or model server is running again within seconds.

``modelops up`` starts it as a stack component (``python -m modelops.stack.supervisor``, log
``<home>/logs/supervisor.log``); ``modelops down`` stops it first, so nothing it does races the
shutdown. Every ``POLL_S`` it checks, by PID and creation time (never by name):

* the Prefect worker recorded in ``stack.json``: when gone, the same command is started again and
  the record updated; then the reconcile hook runs (:data:`RECONCILE_MODULE`, when present);
* each model server of the ``local`` target (``<home>/serving/state/<model>.json``, not suspended):
  when gone, :meth:`LocalTarget.revive` serves the recorded version again from the served copy on
  the model's own port, in a thread of its own so one slow start holds up nothing else.

A cold server start pays for Python and the TensorFlow import (~5 s idle, ~12 s on a loaded
2-core machine) before it loads a model, which would miss a 10 s restart bound. So while any model
is served the supervisor keeps one warm standby (:mod:`modelops.serving.warm_standby`, TensorFlow
already imported, ~200 MB), which forks the new server: the restart then costs one SavedModel load.
The standby stays for the next one, and rollouts from flow runs find it too. Without a ready
standby the server starts cold. The heartbeat file (``<home>/supervisor.heartbeat``) says whether
the standby is ready.

Each restart is one log line (what died, the new pid, how long it took) and one count in
``<home>/restarts.json``, which ``modelops status`` shows. A component that dies again within
``CRASH_LOOP_S`` of its restart waits 1, 2, 4 ... 60 s before the next one.

Each check holds the stack lock (non-blocking: while ``up``/``down`` run it waits a poll, and only
writes its heartbeat), so ``up`` can start it beside the worker and restore what served itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from modelops.config import ModelOpsConfig, load_config
from modelops.serving.warm_standby import Standby
from modelops.stack import components as comp
from modelops.stack.process_identity import start_ticks
from modelops.stack.processes import find_process, spawn
from modelops.stack.state import ComponentRecord, StackState, load_state, save_state
from modelops.targets.base import DeployError
from modelops.targets.local import LocalTarget

log = logging.getLogger("modelops.supervisor")

POLL_S = 0.5
CRASH_LOOP_S = 10.0
MAX_BACKOFF_S = 60.0
RESTARTS_FILE = "restarts.json"
# The hook another part of the stack provides: ``after_worker_restart(config)`` re-attaches what a
# dead worker left behind (paused approvals, runs left Running). Looked up at run time, so the
# supervisor works before and after that module exists.
RECONCILE_MODULE = "modelops.stack.reconcile"


# ------------------------------------------------------------------------- restart counts


def read_restarts(home: Path) -> dict[str, dict[str, Any]]:
    """``{component: {"count": n, "last": {...}}}`` from ``<home>/restarts.json`` (empty if none)."""
    try:
        raw = json.loads((home / RESTARTS_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def restart_counts(home: Path) -> dict[str, int]:
    return {name: int(entry.get("count", 0)) for name, entry in read_restarts(home).items()}


def clear_restarts(home: Path) -> None:
    (home / RESTARTS_FILE).unlink(missing_ok=True)


def _count_restart(home: Path, component: str, last: dict[str, Any]) -> int:
    """Only the supervisor writes the file (one process), so a read-modify-replace is safe."""
    restarts = read_restarts(home)
    entry = restarts.setdefault(component, {"count": 0})
    entry["count"] = int(entry.get("count", 0)) + 1
    entry["last"] = last
    path = home / RESTARTS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(restarts, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return int(entry["count"])


# ------------------------------------------------------------------------------ the loop


@dataclass
class _Backoff:
    """When a component may be restarted next: at once, unless it keeps dying right after a restart."""

    restarted_at: dict[str, float] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)

    def ready(self, name: str, now: float) -> bool:
        last = self.restarted_at.get(name)
        return last is None or now >= last + self.delay.get(name, 0.0)

    def restarted(self, name: str, now: float) -> None:
        last = self.restarted_at.get(name)
        if last is not None and now - last < CRASH_LOOP_S:
            self.delay[name] = min(MAX_BACKOFF_S, max(1.0, 2 * self.delay.get(name, 0.0)))
        else:
            self.delay[name] = 0.0
        self.restarted_at[name] = now


class Supervisor:
    def __init__(self, config: ModelOpsConfig, poll_s: float = POLL_S) -> None:
        self.config = config
        self.home = config.stack_home
        self.target = LocalTarget(config)
        self.poll_s = poll_s
        self.heartbeat = self.home / comp.SUPERVISOR_HEARTBEAT
        self.backoff = _Backoff()
        self.stopping = threading.Event()
        self.revivals: dict[str, Future[None]] = {}
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="revive")
        self.standby: Standby | None = None
        self.standby_lock = threading.Lock()

    def run(self) -> None:
        log.info("supervising the stack in %s (pid %d, every %.1f s)", self.home, os.getpid(), self.poll_s)
        while not self.stopping.is_set():
            self.tick()
            self.stopping.wait(self.poll_s)
        log.info("stopping: waiting for %d model server restart(s) under way", len(self.revivals))
        self.pool.shutdown(wait=True)
        with self.standby_lock:
            standby, self.standby = self.standby, None
        if standby is not None:
            _stop_standby(standby)
        log.info("stopped")

    def stop(self, signum: int = signal.SIGTERM, _frame: FrameType | None = None) -> None:
        self.stopping.set()

    def tick(self) -> None:
        _reap_children()
        with _stack_lock(self.home) as held:
            if held:  # else `up` or `down` runs: they start and stop what they need; wait a poll
                state = load_state(self.home)
                if state is not None:
                    self._check_worker(state)
        if held:
            self._check_serving()
            self._keep_standby()
        self._write_heartbeat()

    # -- the worker ------------------------------------------------------------------------------

    def _check_worker(self, state: StackState) -> None:
        record = state.components.get(comp.WORKER)
        if record is None or record.external or find_process(record.pid, record.start_ticks) is not None:
            return
        now = time.monotonic()
        if not self.backoff.ready(comp.WORKER, now):
            return
        t0 = time.monotonic()
        spec = comp.worker(self.config, state.database_url, started_after=time.time())
        process = spawn(spec.argv, env=spec.env, log=spec.log, cwd=spec.cwd)
        state.components[comp.WORKER] = ComponentRecord(
            name=spec.name,
            url=spec.url,
            pid=process.pid,
            start_ticks=start_ticks(process.pid),
            log=str(spec.log),
            port=spec.port,
        )
        save_state(state)
        self.backoff.restarted(comp.WORKER, now)
        self._restarted(comp.WORKER, record.pid, process.pid, time.monotonic() - t0)
        threading.Thread(target=self._after_worker_restart, name="reconcile", daemon=True).start()

    def _after_worker_restart(self) -> None:
        if importlib.util.find_spec(RECONCILE_MODULE) is None:
            return
        try:
            hook = getattr(importlib.import_module(RECONCILE_MODULE), "after_worker_restart", None)
            if hook is not None:
                hook(self.config, echo=lambda message: log.info("%s", message))
        except Exception:
            log.exception("%s.after_worker_restart failed", RECONCILE_MODULE)

    # -- model servers ---------------------------------------------------------------------------

    def _check_serving(self) -> None:
        for name, future in list(self.revivals.items()):
            if future.done():
                del self.revivals[name]
        now = time.monotonic()
        for model in self.target.models():
            component = f"serving:{model}"
            if component in self.revivals or not self.backoff.ready(component, now):
                continue
            record = self.target.record(model)
            if record is None or record.stopped or find_process(record.pid, record.start_ticks):
                continue
            self.backoff.restarted(component, now)
            self.revivals[component] = self.pool.submit(self._revive, model, record.pid)

    def _revive(self, model: str, died_pid: int) -> None:
        t0 = time.monotonic()
        with self.standby_lock:
            standby = self.standby
        try:
            rollout = self.target.revive(model, blocking=False, standby=standby)
        except DeployError as exc:
            log.error("serving:%s (pid %d) died; restarting it failed: %s", model, died_pid, exc)
            return
        except Exception:
            log.exception("serving:%s (pid %d) died; restarting it failed", model, died_pid)
            return
        if rollout is None:
            return  # a rollout or `down` holds the model now: it decides what serves
        new_pid = int(rollout.details["pid"])
        if new_pid != died_pid:
            self._restarted(f"serving:{model}", died_pid, new_pid, time.monotonic() - t0, url=rollout.url)

    # -- the warm standby ------------------------------------------------------------------------

    def _keep_standby(self) -> None:
        """One warm standby while any model has a server record; a new one when it died or left."""
        with self.standby_lock:
            if self.standby is not None and self.standby.alive:
                return
            if self.standby is not None:
                shutil.rmtree(self.standby.folder, ignore_errors=True)
                self.standby = None
            if not self.target.models():
                return
            self.standby = self.target.start_standby()
            log.info("warm standby starting: pid %d (log %s)", self.standby.pid, self.standby.log)

    def _write_heartbeat(self) -> None:
        with self.standby_lock:
            standby = self.standby
        beat = {"pid": os.getpid(), "at": time.time()}
        if standby is not None:
            beat.update(standby_pid=standby.pid, standby_ready=standby.ready)
        tmp = self.heartbeat.with_suffix(".tmp")
        tmp.write_text(json.dumps(beat))
        os.replace(tmp, self.heartbeat)

    def _restarted(
        self, component: str, died_pid: int | None, new_pid: int, seconds: float, **extra: Any
    ) -> None:
        last = {"died_pid": died_pid, "new_pid": new_pid, "at": time.time(), "seconds": round(seconds, 2)}
        last.update(extra)
        count = _count_restart(self.home, component, last)
        log.warning(
            "%s (pid %s) died; restarted as pid %d in %.1f s (restart %d)%s",
            component, died_pid, new_pid, seconds, count, f" at {extra['url']}" if "url" in extra else "",
        )  # fmt: skip


@contextlib.contextmanager
def _stack_lock(home: Path) -> Iterator[bool]:
    """The lock ``up``/``down`` hold (``<home>/.lock``), without waiting: yields whether it is ours."""
    with (home / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_heartbeat(home: Path) -> dict[str, Any]:
    """The supervisor's last heartbeat: its pid, time, and the standby's pid and readiness."""
    try:
        beat = json.loads((home / comp.SUPERVISOR_HEARTBEAT).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return beat if isinstance(beat, dict) else {}


def _stop_standby(standby: Standby) -> None:
    """Stop the standby (its own process group; the servers it forked have theirs) and drop its jobs."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(standby.pid, signal.SIGTERM)
    shutil.rmtree(standby.folder, ignore_errors=True)


def _reap_children() -> None:
    """Processes this supervisor restarted are its children: collect the ones that exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s", stream=sys.stdout
    )
    supervisor = Supervisor(load_config())
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    supervisor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
