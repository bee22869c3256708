"""The process pool's flow-run command: a launcher that hands each run to a warm standby.

Real processes throughout: a long-lived *worker* process (it starts each command with an environment
and a working directory and reports the exit status, as Prefect's process worker does), the launcher
``python -m modelops.stack.engine_standby`` it starts, and the standbys the launcher starts. The engine
is a stand-in module (``MODELOPS_ENGINE_STANDBY_ENGINE``) that reports where and how it runs, so each
test sees which process ran the run, with which streams, directory, environment and exit status. What
changes from run to run is passed as ``PREFECT__*`` variables, as the worker passes a run's id: any
other variable is part of the standby's key (a run with another environment gets its own). The
flow runs of the real stack go through the same launcher (tests/support/automation.py, run by
tests/stack/test_stack_postgres_backends.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from support.stack import wait_for

from modelops.config import PROJECT_ROOT
from modelops.stack import engine_standby

pytestmark = pytest.mark.slow

# What the worker does with each line of its stdin: start the command, say its pid, wait, say its end.
WORKER = """
import json, subprocess, sys
for line in sys.stdin:
    job = json.loads(line)
    process = subprocess.Popen(job["argv"], env=job["env"], cwd=job["cwd"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(json.dumps({"pid": process.pid}), flush=True)
    output, _ = process.communicate()
    print(json.dumps({"exit": process.returncode, "output": output.decode()}), flush=True)
"""

# The stand-in engine: reports its process, directory, environment and what was imported before it.
ENGINE = """
import atexit, json, os, pathlib, signal, sys, time
atexit.register(print, "engine: exit handler ran", flush=True)  # as Prefect flushes its logs at exit
mode = os.environ.get("PREFECT__TEST_ENGINE_MODE", "report")
if mode == "wait-for-sigterm":
    def terminated(signum, frame):
        print("engine: terminated", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, terminated)
# the tests signal the engine once this file exists: only after its handler is in place
pathlib.Path("engine.pid").write_text(str(os.getpid()))
if mode == "wait-for-sigterm":
    print("engine: waiting", flush=True)
    time.sleep(120)
if mode == "sleep":
    time.sleep(120)
numpy = sys.modules.get("numpy")
print(json.dumps({
    "pid": os.getpid(),
    "ppid": os.getppid(),
    "numpy_draw": numpy.random.random() if numpy else None,
    "cwd": os.getcwd(),
    "run_value": os.environ.get("PREFECT__TEST_RUN_VALUE"),
    "prefect_preloaded": "prefect.flow_engine" in sys.modules,
    "flows_preloaded": "flows.retrain" in sys.modules,
}), flush=True)
print("engine: to stderr", file=sys.stderr, flush=True)
sys.exit(int(os.environ.get("PREFECT__TEST_ENGINE_EXIT", "0")))
"""


class Worker:
    """A real process in the role of Prefect's process worker (the launcher's parent)."""

    def __init__(
        self, tmp_path: Path, project: Path | None = None, standby_dir: Path | None = None, **env: str
    ) -> None:
        """``project``: a copy of the project's code the launcher and standbys import instead of this
        checkout's (a test that changes a source file changes the copy, never files other tests use)."""
        (tmp_path / "standin_engine.py").write_text(ENGINE)
        self.standby_dir = standby_dir or tmp_path / "standby"
        path = [str(project) if project else None, str(tmp_path), os.environ.get("PYTHONPATH")]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, path)),
            "MODELOPS_ENGINE_STANDBY_ENGINE": "standin_engine",
            "MODELOPS_ENGINE_STANDBY_DIR": str(self.standby_dir),
            **env,
        }
        self.tmp_path = tmp_path
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.runs = 0

    def start(self, **env: str) -> tuple[int, Path]:
        """Start one run; (launcher pid, the run's working directory)."""
        self.runs += 1
        cwd = self.tmp_path / f"run-{self.runs}"
        cwd.mkdir()
        job = {
            "argv": [sys.executable, "-m", "modelops.stack.engine_standby"],
            "env": {**self.env, "PREFECT__FLOW_RUN_ID": f"run-{self.runs}", **env},
            "cwd": str(cwd),
        }
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        return int(self._read()["pid"]), cwd

    def finish(self) -> tuple[int, str]:
        """(exit status, output) of the run started last."""
        answer = self._read()
        return answer["exit"], answer["output"]

    def run(self, **env: str) -> tuple[int, int, str]:
        """(launcher pid, exit status, output) of one whole run."""
        pid, _cwd = self.start(**env)
        status, output = self.finish()
        return pid, status, output

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the worker process ended"
        return json.loads(line)

    def standby_ready(self) -> bool:
        return any(self.standby_dir.glob("*.sock"))

    def standby_pids(self) -> list[int]:
        marker = f"--serve {self.standby_dir}"
        return [
            p.pid for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])
        ]

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=60)


