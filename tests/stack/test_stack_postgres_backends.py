"""Where the Prefect server and MLflow keep their state: their own PostgreSQL databases, or SQLite; and,
on each backend, a ``degraded`` event sent the moment ``up`` returns launches the retrain.

The configured-server case runs on the test PostgreSQL (it has pg_trgm, which the Prefect server's
schema needs): both servers write into ``<database>_prefect`` / ``<database>_mlflow``, created by
``up``. The DSN carries a password (trust auth ignores it) that must appear in no log, state file or
output. ``modelops up --sqlite`` keeps both on SQLite files under the home.

Both stacks run the project's own ``prefect.yaml``, so each also checks the retrain automation right
after ``up`` (:mod:`support.automation`): Prefect's server loads an automation by NOTIFY on PostgreSQL
and after the commit on SQLite, and ``up`` must not return before the server acts on it. One stack per
backend serves both checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import psycopg2
import pytest
from support import http_client
from support.automation import assert_no_standby_left, check_retrain_launched_right_after_up
from support.stack import NO_SCHEDULED_CHECK
from support.stack_clients import client_env, run_client
from support.stack_home import assert_gone, run_modelops, stack_env, stack_status

from modelops.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-not-for-logs"


def _project_stack_env(root: Path, **extra: str) -> dict[str, str]:
    """A stack in ``root/home`` with the project's deployments and automation, no scheduled check."""
    return stack_env(
        root / "home",
        PROJECT_ROOT / "prefect.yaml",
        MODELOPS_MONITORING__SCHEDULE_CRON=NO_SCHEDULED_CHECK,
        MODELOPS_ENGINE_STANDBY_DIR=str(root / "standby"),
        **extra,
    )


def _rows(dsn: str, query: str) -> list[tuple]:
    with psycopg2.connect(dsn, connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchall()


def _drop(server_dsn: str, *databases: str) -> None:
    connection = psycopg2.connect(server_dsn, connect_timeout=5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        for name in databases:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    connection.close()


def test_prefect_and_mlflow_write_into_their_databases_on_the_configured_server(tmp_path, postgres_url):
    """With a configured database, ``up`` checks it and starts no PostgreSQL of its own; the Prefect
    server and MLflow keep their state in databases of their own on that server."""
    from mlflow.tracking import MlflowClient

    base, _, database = postgres_url.rpartition("/")
    with_password = base.replace("postgres@", f"postgres:{PASSWORD}@", 1) + f"/{database}"
    env = _project_stack_env(tmp_path, MODELOPS_DATABASE_URL=with_password)
    home = Path(env["MODELOPS_STACK__HOME"])
    pids: list[int] = []
    try:
        up = run_modelops(env, "up", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        check_retrain_launched_right_after_up(env, tmp_path / "standby")
        assert "postgres: using the configured database" in up.stdout
        assert not (home / "postgres").exists()
        rows = {row["name"]: row for row in stack_status(env)}
        assert rows["postgres"]["pid"] is None and rows["postgres"]["healthy"]
        # process_iter's attrs: a process that ends (or turns zombie) meanwhile gives None, not an error
        command_lines = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        assert not any("pginstall/bin/postgres" in line and str(tmp_path) in line for line in command_lines)
        pids = [row["pid"] for row in rows.values() if row["pid"]]
        assert f"created {database}_prefect, {database}_mlflow" in up.stdout
        assert f"state in PostgreSQL database {database}_prefect" in up.stdout
        assert f"state in PostgreSQL database {database}_mlflow" in up.stdout
        run = run_client(home, client_env(tmp_path))
        assert run.returncode == 0, run.stdout + run.stderr
        run_id = json.loads((run.stdout + run.stderr).split("RUN ", 1)[1].splitlines()[0])["id"]
        MlflowClient(f"http://127.0.0.1:{env['MODELOPS_STACK__MLFLOW_PORT']}").create_registered_model("pg-m")

        prefect_rows = _rows(f"{base}/{database}_prefect", "SELECT id::text, name FROM flow_run")
        assert (run_id, "client-probe-python") in prefect_rows
        assert ("pg-m",) in _rows(f"{base}/{database}_mlflow", "SELECT name FROM registered_models")
        assert not (home / "prefect" / "prefect.db").exists() and not (home / "mlflow" / "mlflow.db").exists()
        status = run_modelops(env, "status", "--json", timeout=60)
        files = [p for p in home.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000]
        leaks = [str(p) for p in files if PASSWORD in p.read_text(errors="replace")]
        assert PASSWORD not in up.stdout + up.stderr + status.stdout and not leaks, leaks
    finally:
        down = run_modelops(env, "down", timeout=300)
        _drop(f"{base}/postgres", f"{database}_prefect", f"{database}_mlflow")
    assert down.returncode == 0, down.stderr
    assert "postgres: external" in down.stdout
    assert_gone(pids)
    assert_no_standby_left(tmp_path / "standby")


def test_sqlite_switch_keeps_both_servers_on_files_under_the_home(tmp_path):
    env = _project_stack_env(tmp_path)
    home = Path(env["MODELOPS_STACK__HOME"])
    try:
        up = run_modelops(env, "up", "--sqlite", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        check_retrain_launched_right_after_up(env, tmp_path / "standby")
        assert f"state in SQLite {home / 'prefect' / 'prefect.db'}" in up.stdout
        assert f"state in SQLite {home / 'mlflow' / 'mlflow.db'}" in up.stdout
        assert "for the stack's servers" not in up.stdout  # no database created for them
        assert json.loads((home / "stack.json").read_text())["backend"] == "sqlite"
        pg = f"postgresql://postgres@127.0.0.1:{env['MODELOPS_STACK__POSTGRES_PORT']}/postgres"
        assert _rows(pg, "SELECT datname FROM pg_database WHERE datname IN ('prefect', 'mlflow')") == []
        api = f"http://127.0.0.1:{env['MODELOPS_STACK__PREFECT_PORT']}/api"
        assert http_client.get(f"{api}/health", timeout=10).status_code == 200
        # A later `up` without the switch keeps the running servers on their SQLite files.
        again = run_modelops(env, "up")
        assert again.returncode == 0, again.stderr
        assert "stay on sqlite" in again.stdout or "stays on sqlite" in again.stdout
        assert json.loads((home / "stack.json").read_text())["backend"] == "sqlite"
        down = run_modelops(env, "down", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
        assert_no_standby_left(tmp_path / "standby")
    finally:
        run_modelops(env, "down", timeout=300)
