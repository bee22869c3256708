"""``status`` for the embedded stack: each component's URL, PID, health, RSS and restarts.

One row per recorded component (in start order), then one per model the ``local`` target serves;
the Prefect server's row also counts the flow runs with no process behind them
(:func:`modelops.stack.reconcile.count_orphans`). Prefect is imported for that count only when a run
could be orphaned (:mod:`modelops.stack.run_counts` asks first); MLflow and pandas never are.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from modelops.config import ModelOpsConfig
from modelops.serving.rest_client import model_status
from modelops.stack import components as comp
from modelops.stack.postgres import PostgresError, check_reachable
from modelops.stack.processes import find_process, tree_rss_bytes
from modelops.stack.run_counts import runs_that_could_be_orphaned
from modelops.stack.state import ComponentRecord, StackState, load_state
from modelops.stack.supervisor import read_heartbeat, restart_counts
from modelops.targets.local import LocalTarget


@dataclass
class ComponentStatus:
    name: str
    url: str
    pid: int | None
    running: bool
    healthy: bool
    rss_bytes: int
    detail: str = ""
    restarts: int = 0  # by the supervisor, since `modelops up`
    # On the prefect-server row: flow runs Running/Paused/Pending/Cancelling with no process behind
    # them (modelops.stack.reconcile); None when not counted (server down or not answering).
    orphaned_runs: int | None = None


def status(config: ModelOpsConfig) -> list[ComponentStatus]:
    """One entry per recorded component; empty when the stack is not up."""
    state = load_state(config.stack_home)
    if state is None:
        return []
    result = []
    for name in comp.ORDER:
        record = state.components.get(name)
        if record is None:
            continue
        result.append(_component_status(config, state, record))
    counts = restart_counts(config.stack_home)
    result += serving_status(config)
    for row in result:
        row.restarts = counts.get(row.name, 0)
        if row.name == comp.PREFECT_SERVER and row.healthy:
            row.orphaned_runs = _orphaned_runs(config)
    return result


def _orphaned_runs(config: ModelOpsConfig) -> int | None:
    if runs_that_could_be_orphaned(config) == 0:
        return 0
    from modelops.stack import reconcile  # Prefect's client: only when a rule could apply

    return reconcile.count_orphans(config)


def serving_status(config: ModelOpsConfig) -> list[ComponentStatus]:
    """The local target's model servers: alive, and answering AVAILABLE for their version."""
    target = LocalTarget(config)
    return [_serving_row(config, target, model_name) for model_name in target.models()]


def _serving_row(config: ModelOpsConfig, target: LocalTarget, model_name: str) -> ComponentStatus:
    name = f"serving:{model_name}"
    rollout = target.current(model_name)
    if rollout is None:
        record = target.record(model_name)
        url = record.url if record else target.url_for(model_name)
        why = "stopped by `modelops down`" if record and record.stopped else "the serving process is gone"
        return ComponentStatus(
            name, url, None, False, False, 0,
            f"{why}: the supervisor restarts it, `modelops up` serves it again from its served copy "
            "(or redeploy the champion: modelops lifecycle)",
        )  # fmt: skip
    pid = rollout.details["pid"]
    try:
        rss = tree_rss_bytes(psutil.Process(pid))
    except psutil.Error:
        rss = 0
    try:
        states = {s["version"]: s["state"] for s in model_status(rollout.url, model_name, timeout=3)}
        healthy, detail = states.get(rollout.version) == "AVAILABLE", f"version {rollout.version}"
    except Exception as exc:  # noqa: BLE001 - any failure to answer is "unhealthy", with the reason
        healthy, detail = False, f"version {rollout.version} does not answer: {type(exc).__name__}"
    return ComponentStatus(name, rollout.url, pid, True, healthy, rss, detail)


def _component_status(config: ModelOpsConfig, state: StackState, record: ComponentRecord) -> ComponentStatus:
    if record.external:
        return _external_database_status(config, record)
    process = find_process(record.pid, record.start_ticks)
    if process is None:
        return ComponentStatus(
            record.name, record.url, record.pid, False, False, 0, detail=f"not running; log {record.log}"
        )
    if record.name == comp.POSTGRES:
        reason = check_reachable(record.url)
        healthy, detail = reason is None, reason or ""
    elif record.name == comp.SUPERVISOR:
        return _supervisor_status(config, record, process)
    else:
        healthy = _spec_of(config, state, record.name).health()
        detail = "" if healthy else "process runs but its health check fails"
    return ComponentStatus(
        record.name, record.url, record.pid, True, healthy, tree_rss_bytes(process), detail
    )


def _supervisor_status(
    config: ModelOpsConfig, record: ComponentRecord, process: psutil.Process
) -> ComponentStatus:
    """Its own RSS and its warm standby's: what it restarted is its child too, but has its own row."""
    healthy = comp.supervisor(config, within_s=10.0).health()
    beat = read_heartbeat(config.stack_home)
    standby = find_process(beat.get("standby_pid"), None)
    try:
        rss = process.memory_info().rss + (standby.memory_info().rss if standby is not None else 0)
    except psutil.Error:
        rss = 0
    if not healthy:
        detail = "runs but its heartbeat is older than 10 s"
    elif standby is None:
        detail = "no warm standby (no model served)"
    else:
        detail = f"warm standby {'ready' if beat.get('standby_ready') else 'starting'} (pid {standby.pid})"
    return ComponentStatus(record.name, record.url, record.pid, True, healthy, rss, detail)


def _external_database_status(config: ModelOpsConfig, record: ComponentRecord) -> ComponentStatus:
    dsn = config.database.url
    reason = check_reachable(dsn) if dsn else "no database.url / MODELOPS_DATABASE_URL in this environment"
    detail = "external" if reason is None else reason
    return ComponentStatus(record.name, record.url, None, reason is None, reason is None, 0, detail=detail)


def _spec_of(config: ModelOpsConfig, state: StackState, name: str) -> comp.ProcessSpec:
    if name == comp.SUPERVISOR:
        return comp.supervisor(config, within_s=10.0)
    if name in (comp.PREFECT_SERVER, comp.MLFLOW):
        try:
            stores = comp.backend_stores(config, state.database_url, state.backend or "sqlite")
        except (ValueError, PostgresError):  # the DSN is gone from this environment: health needs none
            stores = comp.backend_stores(config, None, "sqlite")
        spec = comp.prefect_server if name == comp.PREFECT_SERVER else comp.mlflow_server
        return spec(config, stores)
    return comp.worker(config, state.database_url, started_after=0.0)
