"""The local target's warm standby: rollouts forked from one process with TensorFlow imported.

A real standby process (``modelops serve --standby-for``, as the supervisor starts it) forks every
server here; the servers answer over real HTTP. What a fork must keep from a new process is checked
on the forked server itself: its environment and directory are the caller's, a server that cannot
load reports its exit status, and a caller whose import-time environment differs gets a cold start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from support import http_client
from support.network import free_port
from support.serving import build_saved_model, expected_score, sample_records
from support.stack import wait_for

from modelops.config import load_config
from modelops.serving import rest_client
from modelops.serving.warm_standby import ForkedServer, find_ready
from modelops.targets.local import LocalTarget

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODEL = "risk"
RECORDS = sample_records(4, seed=5)


def _target(home: Path) -> LocalTarget:
    config = load_config(
        environ={"MODELOPS_SERVING__PORT": str(free_port()), "MODELOPS_SERVING__ROLLOUT_TIMEOUT_S": "90"}
    )
    return LocalTarget(config, home=home, smoke_records=RECORDS)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {"v1": build_saved_model(root / "v1", bias=-1.4), "v2": build_saved_model(root / "v2", bias=0.5)}


@pytest.fixture(scope="module")
def serving_home(tmp_path_factory):
    """One standby for the module (each costs a TensorFlow import), found by the targets through it."""
    home = tmp_path_factory.mktemp("serving")
    standby = _target(home).start_standby()
    wait_for(lambda: standby.ready, 120, "the warm standby imported TensorFlow")
    yield home
    os.killpg(standby.pid, 15)
    wait_for(lambda: not standby.alive, 30, "the standby stopped")


@pytest.fixture
def target(serving_home):
    local = _target(serving_home)
    yield local
    local.stop(MODEL)


def _parent(pid: int) -> int:
    return psutil.Process(pid).ppid()


def test_rollouts_are_forked_from_the_standby_which_stays_for_the_next(target, models, serving_home):
    standby = find_ready(target.standby_root)
    assert standby is not None

    first = target.deploy(MODEL, "1", models["v1"])
    assert _parent(first.details["pid"]) == standby.pid
    second = target.deploy(MODEL, "2", models["v2"])
    assert _parent(second.details["pid"]) == standby.pid
    wait_for(lambda: not psutil.pid_exists(first.details["pid"]), 10, "the standby reaped the old server")
    assert second.url == first.url and second.previous_version == "1"
    assert rest_client.predict(second.url, MODEL, RECORDS) == pytest.approx(
        [expected_score(r, 0.5) for r in RECORDS], abs=1e-5
    )
    assert find_ready(target.standby_root) == standby, "the same standby waits for the next job"
    log = Path(second.details["log"]).read_text()
    assert f"forked from the warm standby (pid {standby.pid})" in log and "version" in log


def test_a_forked_server_runs_with_the_callers_environment_and_directory(
    serving_home, models, tmp_path, monkeypatch
):
    standby = find_ready(serving_home / "standby")
    shutil.copytree(models["v1"], tmp_path / "base" / "1")
    monkeypatch.setenv("MODELOPS_SERVING__MAX_BATCH_SIZE", "7")  # the caller's config, read by the server
    port = free_port()
    started = standby.start_server(
        ["--model-name", MODEL, "--model-base-path", str(tmp_path / "base"), "--port", str(port)],
        log=tmp_path / "server.log",
        cwd=tmp_path,
    )
    assert isinstance(started, ForkedServer), started
    try:
        stats = wait_for(lambda: _stats(f"http://127.0.0.1:{port}"), 60, "the forked server answers")
        assert stats["max_batch_size"] == 7, "the server read the caller's environment, not the standby's"
        server = psutil.Process(started.pid)
        assert Path(server.cwd()) == tmp_path and server.ppid() == standby.pid
        assert os.getsid(server.pid) == server.pid, "its own session: stopping it leaves the standby alone"
        kept = [
            path for path in standby.folder.rglob("*") if path.is_file() and b"MAX_BATCH" in path.read_bytes()
        ]
        assert kept == [], "the job (the caller's environment, secrets too) is deleted once read"
        assert standby.folder.stat().st_mode & 0o077 == 0
    finally:
        os.killpg(started.pid, 15)
    wait_for(lambda: started.exit_code() is not None, 30, "the server stopped")
    assert started.exit_code() == 0 and standby.ready


def _stats(url: str) -> dict | None:
    try:
        return http_client.get(f"{url}/-/stats", timeout=1).json()
    except httpx.HTTPError:
        return None


def test_a_forked_server_that_cannot_load_reports_its_exit_status(serving_home, tmp_path):
    standby = find_ready(serving_home / "standby")
    log = tmp_path / "broken.log"
    started = standby.start_server(
        [
            "--model-name",
            "broken",
            "--model-base-path",
            str(tmp_path / "missing"),
            "--port",
            str(free_port()),
        ],
        log=log,
        cwd=tmp_path,
    )
    assert isinstance(started, ForkedServer), started
    wait_for(lambda: started.exit_code() is not None, 60, "the broken server exits")
    assert started.exit_code() == 2  # modelops serve's exit status for a user error
    assert "modelops serve: error:" in log.read_text() and str(tmp_path / "missing") in log.read_text()
    assert standby.ready


def test_another_import_time_environment_gets_a_cold_start(target, models, monkeypatch):
    standby = find_ready(target.standby_root)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # read when TensorFlow loads: a fork cannot honour it
    refused = standby.start_server(
        ["--model-name", "x", "--model-base-path", "/nonexistent"], log=Path(os.devnull), cwd=Path("/")
    )
    assert refused == "refused: environment read at import differs: TF_ENABLE_ONEDNN_OPTS"

    rollout = target.deploy(MODEL, "1", models["v1"])
    server = psutil.Process(rollout.details["pid"])
    assert server.ppid() == os.getpid(), "started cold, by this process"
    assert server.environ().get("TF_ENABLE_ONEDNN_OPTS") == "0"
    assert rest_client.predict(rollout.url, MODEL, RECORDS) == pytest.approx(
        [expected_score(r, -1.4) for r in RECORDS], abs=1e-5
    )
    assert standby.ready


def test_the_standby_leaves_with_the_process_that_started_it_and_its_servers_keep_serving(models, tmp_path):
    home = tmp_path / "serving"
    keeper = subprocess.Popen(  # a stand-in for the supervisor: starts a standby, then waits to be killed
        [sys.executable, "-c", "import json, sys, time; from pathlib import Path; "
         "from modelops.targets.local import LocalTarget; "
         "s = LocalTarget(home=Path(sys.argv[1])).start_standby(); "
         "print(json.dumps([s.pid, s.start_ticks, str(s.folder), str(s.log)]), flush=True); time.sleep(600)",
         str(home)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        standby_pid = json.loads(keeper.stdout.readline())[0]
        wait_for(
            lambda: find_ready(home / "standby") is not None, 120, "the warm standby imported TensorFlow"
        )
        target = _target(home)
        rollout = target.deploy(MODEL, "1", models["v1"])
        assert _parent(rollout.details["pid"]) == standby_pid
    finally:
        keeper.kill()
        keeper.wait()
    try:
        wait_for(lambda: not psutil.pid_exists(standby_pid), 30, "the standby left with its keeper")
        assert rest_client.predict(rollout.url, MODEL, RECORDS) == pytest.approx(
            [expected_score(r, -1.4) for r in RECORDS], abs=1e-5
        ), "the server it forked keeps serving"
        assert find_ready(home / "standby") is None
        assert "the supervisor is gone; exiting" in next((home / "logs").glob("standby-*.log")).read_text()
    finally:
        target.stop(MODEL)


def test_a_standby_whose_imported_source_changed_refuses_and_leaves(tmp_path):
    # A copy of the package, so that editing it retires this standby only (not the suite's others).
    project = tmp_path / "project"
    shutil.copytree(
        PROJECT_ROOT / "modelops", project / "modelops", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(PROJECT_ROOT / "infra" / "config", project / "infra" / "config")
    home = tmp_path / "serving"
    keeper = subprocess.Popen(  # the standby's parent, as the supervisor is
        [sys.executable, "-c", "import json, sys, time; from pathlib import Path; "
         "from modelops.targets.local import LocalTarget; "
         "s = LocalTarget(home=Path(sys.argv[1])).start_standby(); "
         "print(json.dumps([s.pid, s.start_ticks, str(s.folder), str(s.log)]), flush=True); time.sleep(600)",
         str(home)],
        stdout=subprocess.PIPE, text=True, cwd=project, env={**os.environ, "PYTHONPATH": str(project)},
    )  # fmt: skip
    try:
        standby_pid = json.loads(keeper.stdout.readline())[0]
        wait_for(
            lambda: find_ready(home / "standby") is not None, 120, "the warm standby imported TensorFlow"
        )
        standby = find_ready(home / "standby")
        assert standby.pid == standby_pid
        app = project / "modelops" / "serving" / "app.py"
        os.utime(app, ns=(app.stat().st_atime_ns, app.stat().st_mtime_ns + 1_000_000_000))

        answer = standby.start_server(
            ["--model-name", "x", "--model-base-path", "/nonexistent"], log=Path(os.devnull), cwd=tmp_path
        )

        assert answer == "refused: modelops/serving/app.py changed since the standby imported it"
        wait_for(lambda: not standby.alive, 30, "the stale standby left")
        assert find_ready(home / "standby") is None
    finally:
        keeper.kill()
        keeper.wait()
