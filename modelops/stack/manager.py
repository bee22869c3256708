"""``up`` for the embedded stack (``status`` and ``down``, re-exported: :mod:`modelops.stack.status`,
:mod:`modelops.stack.teardown`).

``up`` checks every port it needs first (nothing is started when one is taken), starts PostgreSQL
(unless a DSN is configured) and creates the Prefect server's and MLflow's databases on it, then starts
those two side by side (with ``stack.backend: sqlite``, all three at once) while the scoring-log schema
is migrated and the deployment step imports the flows, waits for their health endpoints, then starts the
worker while ``prefect.yaml`` is applied, and writes the ``prefect.toml`` that points Python and the
``prefect`` CLI at the stack (:mod:`modelops.stack.prefect_toml`; ``down`` removes it first). A
component that dies or never gets healthy fails ``up`` with its name and log tail, and everything this
call started is stopped again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modelops.config import ModelOpsConfig
from modelops.integrations.postgres import apply_migrations, redact
from modelops.stack import components as comp
from modelops.stack import docker_pool, prefect_toml, reconcile
from modelops.stack.postgres import (
    EmbeddedPostgres,
    PostgresError,
    check_reachable,
    ensure_database,
    has_extension,
)
from modelops.stack.process_identity import start_ticks
from modelops.stack.processes import (
    find_process,
    log_tail,
    port_in_use,
    port_owner,
    spawn,
)
from modelops.stack.serving_restore import restore_serving
from modelops.stack.state import ComponentRecord, StackState, home_lock, load_state, remove_state, save_state
from modelops.stack.status import ComponentStatus, serving_status, status
from modelops.stack.teardown import Echo, down, embedded_postgres, print_line, stop_component


class StackError(RuntimeError):
    """The stack could not be started or reached; the message names the component and the fix."""


# ---------------------------------------------------------------- up


def up(config: ModelOpsConfig, echo: Echo = print_line) -> StackState:
    home = config.stack_home
    with home_lock(home):
        state = load_state(home) or StackState(home=str(home))
        state.home = str(home)
        _forget_dead(state, config, echo)
        started: list[str] = []
        launched: list[_Deployments] = []  # the deployment step, started while the servers start
        deploy: _Deployments | None = None
        try:
            pending, t_servers = _start_all(config, state, started, echo, launched)
            deploy = launched[0]
            _wait_healthy(pending, state, config, t_servers, echo)
            restore_serving(config, echo)  # needs MLflow when a served copy is gone
        except BaseException:
            _roll_back(config, state, started, launched[0] if launched else None, echo)
            raise
        save_state(state)
        _write_prefect_toml(config, echo)
    _finish_deployments(deploy, config, echo)
    _reconcile_runs(config, echo)
    return state


def _reconcile_runs(config: ModelOpsConfig, echo: Echo) -> None:
    """End the runs a dead worker or a `down` left behind; reopen their pending approvals."""
    try:
        report = reconcile.after_worker_restart(config, echo)
    except Exception as exc:  # noqa: BLE001 - the stack is up; `modelops status` shows what is left
        echo(f"reconcile: failed ({type(exc).__name__}: {exc}); `modelops status` counts the orphaned runs")
        return
    ended, reopened = len(report.orphans), len(report.reopened)
    echo(f"reconcile: {ended} orphaned run(s) ended, {reopened} approval(s) reopened")


def _write_prefect_toml(config: ModelOpsConfig, echo: Echo) -> None:
    path, written = prefect_toml.write(config)
    if written:
        echo(f"prefect.toml: {path} points Python and the prefect CLI run from {path.parent} at this stack")
    else:
        echo(
            f"prefect.toml: {path} was not written by modelops and is left as it is; add "
            f'[api] url = "{config.prefect_api_url}" to it, or set PREFECT_API_URL'
        )


def _roll_back(
    config: ModelOpsConfig, state: StackState, started: list[str], deploy: _Deployments | None, echo: Echo
) -> None:
    """Stop what this ``up`` started; keep the state file only for processes still running."""
    if deploy is not None:
        deploy.process.kill()
    if started:
        echo(f"stopping what this call started: {', '.join(started)}")
        for name in reversed(comp.ORDER):
            if name in started:
                stop_component(config, state, state.components.pop(name), echo=lambda _m: None)
    if any(not record.external for record in state.components.values()):
        save_state(state)
    else:
        remove_state(config.stack_home)


def _apply_schema(config: ModelOpsConfig, state: StackState, echo: Echo) -> None:
    """The scoring-log tables exist before any flow, sidecar or approval needs them."""
    dsn = config.database.url or state.database_url
    if not dsn:
        return
    applied = apply_migrations(dsn, config.database.schema_name)
    echo(
        f"{comp.POSTGRES}: schema '{config.database.schema_name}' "
        + (f"migrated ({', '.join(applied)})" if applied else "up to date")
    )


def _forget_dead(state: StackState, config: ModelOpsConfig, echo: Echo) -> None:
    for name, record in list(state.components.items()):
        if record.external:
            continue
        if name == comp.POSTGRES:
            alive = embedded_postgres(config, state).running_pid() == record.pid
        else:
            alive = find_process(record.pid, record.start_ticks) is not None
        if not alive:
            echo(f"{name}: recorded pid {record.pid} is gone; starting it again")
            del state.components[name]


def _start_all(
    config: ModelOpsConfig, state: StackState, started: list[str], echo: Echo, launched: list[_Deployments]
) -> tuple[dict[str, comp.ProcessSpec], float]:
    """Start what is missing and wait for the servers; returns the worker and the supervisor (those
    started) to wait for, and when the servers were healthy.

    The deployment step starts (into ``launched``) as soon as PostgreSQL runs: it imports the flows
    while the servers start, then waits for the Prefect server's health itself. The worker and the
    supervisor start then too, so their imports overlap the servers' start: the worker waits for the
    pool the deployment step makes, the supervisor for ``up`` to release the stack lock."""
    pg = _postgres_to_start(config, state, echo)
    _choose_backend(config, state, echo)
    on_postgres = state.backend == "postgres"
    sqlite = comp.backend_stores(config, None, "sqlite")
    known = [comp.prefect_server(config, sqlite), comp.mlflow_server(config, sqlite)]  # ports, health
    to_start = [spec.name for spec in known if spec.name not in state.components]
    pending = _already_running(known, state, echo)
    _check_ports(config, [spec for spec in known if spec.name in to_start], pg)  # a taken port starts nothing
    _check_configured_database(config, state, echo)
    t0 = time.monotonic()
    if pg is not None and on_postgres:  # the servers' stores live on it: it must answer first
        _start_postgres(pg, config, state, started, echo)
        echo(f"{comp.POSTGRES}: healthy in {time.monotonic() - t0:.1f} s")
    stores = _backend_stores(config, state, echo) if on_postgres and to_start else sqlite
    for spec in [comp.prefect_server(config, stores), comp.mlflow_server(config, stores)]:
        if spec.name not in to_start:
            continue
        store = stores.prefect if spec.name == comp.PREFECT_SERVER else stores.mlflow
        echo(f"{spec.name}: starting on {spec.url}, state in {_store_name(store)} (log {spec.log})")
        _launch(spec, state, started)
        pending[spec.name] = spec
    save_state(state)
    if pg is not None and not on_postgres:
        _start_postgres(pg, config, state, started, echo)
        echo(f"{comp.POSTGRES}: healthy in {time.monotonic() - t0:.1f} s")
    launched.append(_launch_deployments(config, state, echo))  # needs no worker: overlap them all
    then = _start_worker(config, state, started, echo) | _start_supervisor(config, state, started, echo)
    _apply_schema(config, state, echo)  # while the servers start
    _wait_healthy(pending, state, config, t0, echo)
    return then, time.monotonic()


def _choose_backend(config: ModelOpsConfig, state: StackState, echo: Echo) -> None:
    """``stack.backend``, unless the Prefect server or MLflow still run on the other store."""
    requested = config.stack.backend
    running = [name for name in (comp.PREFECT_SERVER, comp.MLFLOW) if name in state.components]
    current = state.backend or "sqlite"  # a state file older than the field: SQLite was the only store
    if running and current != requested:
        echo(
            f"stack: {' and '.join(running)} run on {current}, so the stack stays on {current}; "
            f"`modelops down` first to move it to {requested}"
        )
        state.backend = current
        return
    state.backend = requested


def _backend_stores(config: ModelOpsConfig, state: StackState, echo: Echo) -> comp.BackendStores:
    """The Prefect and MLflow databases on the stack's PostgreSQL, created if missing.

    The Prefect server's schema needs the pg_trgm extension; on a server without it (pgserver's
    build) the Prefect server keeps SQLite, and ``up`` says how to move it.
    """
    dsn = config.database.url or state.database_url
    assert dsn, "the postgres backend is chosen only with a PostgreSQL"
    try:
        trigrams = has_extension(dsn, "pg_trgm")
        stores = comp.backend_stores(config, dsn, "postgres", prefect_on_postgres=trigrams)
        created = [name for name in stores.databases if ensure_database(dsn, name)]
    except PostgresError as exc:
        raise StackError(
            f"{comp.POSTGRES}: {exc} (server of {redact(dsn)}); create the database, or keep the Prefect "
            "server and MLflow on SQLite (modelops up --sqlite, or stack.backend: sqlite)"
        ) from None
    what = f"created {', '.join(created)}" if created else "present"
    echo(f"{comp.POSTGRES}: database(s) {', '.join(stores.databases)} for the stack's servers ({what})")
    if not trigrams:
        echo(
            f"{comp.POSTGRES}: this server has no pg_trgm extension, which the Prefect server's schema "
            "needs: the Prefect server keeps SQLite. To move it, use a PostgreSQL with contrib: "
            "stack.postgres_bin (e.g. /usr/lib/postgresql/15/bin) for a new stack home, or database.url"
        )
    return stores


def _store_name(url: str) -> str:
    if url.startswith("sqlite"):
        return f"SQLite {url.split(':///', 1)[1]}"
    return f"PostgreSQL database {url.rsplit('/', 1)[1].split('?', 1)[0]}"


def _already_running(
    specs: list[comp.ProcessSpec], state: StackState, echo: Echo
) -> dict[str, comp.ProcessSpec]:
    """Say which servers already run; returns those not healthy yet, to wait for."""
    pending = {}
    for spec in specs:
        record = state.components.get(spec.name)
        if record is None:
            continue
        healthy = spec.health()
        echo(
            f"{spec.name}: already running (pid {record.pid}) at {record.url}"
            + ("" if healthy else "; waiting for it to get healthy")
        )
        if not healthy:
            pending[spec.name] = spec
    return pending


def _postgres_to_start(config: ModelOpsConfig, state: StackState, echo: Echo) -> EmbeddedPostgres | None:
    """The embedded PostgreSQL when it has to be started: no DSN configured and none running."""
    if config.database.url:
        return None
    record = state.components.get(comp.POSTGRES)
    if record is not None:
        echo(f"{comp.POSTGRES}: already running (pid {record.pid}) at {record.url}")
        return None
    pg = embedded_postgres(config, None)
    if pg.placement.note:
        echo(f"{comp.POSTGRES}: {pg.placement.note}")
    if pg.running_pid() is not None:
        _adopt_postgres(pg, state, echo)  # left over by an interrupted `up`: same data dir, ours
        return None
    return pg


def _check_ports(
    config: ModelOpsConfig, to_start: list[comp.ProcessSpec], pg: EmbeddedPostgres | None
) -> None:
    host = config.stack.host
    ports = [
        (spec.name, spec.port, f"MODELOPS_STACK__{spec.name.split('-')[0].upper()}_PORT") for spec in to_start
    ]
    if pg is not None:
        ports.append((comp.POSTGRES, pg.port, "MODELOPS_STACK__POSTGRES_PORT"))
    for name, port, variable in ports:
        if port is not None and port_in_use(host, port):
            raise StackError(
                f"{name}: port {port} on {host} is already in use by {port_owner(port)}; stop that process "
                f"or choose another port ({variable}=<port> or stack.{variable.split('__')[1].lower()} "
                "in the config)"
            )


def _check_configured_database(config: ModelOpsConfig, state: StackState, echo: Echo) -> None:
    """A configured DSN must answer; an embedded server started before the DSN was set is named."""
    dsn = config.database.url
    if not dsn:
        return
    embedded = state.components.get(comp.POSTGRES)
    if embedded is not None and not embedded.external:
        echo(
            f"{comp.POSTGRES}: the embedded server (pid {embedded.pid}) still runs although a DSN is "
            "configured now; `modelops down` stops it"
        )
        return
    reason = check_reachable(dsn)
    if reason is not None:
        raise StackError(
            f"{comp.POSTGRES}: the configured database {redact(dsn)} is not reachable ({reason}); start it, "
            "fix database.url / MODELOPS_DATABASE_URL, or unset both to use the embedded PostgreSQL"
        )
    state.components[comp.POSTGRES] = ComponentRecord(name=comp.POSTGRES, url=redact(dsn))
    state.database_url = None  # a configured DSN stays in the config/env, never in the state file
    echo(f"{comp.POSTGRES}: using the configured database {redact(dsn)} (reachable)")


def _start_postgres(
    pg: EmbeddedPostgres, config: ModelOpsConfig, state: StackState, started: list[str], echo: Echo
) -> None:
    echo(f"{comp.POSTGRES}: starting embedded PostgreSQL on {config.stack.host}:{pg.port} (log {pg.log})")
    try:
        pid = pg.start(timeout_s=config.stack.startup_timeout_s)
    except PostgresError as exc:
        raise StackError(
            f"{comp.POSTGRES}: {exc} (data {pg.pgdata}); last lines of {pg.log}:\n{log_tail(pg.log)}"
        ) from None
    state.components[comp.POSTGRES] = _record(comp.POSTGRES, pg.dsn, pid, str(pg.log), pg.port)
    state.database_url = pg.dsn
    _record_placement(pg, state)
    started.append(comp.POSTGRES)
    save_state(state)


def _start_worker(
    config: ModelOpsConfig, state: StackState, started: list[str], echo: Echo
) -> dict[str, comp.ProcessSpec]:
    """Start the worker unless it runs; returns it (if started) to wait for."""
    pool = config.stack.work_pool
    if comp.WORKER in state.components:
        echo(f"{comp.WORKER}: already running (pid {state.components[comp.WORKER].pid}) polling pool {pool}")
        return {}
    worker = comp.worker(config, state.database_url, started_after=time.time())
    echo(f"{comp.WORKER}: starting for work pool '{pool}' (log {worker.log})")
    _launch(worker, state, started)
    save_state(state)
    return {worker.name: worker}


def _start_supervisor(
    config: ModelOpsConfig, state: StackState, started: list[str], echo: Echo
) -> dict[str, comp.ProcessSpec]:
    """Start the supervisor unless it runs; returns it (if started) to wait for. It never races ``up``
    restoring what ran: it leaves the worker and the model servers alone while ``up`` holds the stack
    lock, and from then on restarts what dies."""
    record = state.components.get(comp.SUPERVISOR)
    if record is not None:
        echo(f"{comp.SUPERVISOR}: already running (pid {record.pid})")
        return {}
    spec = comp.supervisor(config, started_after=time.time())
    echo(f"{comp.SUPERVISOR}: starting: restarts a dead worker or model server (log {spec.log})")
    _launch(spec, state, started)
    save_state(state)
    return {spec.name: spec}


def _launch(spec: comp.ProcessSpec, state: StackState, started: list[str]) -> None:
    process = spawn(spec.argv, env=spec.env, log=spec.log, cwd=spec.cwd)
    state.components[spec.name] = ComponentRecord(
        name=spec.name,
        url=spec.url,
        pid=process.pid,
        start_ticks=start_ticks(process.pid),
        log=str(spec.log),
        port=spec.port,
    )
    started.append(spec.name)


def _record(name: str, url: str, pid: int, log: str, port: int | None) -> ComponentRecord:
    return ComponentRecord(name=name, url=url, pid=pid, start_ticks=start_ticks(pid), log=log, port=port)


def _adopt_postgres(pg: EmbeddedPostgres, state: StackState, echo: Echo) -> None:
    pid = pg.running_pid()
    assert pid is not None
    state.components[comp.POSTGRES] = _record(comp.POSTGRES, pg.dsn, pid, str(pg.log), pg.port)
    state.database_url = pg.dsn
    _record_placement(pg, state)
    echo(f"{comp.POSTGRES}: already running (pid {pid}) at {pg.dsn}")


def _record_placement(pg: EmbeddedPostgres, state: StackState) -> None:
    state.postgres_bin, state.postgres_data, state.postgres_log = map(str, (pg.bin_dir, pg.pgdata, pg.log))


def _wait_healthy(
    pending: dict[str, comp.ProcessSpec], state: StackState, config: ModelOpsConfig, t0: float, echo: Echo
) -> None:
    deadline = t0 + config.stack.startup_timeout_s
    while pending:
        for name, spec in list(pending.items()):
            record = state.components[name]
            if find_process(record.pid, record.start_ticks) is None:
                raise StackError(
                    f"{name}: the process (pid {record.pid}) exited during startup; last lines of "
                    f"{spec.log}:\n{log_tail(spec.log)}"
                )
            if spec.health():
                echo(f"{name}: healthy in {time.monotonic() - t0:.1f} s")
                del pending[name]
        if pending and time.monotonic() > deadline:
            names = ", ".join(pending)
            logs = "\n".join(f"  {s.log}:\n{log_tail(s.log)}" for s in pending.values())
            raise StackError(
                f"{names}: not healthy after {config.stack.startup_timeout_s:.0f} s "
                f"(raise stack.startup_timeout_s if the machine is busy); last log lines:\n{logs}"
            )
        if pending:
            time.sleep(0.1)


@dataclass
class _Deployments:
    process: subprocess.Popen[bytes]
    prefect_file: Path
    log: Path
    report: Path
    started: float


def _launch_deployments(config: ModelOpsConfig, state: StackState, echo: Echo) -> _Deployments:
    """``python -m modelops.stack.apply_deployments`` in the background, with the worker's environment;
    it waits for the Prefect server's health (up to ``stack.startup_timeout_s``) before applying."""
    prefect_file = comp.prefect_file(config)
    if not prefect_file.exists():
        raise StackError(f"deployments: {prefect_file} does not exist (stack.prefect_file in the config)")
    env = comp.worker(config, state.database_url).env
    # prefect.yaml reads the KS-check schedule from the environment config through this variable.
    env = {**env, "MODELOPS_KS_CHECK_CRON": config.monitoring.schedule_cron}
    extra: list[str] = []
    pool_type = config.stack.work_pool_type
    if pool_type in ("docker", "kubernetes"):  # prefect.docker.yaml's build/push steps read these
        env.update(docker_pool.deploy_environment(config))
        if pool_type == "kubernetes":  # the image is built here and pushed to the cluster's registry
            env.update(comp.docker_engine_environment())
        extra = ["--pool-type", pool_type, "--build-timeout", f"{config.stack.image_build_timeout_s:g}"]
        echo(f"deployments: the flow image {env['MODELOPS_FLOW_IMAGE']}:{env['MODELOPS_FLOW_IMAGE_TAG']} is "
             "built and pushed first (a cold build installs the dependencies: minutes)")  # fmt: skip
    log = config.stack_home / "logs" / "deploy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    report = comp.deploy_report(config)
    report.unlink(missing_ok=True)
    echo(f"deployments: applying {prefect_file} to work pool '{config.stack.work_pool}' (log {log})")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelops.stack.apply_deployments",
             "--pool", config.stack.work_pool, "--prefect-file", str(prefect_file),
             "--report", str(report), "--timeout", f"{config.stack.startup_timeout_s:g}",
             "--wait-for-server", f"{config.stack.startup_timeout_s:g}", *extra],
            env=env, cwd=prefect_file.parent, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return _Deployments(process, prefect_file, log, report, time.monotonic())