@pytest.fixture
def worker(tmp_path):
    worker = Worker(tmp_path)
    try:
        yield worker
    finally:
        worker.stop()
        # the standbys leave with their worker (checked in a test below); never leave one behind
        wait_for(lambda: not worker.standby_pids(), 60, "the standbys to exit after their worker")


def engine_pid(cwd: Path) -> int:
    pid_file = cwd / "engine.pid"
    return int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 60, "the engine to start"))


def engine_report(output: str) -> dict[str, Any]:
    return json.loads(next(line for line in output.splitlines() if line.startswith("{")))


def test_the_first_run_starts_cold_and_the_next_one_goes_to_the_warm_standby(worker):
    launcher, status, output = worker.run(PREFECT__TEST_RUN_VALUE="first", PREFECT__TEST_ENGINE_EXIT="0")
    cold = engine_report(output)
    assert status == 0
    assert cold["pid"] == launcher  # the launcher became the engine (exec)
    assert not cold["flows_preloaded"]

    wait_for(worker.standby_ready, 120, "a standby to import Prefect and the flows")
    launcher, cwd = worker.start(PREFECT__TEST_RUN_VALUE="second", PREFECT__TEST_ENGINE_EXIT="7")
    status, output = worker.finish()
    warm = engine_report(output)
    assert status == 7  # the engine's exit status is the launcher's
    assert warm["pid"] != launcher  # another process ran it ...
    assert warm["prefect_preloaded"] and warm["flows_preloaded"]  # ... with Prefect and the flows imported
    assert warm["run_value"] == "second"  # this run's environment, not the standby's
    assert warm["cwd"] == str(cwd)
    assert "engine: to stderr" in output  # both streams reach the worker
    assert "engine: exit handler ran" in output  # the run's exit handlers ran before it reported
    assert f"engine standby: pid {warm['pid']} runs flow run run-2" in output


def test_a_standby_directory_too_deep_for_a_socket_address_still_gets_its_warm_standby(tmp_path):
    # A unix socket's address holds 107 bytes of path: a standby directory deep in a temporary tree
    # made the standby's bind fail, so every run started cold (as in a CI job's long pytest paths).
    deep = tmp_path / ("d" * 100) / "standby"
    worker = Worker(tmp_path, standby_dir=deep)
    try:
        worker.run()  # cold; starts the standby
        wait_for(worker.standby_ready, 120, "a standby listening in the deep directory")
        (socket_file,) = deep.glob("*.sock")
        assert len(os.fsencode(socket_file)) > engine_standby.UNIX_PATH_MAX
        launcher, status, output = worker.run(PREFECT__TEST_RUN_VALUE="warm")
        warm = engine_report(output)
        assert status == 0 and warm["pid"] != launcher and warm["flows_preloaded"], output
        assert warm["run_value"] == "warm"
    finally:
        worker.stop()
        wait_for(lambda: not worker.standby_pids(), 60, "the standby to exit after its worker")


def test_the_standby_forks_each_run_and_keeps_waiting(worker):
    worker.run()  # cold; starts the standby
    wait_for(worker.standby_ready, 120, "a standby")
    [standby] = worker.standby_pids()
    reports = []
    for value in ("second", "third"):
        launcher, status, output = worker.run(PREFECT__TEST_RUN_VALUE=value)
        assert status == 0
        reports.append(engine_report(output))
        assert reports[-1]["ppid"] == standby  # forked from the one standby ...
        assert reports[-1]["pid"] not in (launcher, standby)  # ... into a process of the run's own
        assert reports[-1]["run_value"] == value and reports[-1]["flows_preloaded"]
    assert reports[0]["pid"] != reports[1]["pid"]
    assert reports[0]["numpy_draw"] != reports[1]["numpy_draw"]  # each run draws its own numbers
    assert worker.standby_pids() == [standby]  # no new standby imported Prefect for the next run
    assert worker.standby_ready()


# Imported at start-up by every process of the worker below (its PYTHONPATH): a thread that stays.
EXTRA_THREAD = """
import threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
"""


