"""An environment failure is one line naming component, cause and fix; ``-v`` adds the traceback.

The commands run as subprocesses, like a user runs them, for the failures that are cheap to stage:
a port taken and a stack home that cannot be created (``up``), PostgreSQL unreachable (``ship``),
Prefect unreachable (``approve``). MLflow unreachable and a missing Docker engine are staged with the
real client libraries in-process and passed to the handler ``main()`` uses.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from pathlib import Path

import psycopg2
import pytest
from support.network import free_port
from support.stack_home import MODELOPS, run_modelops, stack_env

from modelops.cli.errors import explain, one_line


def _closed_port() -> int:
    return free_port()  # nothing listens there


def _assert_one_line(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if " error: " in line or "unexpected" in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_up_with_a_port_taken(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "home", tmp_path / "prefect.yaml")
    port = int(env["MODELOPS_STACK__PREFECT_PORT"])
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_modelops(env, "up", timeout=120)
    _assert_one_line(
        result, "prefect-server:", f"port {port}", "already in use", "MODELOPS_STACK__PREFECT_PORT"
    )


def _home_under_a_file(tmp_path: Path) -> dict[str, str]:
    """A stack home below a regular file: cannot be created, even by root (chmod would not stop root)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return stack_env(blocker / "home", tmp_path / "prefect.yaml")


def test_up_with_a_stack_home_that_cannot_be_created(tmp_path: Path) -> None:
    result = run_modelops(_home_under_a_file(tmp_path), "up", timeout=120)
    _assert_one_line(result, "filesystem:", "a-file/home", "Not a directory", "MODELOPS_STACK__HOME", "-v")


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    env = _home_under_a_file(tmp_path)
    result = subprocess.run([MODELOPS, "-v", "up"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "NotADirectoryError" in result.stderr
    assert "modelops up: error: filesystem: cannot create or write" in result.stderr


def test_ship_with_postgres_unreachable(tmp_path: Path) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{_closed_port()}/modelops"
    env = dict(os.environ)
    spool = tmp_path / "spool"
    spool.mkdir()
    result = subprocess.run(
        [MODELOPS, "ship", "--once", "--spool", str(spool), "--database-url", dsn, "--give-up-after", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    _assert_one_line(result, "PostgreSQL", "unreachable", "Connection refused", "start the database")


def test_approve_with_prefect_unreachable() -> None:
    env = dict(os.environ, PREFECT_API_URL=f"http://127.0.0.1:{_closed_port()}/api")
    result = subprocess.run(
        [MODELOPS, "approve", "--reviewer", "ann", "--tag", "v1"], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    _assert_one_line(result, "cannot reach the Prefect API", "modelops up", "PREFECT_API_URL")


def test_mlflow_unreachable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(Exception) as caught:
        client.search_experiments()
    line = one_line("train", caught.value)
    assert line.startswith("modelops train: error: MLflow:"), line
    assert "MLFLOW_TRACKING_URI" in line and "modelops up" in line and "\n" not in line


def test_docker_engine_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    docker = pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(docker.errors.DockerException) as caught:
        docker.from_env()
    line = one_line("lifecycle", caught.value)
    assert line.startswith("modelops lifecycle: error: Docker: no engine answers"), line
    assert "docker-engine.sh start" in line and "DOCKER_HOST" in line


ENVIRONMENT_ERRORS = [
    (OSError(errno.EADDRINUSE, "Address already in use"), ("network:", "port is already in use")),
    (
        PermissionError(errno.EACCES, "Permission denied", "/x/bin/initdb"),
        ("permission denied on /x/bin/initdb", "execute"),
    ),
    (OSError(errno.ENOSPC, "No space left on device", "/x/data"), ("no space left", "/x/data", "free")),
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), ("connection failed", "modelops up")),
    (
        psycopg2.OperationalError("connection to server failed: Connection refused"),
        ("PostgreSQL: cannot connect", "MODELOPS_DATABASE_URL"),
    ),
]


@pytest.mark.parametrize(("exc", "needles"), ENVIRONMENT_ERRORS)
def test_environment_errors_are_one_line(exc: BaseException, needles: tuple[str, ...]) -> None:
    line = explain(exc)
    assert line is not None and "\n" not in line
    for needle in needles:
        assert needle in line, line


def test_a_wrapped_environment_error_is_found_in_the_chain() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/log")
        except OSError as inner:
            raise RuntimeError("saving the run failed") from inner
    except RuntimeError as outer:
        assert "no space left" in one_line("train", outer)


def test_anything_else_is_one_unexpected_line() -> None:
    line = one_line("demo", ValueError("bad\nsecond line"))
    assert line == "modelops demo: unexpected ValueError: bad (run with -v for the traceback)"
