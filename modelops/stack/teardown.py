"""``down`` for the embedded stack, and what ``up`` shares with it (the embedded PostgreSQL, stopping
a component).

``down`` removes ``prefect.toml`` first (clients then fail clearly, not on a dying server), stops the
supervisor (it would restart what ``down`` stops), the local model servers (their records stay, so
``up`` serves them again), then every recorded process in reverse start order (the MLflow and Prefect
servers side by side, :data:`~modelops.stack.components.STOP_STEPS`), the worker's engine standbys
with the worker, and on the Docker pool the flow-run containers; then it removes the state file.
Data directories are kept.

This module imports no Prefect, MLflow or pandas, so ``modelops down`` stays quick;
:mod:`modelops.stack.manager` (``up``) builds on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from modelops.config import ModelOpsConfig
from modelops.stack import components as comp
from modelops.stack import engine_standby, flow_run_containers, prefect_toml
from modelops.stack.postgres import POSTGRES_BIN_PATH, EmbeddedPostgres, Placement, PostgresError, place
from modelops.stack.processes import find_process, stop_tree
from modelops.stack.state import ComponentRecord, StackState, home_lock, load_state, remove_state, save_state
from modelops.stack.supervisor import clear_restarts
from modelops.targets.local import LocalTarget

Echo = Callable[[str], None]


def print_line(message: str) -> None:
    print(message, flush=True)


def embedded_postgres(config: ModelOpsConfig, state: StackState | None) -> EmbeddedPostgres:
    """The server recorded in ``state``; without one (``up``), where it goes now (``place``)."""
    home = config.stack_home
    if state is None:
        placement = place(home, config.stack.postgres_bin)
    else:
        placement = Placement(
            Path(state.postgres_bin) if state.postgres_bin else POSTGRES_BIN_PATH,
            Path(state.postgres_data) if state.postgres_data else home / "postgres" / "data",
            Path(state.postgres_log) if state.postgres_log else home / "logs" / "postgres.log",
        )
    return EmbeddedPostgres(placement, config.stack.host, config.stack.postgres_port)


def down(config: ModelOpsConfig, echo: Echo = print_line) -> list[str]:
    """Stop every recorded process (worker first) and remove the state file; returns stopped names."""
    home = config.stack_home
    with home_lock(home):
        removed = prefect_toml.remove(config)  # first: clients now fail clearly, not on a dying server
        if removed is not None:
            echo(f"prefect.toml: removed {removed}")
        _stop_supervisor(config, echo)  # first: it would restart what `down` stops
        served = _stop_local_serving(config, echo)
        state = load_state(home)
        if state is None:
            echo(f"nothing to stop: no stack state in {home}")
            return served
        stopped = served
        for step in comp.STOP_STEPS:
            records = [state.components[name] for name in step if name in state.components]
            results = _stop_side_by_side(config, state, records, echo)
            for record, was_running in zip(records, results, strict=True):
                if was_running:
                    stopped.append(record.name)
                del state.components[record.name]
            save_state(state)
            worker = next((record for record in records if record.name == comp.WORKER), None)
            if worker is not None and worker.pid is not None:  # no launcher starts a standby now
                for pid in engine_standby.stop_standbys(worker.pid):
                    echo(f"engine standby: stopped pid {pid}")
        if flow_run_containers.is_docker_pool(config):  # after the worker: it starts no new one now
            for name in flow_run_containers.stop_flow_run_containers(config.stack.work_pool):
                echo(f"flow-run container {name}: stopped (its run is reopened or ended by `up`)")
                stopped.append(f"container:{name}")
        remove_state(home)
        clear_restarts(home)
        return stopped


def _stop_side_by_side(
    config: ModelOpsConfig, state: StackState, records: list[ComponentRecord], echo: Echo
) -> list[bool]:
    """Stop ``records`` at the same time; their lines are printed in ``records``' order once all stopped."""
    if len(records) < 2:
        return [stop_component(config, state, record, echo) for record in records]
    lines: list[list[str]] = [[] for _ in records]
    with ThreadPoolExecutor(max_workers=len(records)) as pool:
        futures = [
            pool.submit(stop_component, config, state, record, out.append)
            for record, out in zip(records, lines, strict=True)
        ]
    for out in lines:
        for line in out:
            echo(line)
    return [future.result() for future in futures]


def _stop_supervisor(config: ModelOpsConfig, echo: Echo) -> None:
    state = load_state(config.stack_home)
    record = state.components.pop(comp.SUPERVISOR, None) if state else None
    if state is None or record is None:
        return
    stop_component(config, state, record, echo)
    save_state(state)


def _stop_local_serving(config: ModelOpsConfig, echo: Echo) -> list[str]:
    """Model servers the ``local`` target started; their records stay, so ``up`` serves them again."""
    target = LocalTarget(config)
    stopped = []
    for model_name in target.models():
        rollout = target.current(model_name)
        target.suspend(model_name)
        if rollout is not None:
            echo(f"serving: stopped {model_name} version {rollout.version} ({rollout.url})")
            stopped.append(f"serving:{model_name}")
    return stopped


def stop_component(config: ModelOpsConfig, state: StackState, record: ComponentRecord, echo: Echo) -> bool:
    if record.external:
        echo(f"{record.name}: external ({record.url}), left running")
        return False
    process = find_process(record.pid, record.start_ticks)
    if process is None:
        echo(f"{record.name}: pid {record.pid} already gone")
        return False
    t0 = time.monotonic()
    if record.name == comp.POSTGRES:
        try:
            embedded_postgres(config, state).stop()
        except PostgresError as exc:
            echo(f"{record.name}: pg_ctl stop failed ({exc}); stopping pid {record.pid} directly")
    if record.name == comp.SUPERVISOR:
        _stop_alone(process, grace_s=30.0)  # not its tree: what it restarted is stopped as itself
    else:
        stop_tree(process, grace_s=3.0 if record.name == comp.WORKER else 10.0)
    echo(f"{record.name}: stopped pid {record.pid} in {time.monotonic() - t0:.1f} s")
    return True


def _stop_alone(process: psutil.Process, grace_s: float) -> None:
    """SIGTERM (it finishes a restart under way), SIGKILL after ``grace_s``."""
    try:
        process.terminate()
        process.wait(grace_s)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(5)
    except psutil.NoSuchProcess:
        pass
