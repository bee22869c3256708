"""What each stack process is: its command line, environment, log file, URL and health check.

Every server binds ``config.stack.host`` (127.0.0.1) and keeps its files under the stack home:

    <home>/prefect/   PREFECT_HOME (and prefect.db with stack.backend: sqlite)
    <home>/mlflow/    artifacts/ served by the server (and mlflow.db with stack.backend: sqlite)
    <home>/postgres/  the embedded PostgreSQL data directory
    <home>/logs/      one log file per component

With ``stack.backend: postgres`` (the default) the Prefect server's and MLflow's state live in their
own databases on the stack's PostgreSQL (:func:`backend_stores`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from modelops.config import PROJECT_ROOT, ModelOpsConfig
from modelops.integrations.docker_engine import docker_host
from modelops.stack.postgres import database_url as database_on_server

PREFECT_SERVER = "prefect-server"
MLFLOW = "mlflow"
POSTGRES = "postgres"
WORKER = "worker"
WORKER_NAME = "modelops-worker"
# The name under which the deployment step reports its check that the server acts on automations' events.
AUTOMATIONS_CHECK = "automations"


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    url: str
    port: int | None
    health: Callable[[], bool] = field(compare=False)
    cwd: Path | None = None


def console_script(program: str) -> str:
    """The console script installed next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / program
    return str(candidate) if candidate.exists() else program


def home_paths(config: ModelOpsConfig) -> dict[str, Path]:
    home = config.stack_home
    return {
        "home": home,
        "logs": home / "logs",
        "prefect_home": home / "prefect",
        "mlflow": home / "mlflow",
    }


@dataclass(frozen=True)
class BackendStores:
    """Where the Prefect server and MLflow keep their own state (the URLs may hold a password)."""

    kind: str  # "postgres" | "sqlite"
    prefect: str  # PREFECT_API_DATABASE_CONNECTION_URL
    mlflow: str  # MLflow's backend store URI
    databases: tuple[str, ...] = ()  # postgres: the Prefect and MLflow database names


def backend_stores(
    config: ModelOpsConfig,
    database_url: str | None,
    kind: str | None = None,
    *,
    prefect_on_postgres: bool = True,
) -> BackendStores:
    """The stores for backend ``kind`` (default ``stack.backend``) next to ``database_url``.

    ``database_url`` is the embedded server's DSN; a configured ``database.url`` wins over it, and its
    server gets ``<database>_prefect`` / ``<database>_mlflow`` so stacks sharing a server never share one.
    ``prefect_on_postgres=False`` (the server lacks pg_trgm) keeps the Prefect server on SQLite.
    """
    kind = kind or config.stack.backend
    paths = home_paths(config)
    prefect_sqlite = f"sqlite+aiosqlite:///{paths['prefect_home'] / 'prefect.db'}"
    if kind == "sqlite":
        return BackendStores(kind, prefect_sqlite, f"sqlite:///{paths['mlflow'] / 'mlflow.db'}")
    dsn = config.database.url or database_url
    if not dsn:
        raise ValueError("the postgres backend needs the stack's PostgreSQL, and none is known")
    stem = f"{urlsplit(dsn).path.lstrip('/') or 'modelops'}_" if config.database.url else ""
    prefect_db = config.stack.prefect_database or f"{stem}prefect"
    mlflow_db = config.stack.mlflow_database or f"{stem}mlflow"
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed: name psycopg2.
    mlflow = database_on_server(dsn, mlflow_db, "postgresql+psycopg2")
    if not prefect_on_postgres:
        return BackendStores(kind, prefect_sqlite, mlflow, (mlflow_db,))
    return BackendStores(
        kind, database_on_server(dsn, prefect_db, "postgresql+asyncpg"), mlflow, (prefect_db, mlflow_db)
    )


def prefect_file(config: ModelOpsConfig) -> Path:
    path = config.stack.prefect_file
    return path if path.is_absolute() else PROJECT_ROOT / path


def deployment_names(path: Path, *, with_triggers: bool = False) -> list[str]:
    """The names of the deployments a ``prefect.yaml`` declares, in file order; ``with_triggers``: only
    those whose ``triggers`` become automations (the retrain one, in this project's file)."""
    spec = yaml.safe_load(path.read_text()) or {}
    return [
        d["name"]
        for d in spec.get("deployments") or []
        if isinstance(d, dict) and d.get("name") and (d.get("triggers") or not with_triggers)
    ]