def _finish_deployments(deploy: _Deployments | None, config: ModelOpsConfig, echo: Echo) -> None:
    """Wait for the deployment step: every deployment applied, then (when the file declares triggers) the
    server seen acting on an event for the automations they became (:mod:`modelops.stack.automations_ready`),
    so that an event sent once ``up`` returns finds the retrain trigger loaded."""
    if deploy is None:
        return
    # + one startup timeout: the step may wait that long for the Prefect server before applying;
    # + one more for the automations' probe
    limit = config.stack.startup_timeout_s * (len(comp.deployment_names(deploy.prefect_file)) + 2) + 60
    if config.stack.work_pool_type in ("docker", "kubernetes"):
        limit += config.stack.image_build_timeout_s
    try:
        returncode = deploy.process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        deploy.process.kill()
        raise StackError(
            f"deployments: applying {deploy.prefect_file} took longer than {limit:.0f} s; see {deploy.log}"
        ) from None
    applied, failed = _read_report(deploy)
    triggers_failure = failed.pop(comp.AUTOMATIONS_CHECK, None)
    if failed or (returncode != 0 and triggers_failure is None):
        details = "\n".join(f"  {name}: {reason}" for name, reason in failed.items()) or log_tail(deploy.log)
        raise StackError(
            f"deployments: {len(failed) or 'some'} deployment(s) in {deploy.prefect_file} failed to apply "
            f"(the stack itself is running; fix the file and run `modelops up` again):\n{details}"
        )
    if triggers_failure is not None:
        raise StackError(
            f"automations: {triggers_failure} (the stack itself is running and its deployments are applied; "
            f"`modelops up` again retries this check)"
        )
    echo(f"deployments: applied {', '.join(applied) or 'none'} in {time.monotonic() - deploy.started:.1f} s")


def _read_report(deploy: _Deployments) -> tuple[list[str], dict[str, str]]:
    """(applied names, failed name -> reason); both empty when the step died before reporting."""
    try:
        report = json.loads(deploy.report.read_text())
    except (OSError, ValueError):
        return [], {}
    return list(report.get("applied", [])), dict(report.get("failed", {}))


__all__ = ["ComponentStatus", "StackError", "down", "serving_status", "status", "up"]
