"""The stack's MLflow server runs in one process (:mod:`modelops.stack.mlflow_process`).

``mlflow server`` imports MLflow, then starts uvicorn as a child that imports it all again; the stack's
launcher runs MLflow's command line but serves in the same process. These tests run it for real
(sqlite store, local artifacts, a free port) and check what a client and ``modelops down`` rely on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid

import mlflow.server
import psutil
import pytest
from mlflow import MlflowClient
from support.network import free_port
from support.stack import MlflowServer

from modelops.stack import mlflow_process


@pytest.fixture
def server(tmp_path):
    started = MlflowServer(tmp_path, free_port())
    started.start()
    yield started
    started.stop()


def test_one_process_serves_tracking_registry_and_artifacts(server, tmp_path):
    assert server.process is not None
    assert psutil.Process(server.process.pid).children(recursive=True) == []  # no second MLflow import

    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    experiment = client.create_experiment(f"one-process-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "ks", 0.42)
    note = tmp_path / "note.txt"
    note.write_text("served through the artifact proxy")
    client.log_artifact(run.info.run_id, str(note))
    name = f"one-process-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/note.txt", run.info.run_id)

    assert client.get_run(run.info.run_id).data.metrics == {"ks": 0.42}
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    assert client.get_model_version(name, version.version).run_id == run.info.run_id
    assert any((tmp_path / "artifacts").rglob("note.txt"))  # stored by this server, under its destination


def test_sigterm_shuts_it_down_cleanly(server):
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (uvicorn >= 0.29)
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.tail(40)


def test_a_command_that_is_not_uvicorn_runs_as_a_child_like_mlflow_server_does(tmp_path):
    marker = tmp_path / "ran"
    command = [
        sys.executable,
        "-c",
        f"import os, pathlib; pathlib.Path({str(marker)!r}).write_text(os.environ['X'])",
    ]

    child = mlflow_process.launch_server(command, extra_env={"X": "from MLflow's env map"}, synchronous=False)

    assert isinstance(child, subprocess.Popen)
    assert child.wait(60) == 0
    assert marker.read_text() == "from MLflow's env map"


def test_mlflow_still_launches_its_server_through_the_function_replaced_here():
    """An MLflow upgrade that renames it makes the stack fall back to two processes: say so here."""
    assert callable(getattr(mlflow.server, "_exec_cmd", None))
    assert mlflow_process.runs_in_process([sys.executable, "-m", "uvicorn", "mlflow.server.fastapi_app:app"])
    assert not mlflow_process.runs_in_process(["gunicorn", "mlflow.server:app"])