def test_a_standby_with_threads_runs_one_run_itself_and_a_new_one_waits(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(EXTRA_THREAD)
    worker = Worker(tmp_path)
    try:
        worker.run()
        wait_for(worker.standby_ready, 120, "a standby")
        [standby] = worker.standby_pids()
        launcher, status, output = worker.run(PREFECT__TEST_RUN_VALUE="warm")
        assert status == 0
        assert engine_report(output)["pid"] == standby  # no fork: the standby became the run
        wait_for(lambda: worker.standby_ready() and worker.standby_pids() not in ([], [standby]), 120,
                 "the launcher to start the next standby")  # fmt: skip
        log = "\n".join(path.read_text() for path in worker.standby_dir.glob("*.log"))
        assert "threads after the imports: one run per standby" in log
    finally:
        worker.stop()
        wait_for(lambda: not worker.standby_pids(), 60, "the standbys to exit after their worker")


def test_sigterm_to_the_launcher_reaches_the_run_on_the_standby(worker):
    worker.run()  # cold; starts the standby
    wait_for(worker.standby_ready, 120, "a standby")
    launcher, cwd = worker.start(PREFECT__TEST_ENGINE_MODE="wait-for-sigterm")
    engine = engine_pid(cwd)
    assert engine != launcher
    os.kill(launcher, signal.SIGTERM)
    status, output = worker.finish()
    assert status == 143
    assert "engine: terminated" in output
    wait_for(lambda: not psutil.pid_exists(engine), 30, "the engine process to end")


def test_killing_the_launcher_kills_the_run(worker):
    worker.run()
    wait_for(worker.standby_ready, 120, "a standby")
    launcher, cwd = worker.start(PREFECT__TEST_ENGINE_MODE="sleep")
    engine = engine_pid(cwd)
    os.kill(launcher, signal.SIGKILL)
    # a run never outlives the process its worker watches (the engine would sleep 120 s otherwise)
    wait_for(lambda: not psutil.pid_exists(engine) or psutil.Process(engine).status() == psutil.STATUS_ZOMBIE,
             30, "the run on the standby to be killed")  # fmt: skip
    status, _output = worker.finish()
    assert status == -signal.SIGKILL


@pytest.fixture
def worker_on_a_copy(tmp_path):
    """A worker whose launcher and standbys import a copy of the project's code (tmp_path/project)."""
    project = tmp_path / "project"
    for name in ("modelops", "flows", "tasks", "infra"):
        shutil.copytree(PROJECT_ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    worker = Worker(tmp_path, project=project)
    try:
        yield worker, project
    finally:
        worker.stop()
        wait_for(lambda: not worker.standby_pids(), 60, "the standbys to exit after their worker")


def test_a_changed_source_file_sends_the_run_cold(worker_on_a_copy):
    worker, project = worker_on_a_copy
    worker.run()
    wait_for(worker.standby_ready, 120, "a standby")
    # imported by the flows, so by the standby; the copy's, so no other test's standby sees the change
    source = project / "modelops" / "messages.py"
    before = source.stat()
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    launcher, status, output = worker.run(PREFECT__TEST_RUN_VALUE="after the change")
    assert status == 0
    assert engine_report(output)["pid"] == launcher  # cold: the launcher ran it itself
    assert "modelops/messages.py changed since the standby imported it: starting the engine cold" in output


def test_a_run_with_another_environment_starts_cold_and_gets_its_own_standby(worker):
    worker.run()
    wait_for(worker.standby_ready, 120, "a standby")
    launcher, status, output = worker.run(MODELOPS_STACK__HOME="/elsewhere")  # read at import time, maybe
    assert status == 0
    assert engine_report(output)["pid"] == launcher
    wait_for(lambda: len(list(worker.standby_dir.glob("*.sock"))) == 2, 120, "a standby for each environment")


def test_the_standby_leaves_with_its_worker(worker):
    worker.run()
    wait_for(worker.standby_ready, 120, "a standby")
    standbys = worker.standby_pids()
    assert len(standbys) == 1  # one per worker and environment, however many launchers started one
    worker.stop()
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in standbys), 60, "the standby to exit")
    assert not list(worker.standby_dir.iterdir())  # and it leaves nothing behind


def test_down_stops_a_waiting_standby_and_it_leaves_nothing_behind(worker):
    worker.run()
    wait_for(worker.standby_ready, 120, "a standby")
    standbys = worker.standby_pids()
    assert engine_standby.stop_standbys(worker.process.pid) == standbys  # what `modelops down` calls
    assert not any(psutil.pid_exists(pid) for pid in standbys)
    assert not list(worker.standby_dir.iterdir())
    assert worker.process.poll() is None  # the worker itself is not ours to stop
