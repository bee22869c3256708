"""Python and the ``prefect`` CLI after ``modelops up``: Prefect's own settings (the ``prefect.toml``
that ``up`` writes) point them at the stack's server; without a stack a flow call fails clearly and
no temporary server starts.

One stack for the module, on the default backend (embedded PostgreSQL). Clients run as subprocesses
whose working directory is the folder of the written ``prefect.toml`` and whose environment has no
``PREFECT_API_URL`` (nor any other ``PREFECT_*`` setting).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from support import http_client
from support.stack_clients import client_env, run_client
from support.stack_home import PROBE_FLOW, prefect_yaml, run_modelops, stack_env

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).parent / "prefect")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("clients")
    flow_file = root / "probe_flow.py"
    flow_file.write_text(PROBE_FLOW)
    prefect_file = root / "prefect.yaml"
    prefect_file.write_text(prefect_yaml(flow_file, "clients-test"))
    env = stack_env(root / "home", prefect_file)
    result = run_modelops(env, "up")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield env, result.stdout, root
    finally:
        run_modelops(env, "down", timeout=120)


def _api(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['MODELOPS_STACK__PREFECT_PORT']}/api"


def test_up_writes_a_prefect_toml_for_the_stack_home(stack):
    env, output, _ = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    toml = home / "prefect.toml"  # the home is outside the project: the project root's is left alone
    assert f"prefect.toml: {toml} points Python" in output
    text = toml.read_text()
    assert text.startswith("# Written by `modelops up`")
    assert f'url = "{_api(env)}"' in text and "enabled = false" in text


def test_a_flow_called_from_python_lands_on_the_stack(stack):
    env, _, root = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    result = run_client(home, client_env(root))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "temporary server on" not in output  # Prefect's "Starting|Stopping temporary server on …"
    run_id = json.loads(output.split("RUN ", 1)[1].splitlines()[0])["id"]
    run = http_client.get(f"{_api(env)}/flow_runs/{run_id}", timeout=10).json()
    assert run["name"] == "client-probe-python" and run["state_type"] == "COMPLETED"
    artifacts = http_client.post(
        f"{_api(env)}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}, timeout=10
    ).json()
    assert [a["key"] for a in artifacts] == ["client-probe-python"]


def test_prefect_cli_in_that_folder_lists_the_run(stack):
    env, _, root = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    listed = subprocess.run(
        [PREFECT, "flow-run", "ls", "--flow-name", "client-probe"],
        cwd=home, env={**client_env(root), "COLUMNS": "250"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "client-probe-python" in listed.stdout


def test_mlflow_keeps_its_registry_in_its_postgresql_database(stack):
    from mlflow.tracking import MlflowClient

    env, output, _ = stack
    assert "mlflow: starting on" in output and "state in PostgreSQL database mlflow" in output
    MlflowClient(f"http://127.0.0.1:{env['MODELOPS_STACK__MLFLOW_PORT']}").create_registered_model("pg-model")
    dsn = f"postgresql://postgres@127.0.0.1:{env['MODELOPS_STACK__POSTGRES_PORT']}/mlflow"
    with psycopg2.connect(dsn, connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name FROM registered_models")
        assert ("pg-model",) in cursor.fetchall()


def test_a_flow_outside_any_stack_fails_clearly(tmp_path):
    """No prefect.toml, no PREFECT_API_URL: the call fails in one line, no temporary server starts."""
    result = run_client(tmp_path, client_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "PrefectUnreachable: no Prefect API is configured" in output
    assert "modelops up" in output and "PREFECT_API_URL" in output
    assert "temporary server on" not in output and "RUN " not in output  # Prefect's "Starting … on"


def test_after_down_the_file_is_gone_and_a_flow_call_says_so(stack):
    env, _, root = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    down = run_modelops(env, "down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert f"prefect.toml: removed {home / 'prefect.toml'}" in down.stdout
    assert not (home / "prefect.toml").exists()
    result = run_client(home, client_env(root))
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "no Prefect API is configured" in output
    assert "temporary server on" not in output  # Prefect's "Starting|Stopping temporary server on …"