def prefect_server(config: ModelOpsConfig, stores: BackendStores) -> ProcessSpec:
    paths = home_paths(config)
    host, port = config.stack.host, config.stack.prefect_port
    env = _base_env(config)
    env.update(
        PREFECT_API_DATABASE_CONNECTION_URL=stores.prefect,
        PREFECT_SERVER_API_HOST=host,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=f"http://{host}:{port}/api",
        # Block types are registered once `up` is done (modelops.stack.prefect_server_process), and the
        # memo check would import every collection (the Docker and Kubernetes SDKs) to decide to skip.
        PREFECT_SERVER_REGISTER_BLOCKS_ON_START="false",
        PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION="false",
    )
    env.pop("PREFECT_API_URL", None)
    return ProcessSpec(
        name=PREFECT_SERVER,
        argv=[
            sys.executable,
            "-m",
            "modelops.stack.prefect_server_process",  # `prefect server start`, block types registered later
            "--register-blocks-after",
            str(deploy_report(config)),
            "--at-most",
            f"{config.stack.startup_timeout_s:g}",
            "--host",
            host,
            "--port",
            str(port),
        ],
        env=env,
        log=paths["logs"] / "prefect-server.log",
        url=f"http://{host}:{port}",
        port=port,
        health=lambda: http_ok(f"http://{host}:{port}/api/health"),
    )


def mlflow_server(config: ModelOpsConfig, stores: BackendStores) -> ProcessSpec:
    paths = home_paths(config)
    host, port = config.stack.host, config.stack.mlflow_port
    (paths["mlflow"] / "artifacts").mkdir(parents=True, exist_ok=True)
    env = _base_env(config)
    # The job runner (GenAI jobs) adds ~7 huey processes and ~550 MB RSS; the loop never uses it.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.pop("MLFLOW_TRACKING_URI", None)  # the server is the store: a client setting means nothing here
    env["MLFLOW_BACKEND_STORE_URI"] = stores.mlflow  # not on the command line: it may hold a password
    return ProcessSpec(
        name=MLFLOW,
        argv=[
            sys.executable,
            "-m",
            "modelops.stack.mlflow_process",  # `mlflow server` without its second process
            "--host",
            host,
            "--port",
            str(port),
            "--serve-artifacts",
            "--artifacts-destination",
            str(paths["mlflow"] / "artifacts"),
            "--workers",
            "1",
        ],
        env=env,
        log=paths["logs"] / "mlflow.log",
        url=f"http://{host}:{port}",
        port=port,
        health=lambda: http_ok(f"http://{host}:{port}/health"),
    )


def worker(config: ModelOpsConfig, database_url: str | None, started_after: float = 0.0) -> ProcessSpec:
    """The worker of ``stack.work_pool_type``: a process worker's flow-run processes inherit its environment,
    so the stack's URLs go here; a Docker worker's containers get theirs from the pool's template
    (:mod:`modelops.stack.docker_pool`), and it gets the engine's address.

    Healthy once it heartbeats into the pool after ``started_after`` (epoch seconds). It can start before
    the Prefect server: it waits for its pool (:mod:`modelops.stack.worker_process`).
    """
    paths = home_paths(config)
    env = _base_env(config)
    env.update(stack_client_environment(config, database_url))
    env["PREFECT_WORKER_QUERY_SECONDS"] = f"{config.stack.worker_query_seconds:g}"
    if config.stack.work_pool_type == "docker":
        env.update(docker_engine_environment())
    if config.stack.work_pool_type == "kubernetes":  # the cluster of $KUBECONFIG; Jobs in serving.namespace
        # prefect-kubernetes' observer watches cluster-wide unless told; a namespaced Role refuses that.
        env.setdefault("PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES", config.serving.namespace)
    pool = config.stack.work_pool
    api = config.prefect_api_url
    return ProcessSpec(
        name=WORKER,
        argv=[
            sys.executable,
            "-m",
            "modelops.stack.worker_process",  # `prefect worker start`, once the pool exists
            "--wait-for-pool",
            f"{config.stack.startup_timeout_s:g}",
            "--unless",
            str(deploy_report(config)),
            "--pool",
            pool,
            *(["--wake-on-events"] if config.stack.worker_wakeups else []),
            "--type",
            config.stack.work_pool_type,
            "--name",
            WORKER_NAME,
        ],
        env=env,
        log=paths["logs"] / "worker.log",
        url=f"{config.prefect_ui_url}/work-pools/work-pool/{pool}",
        port=None,
        health=lambda: worker_online(api, pool, WORKER_NAME, started_after),
        cwd=PROJECT_ROOT,
    )


def deploy_report(config: ModelOpsConfig) -> Path:
    """Where the deployment step (:mod:`modelops.stack.apply_deployments`) writes its outcome."""
    return config.stack_home / "deployments.json"


def stack_client_environment(config: ModelOpsConfig, database_url: str | None) -> dict[str, str]:
    """What a process needs to talk to the stack: flow runs, the deploy step, ``modelops`` commands."""
    env = {
        "PREFECT_API_URL": config.prefect_api_url,
        "MLFLOW_TRACKING_URI": config.mlflow_uri,
        "MODELOPS_PROJECT_ROOT": str(PROJECT_ROOT),  # prefect.yaml's set_working_directory reads it
        "MODELOPS_STACK__HOME": str(config.stack_home),
    }
    if database_url:
        env["MODELOPS_DATABASE_URL"] = database_url
    return env


def docker_engine_environment() -> dict[str, str]:
    """``DOCKER_HOST`` for the Docker worker and prefect-docker's build/push steps (they use
    ``docker.from_env()``): the engine :func:`modelops.integrations.docker_engine.docker_host` finds."""
    host = docker_host()
    return {"DOCKER_HOST": host} if host else {}


def _base_env(config: ModelOpsConfig) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(home_paths(config)["prefect_home"])  # never ~/.prefect
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def worker_online(
    api_url: str, pool: str, name: str, started_after: float = 0.0, timeout_s: float = 2.0
) -> bool:
    """True when the Prefect server lists our worker ONLINE with a heartbeat after ``started_after``."""
    request = urllib.request.Request(
        f"{api_url}/work_pools/{pool}/workers/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            workers = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return False
    for record in workers:
        if record.get("name") != name or record.get("status") != "ONLINE":
            continue
        beat = record.get("last_heartbeat_time")
        if beat and datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp() >= started_after - 1:
            return True
    return False


SUPERVISOR = "supervisor"
SUPERVISOR_HEARTBEAT = "supervisor.heartbeat"  # under the home; touched every poll
# `up` starts the components in this order, `down` stops them in reverse
ORDER = (POSTGRES, PREFECT_SERVER, MLFLOW, WORKER, SUPERVISOR)
# `down`'s steps: ORDER reversed, except that the two servers (each needs only PostgreSQL, neither the
# other) stop side by side: each takes 1-2 s to shut down.
STOP_STEPS = ((SUPERVISOR,), (WORKER,), (MLFLOW, PREFECT_SERVER), (POSTGRES,))


def supervisor(
    config: ModelOpsConfig, started_after: float = 0.0, within_s: float | None = None
) -> ProcessSpec:
    """The supervisor (:mod:`modelops.stack.supervisor`): restarts a dead worker or model server.

    Healthy once it has polled after ``started_after`` (its heartbeat file is newer), and with
    ``within_s`` that recently (a hung supervisor stops touching it).
    """
    paths = home_paths(config)
    heartbeat = paths["home"] / SUPERVISOR_HEARTBEAT
    return ProcessSpec(
        name=SUPERVISOR,
        argv=[sys.executable, "-m", "modelops.stack.supervisor"],
        env=_base_env(config),
        log=paths["logs"] / "supervisor.log",
        url=str(paths["logs"] / "supervisor.log"),
        port=None,
        health=lambda: heartbeat_after(heartbeat, started_after, within_s),
        cwd=PROJECT_ROOT,
    )


def heartbeat_after(path: Path, after: float, within_s: float | None = None) -> bool:
    """``path`` was touched after ``after`` (and, with ``within_s``, that recently)."""
    try:
        touched = path.stat().st_mtime
    except OSError:
        return False
    return touched >= after - 1 and (within_s is None or time.time() - touched <= within_s)
