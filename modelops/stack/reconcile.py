"""Flow runs the stack left behind: Running, Paused, Pending or Cancelling with no process to finish them.

Why they exist. The process worker starts each deployment run as ``python -m prefect.engine`` in
its own session and records the PID as the run's ``infrastructure_pid``; subflows (deployment-stage,
approve-champion) run inside that process. Measured on this stack with a lifecycle paused for
approval:

* ``kill -9`` of the worker: the flow-run process survives, reparented to init, still paused. But
  its stdout is a pipe to the dead worker: the first line it logs after an answer ("Resuming flow
  run execution!") raises ``SystemExit`` (broken pipe) and the runs end Crashed. The answer was
  accepted ("approved") and nothing was deployed.
* ``modelops down``: the worker's tree is stopped; the engine marks the lifecycle and
  deployment-stage runs Crashed on SIGTERM, but the paused approval stays Paused. ``modelops
  approve`` then resumes it into Running, with no process behind it, for ever.

The rule (:func:`orphan_reason`). A run is judged only when it belongs to the stack's work pool (its
own or its root's), which only the stack's process worker, on this host, executes:

1. a run with an ``infrastructure_pid`` owns a process: it is orphaned when that PID is gone (or
   reused by a process that is not this run's: the engine's ``PREFECT__FLOW_RUN_ID`` differs), or
   when the process is alive but no longer descends from the current worker (the worker died and
   the output pipe is broken, see above);
2. a subflow without a PID of its own shares its parent's process (found through
   ``parent_task_run_id``): orphaned when the parent has ended or is itself orphaned;
3. a deployment run with no PID yet (Pending, or Running before the worker recorded it) is
   orphaned when its state is older than the current worker's start: the worker that claimed it is
   gone, and no later worker takes over a claimed run;
4. a lifecycle run that ended Crashed while its approval was pending (on ``down`` the engine often
   reports the whole tree Crashed itself on SIGTERM, so nothing is left active) and was not
   reopened yet: its approval is lost, so it counts too;
5. anything else (runs started from Python, other pools, other hosts, a suspended run waiting to
   be rescheduled) has no process we can judge, and is left alone.

What :func:`reconcile` does with them. A detached process (rule 1, alive) is stopped first. A
lifecycle that had not got its approval answered is REOPENED: a new run of the ``lifecycle``
deployment with the same parameters, the candidate pinned to the version number it resolved, and
the original answer-by time (so a restart never extends a 3-day deadline). Every orphaned run then
ends Crashed (Cancelling ones: Cancelled) with a message naming the replacement and its URL; the
run a lifecycle already ended itself (Crashed by the engine) gets that message too. Other orphans (a
ks-check, a retrain, a train) end Crashed with the reason and are not re-launched: the ks-check
is scheduled, the next degraded event launches a retrain, and a train is the user's to repeat.

``modelops up`` calls :func:`after_worker_restart` once the worker is healthy; a supervisor that
restarts a killed worker calls it too. Two callers at once are safe: a lock file serialises them
and each replacement run is created with an idempotency key derived from the run it replaces.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psutil
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, Crashed

from modelops.approval import APPROVAL_FLOW_NAME
from modelops.config import ModelOpsConfig
from modelops.deployments import LIFECYCLE
from modelops.integrations.prefect_client import prefect_client
from modelops.stack import components as comp
from modelops.stack import flow_run_containers
from modelops.stack.processes import find_process, stop_tree
from modelops.stack.state import home_lock, load_state

Echo = Callable[[str], None]
ACTIVE = [StateType.RUNNING, StateType.PAUSED, StateType.PENDING, StateType.CANCELLING]
PAGE = 200
_STOP_GRACE_S = 10.0
# The message an ended run carries names its replacement like this; `modelops approve --run <old>`
# reads it back to point at the reopened approval.
_REOPENED = "reopened in lifecycle run"
_REPLACEMENT = re.compile(rf"{_REOPENED} '[^']*' \((?P<id>[0-9a-f-]{{36}})\)")


@dataclass(frozen=True)
class StackView:
    """What the rule needs to know about the stack: its pool, and its current worker (if alive)."""

    pool: str
    worker: psutil.Process | None
    worker_started: float | None  # epoch seconds
    pool_type: str = "process"

    @classmethod
    def of(cls, config: ModelOpsConfig) -> StackView:
        state = load_state(config.stack_home)
        record = state.components.get(comp.WORKER) if state else None
        worker = find_process(record.pid, record.start_ticks) if record else None
        return cls(
            config.stack.work_pool,
            worker,
            worker.create_time() if worker else None,
            config.stack.work_pool_type,
        )


@dataclass
class Orphan:
    run: FlowRun
    reason: str
    detached: psutil.Process | None = None  # a live process that lost its worker: stop it first


@dataclass
class Report:
    orphans: list[Orphan] = field(default_factory=list)
    reopened: dict[str, FlowRun] = field(default_factory=dict)  # old lifecycle run id -> new run
    errors: list[str] = field(default_factory=list)


class _Runs:
    """Flow runs read once per pass: parents of subflows are looked up through their task run."""

    def __init__(self, client: SyncPrefectClient) -> None:
        self.client = client
        self.by_id: dict[UUID, FlowRun] = {}
        self.parent_of: dict[UUID, UUID | None] = {}

    def active(self) -> list[FlowRun]:
        found: list[FlowRun] = []
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=ACTIVE))
        while True:
            page = self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=state),
                sort=FlowRunSort.START_TIME_DESC,
                limit=PAGE,
                offset=len(found),
            )
            found += page
            if len(page) < PAGE:
                break
        self.by_id.update((run.id, run) for run in found)
        return found

    def parent(self, run: FlowRun) -> FlowRun | None:
        if run.parent_task_run_id is None:
            return None
        if run.id not in self.parent_of:
            try:
                task_run = self.client.read_task_run(run.parent_task_run_id)
                self.parent_of[run.id] = task_run.flow_run_id
            except ObjectNotFound:
                self.parent_of[run.id] = None
        parent_id = self.parent_of[run.id]
        if parent_id is None:
            return None
        if parent_id not in self.by_id:
            self.by_id[parent_id] = self.client.read_flow_run(parent_id)
        return self.by_id[parent_id]

    def owner(self, run: FlowRun) -> FlowRun:
        """The run whose process ``run`` executes in: itself if it has a PID, else its parent's owner."""
        parent = None if run.infrastructure_pid else self.parent(run)
        return run if parent is None else self.owner(parent)

    def descendants(self, run: FlowRun) -> list[FlowRun]:
        found: list[FlowRun] = []
        level = [run.id]
        while level:
            children = self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=level))
            )
            found += children
            level = [child.id for child in children]
        return found


# ---------------------------------------------------------------- the rule


def orphan_reason(runs: _Runs, run: FlowRun, view: StackView) -> tuple[str, psutil.Process | None] | None:
    """Why ``run`` has no process to finish it (and the detached process, if one lives), or None."""
    state = run.state
    if state is None or state.type not in ACTIVE:
        return None
    if state.type == StateType.PAUSED and state.state_details.pause_reschedule:
        return None  # suspended: it waits to be rescheduled, with no process by design
    if run.infrastructure_pid:
        return _process_gone(run, view)
    parent = runs.parent(run)
    if parent is not None:
        if parent.state is not None and parent.state.is_final():
            return (
                f"its parent run '{parent.name}' ended ({parent.state.name}) while this one was {state.name}",
                None,
            )
        inherited = orphan_reason(runs, parent, view)
        if inherited is None or inherited[0].startswith("it ran in the process of"):
            return inherited
        return f"it ran in the process of run '{parent.name}': {inherited[0]}", inherited[1]
    if run.deployment_id and run.work_pool_name == view.pool and view.worker_started is not None:
        since = state.timestamp.timestamp() if state.timestamp else None
        if since is not None and since < view.worker_started:
            return (
                f"it was {state.name} before the current worker started, with no process recorded: "
                "the worker that claimed it is gone",
                None,
            )
    return None


def _process_gone(run: FlowRun, view: StackView) -> tuple[str, psutil.Process | None] | None:
    if run.work_pool_name != view.pool:
        return None
    if view.pool_type == "docker":
        return _container_gone(run)
    pid = _local_pid(run.infrastructure_pid or "")
    if pid is None:
        return None
    process = _run_process(pid, str(run.id))
    if process is None:
        return f"its flow-run process (pid {pid}) is gone (the worker or the stack was stopped)", None
    if view.worker is None or not _descends_from(process, view.worker):
        return (
            f"its flow-run process (pid {pid}) lost its worker (killed): its output pipe is closed, so "
            "it would crash at its next log line",
            process,
        )
    return None


def _container_gone(run: FlowRun) -> tuple[str, psutil.Process | None] | None:
    """A Docker pool's run lives in its container (``<engine url>:<container id>``): orphaned once the
    container has stopped or is gone while the run is still active; the worker need not be alive."""
    status = flow_run_containers.container_state(run.infrastructure_pid or "")
    if status is None or status in ("running", "created", "restarting"):
        return None
    container = (run.infrastructure_pid or "").rpartition(":")[2][:12]
    return f"its flow-run container {container} is {status} (the worker or the stack was stopped)", None


def _local_pid(infrastructure_pid: str) -> int | None:
    """The PID if the run's process is on this host: the process worker records "pid" or "host:pid"."""
    host, _, pid = infrastructure_pid.rpartition(":")
    if host and host != socket.gethostname():
        return None
    return int(pid) if pid.isdigit() else None


def _run_process(pid: int, flow_run_id: str) -> psutil.Process | None:
    """The live process ``pid`` if it is this run's engine (not a PID the kernel gave to another)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    try:
        recorded = process.environ().get("PREFECT__FLOW_RUN_ID")
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return process  # cannot tell: assume it is the run's
    return process if recorded == flow_run_id else None


def _descends_from(process: psutil.Process, ancestor: psutil.Process) -> bool:
    try:
        return any(parent.pid == ancestor.pid for parent in process.parents())
    except psutil.NoSuchProcess:
        return False


def find_orphans(client: SyncPrefectClient, view: StackView) -> list[Orphan]:
    """Active runs with no process (rules 1-3), and lifecycles whose pending approval died with them."""
    runs = _Runs(client)
    orphans = []
    for run in runs.active():
        verdict = orphan_reason(runs, run, view)
        if verdict is not None:
            orphans.append(Orphan(run, verdict[0], verdict[1]))
    listed = {orphan.run.id for orphan in orphans}
    orphans += [orphan for orphan in _lost_approvals(runs, view) if orphan.run.id not in listed]
    return orphans


def _lost_approvals(runs: _Runs, view: StackView) -> list[Orphan]:
    """Lifecycle runs that ended Crashed while their approval was pending, not reopened yet.

    ``modelops down`` stops the flow-run process with SIGTERM; the engine then often reports the
    lifecycle, its stage and even the approval Crashed itself, so nothing is left active, yet the
    approval is lost. Crashed (not Failed) means the process died; the approval counts as pending
    when it never completed and its answer-by time had not passed when the lifecycle crashed.
    """
    client = runs.client
    try:
        deployment_id = client.read_deployment_by_name(LIFECYCLE).id
    except ObjectNotFound:
        return []
    crashed = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
        )
    )
    lost = []
    for run in crashed:
        state = run.state
        if state is None or _REOPENED in (state.message or "") or run.work_pool_name != view.pool:
            continue
        approvals = [child for child in runs.descendants(run) if _is_approval(client, child)]
        if not approvals or any(a.state is not None and a.state.is_completed() for a in approvals):
            continue
        deadline = _pause_deadline(client, _latest(approvals))
        if deadline is not None and state.timestamp is not None and state.timestamp >= deadline:
            continue  # it had timed out already
        lost.append(Orphan(run, f"it ended {state.name} ({state.message}) while its approval was pending"))
    return lost


# ---------------------------------------------------------------- entry points


@contextmanager
def stack_client(config: ModelOpsConfig) -> Iterator[SyncPrefectClient]:
    """A Prefect client on the stack's own API (whatever PREFECT_API_URL this process has)."""
    with (
        temporary_settings({PREFECT_API_URL: config.prefect_api_url}),
        prefect_client(sync_client=True) as client,
    ):
        yield client


def count_orphans(config: ModelOpsConfig) -> int | None:
    """How many runs have no process behind them; None when the stack's API does not answer."""
    try:
        with stack_client(config) as client:
            return len(find_orphans(client, StackView.of(config)))
    except Exception:  # noqa: BLE001 - an unreachable or failing API: the count is unknown
        return None


def why_orphaned(client: SyncPrefectClient, config: ModelOpsConfig, flow_run_id: UUID) -> str | None:
    """Why this run (on the stack's API) has no process behind it, or None if it has one or we cannot tell."""
    runs = _Runs(client)
    run = client.read_flow_run(flow_run_id)
    runs.by_id[run.id] = run
    verdict = orphan_reason(runs, run, StackView.of(config))
    return verdict[0] if verdict else None


def replacement_run_id(message: str | None) -> str | None:
    """The reopened lifecycle run named in an ended run's state message, if any."""
    match = _REPLACEMENT.search(message or "")
    return match.group("id") if match else None


def reopened_approval(client: SyncPrefectClient, lifecycle_run_id: str) -> FlowRun | None:
    """The approval run of a reopened lifecycle run, once it has started (None before)."""
    runs = _Runs(client)
    lifecycle = client.read_flow_run(UUID(lifecycle_run_id))
    approvals = [run for run in runs.descendants(lifecycle) if _is_approval(client, run)]
    return _latest(approvals) if approvals else None


def after_worker_restart(config: ModelOpsConfig, echo: Echo = print) -> Report:
    """The hook for whoever (re)starts the worker: ``modelops up``, the supervisor. See :func:`reconcile`."""
    return reconcile(config, echo)


def reconcile(config: ModelOpsConfig, echo: Echo = print) -> Report:
    """End every orphaned run, reopening pending approvals in new lifecycle runs (module docstring)."""
    # one reconciler at a time per stack home (``up`` and the supervisor may both call it)
    with home_lock(config.stack_home, ".reconcile.lock"), stack_client(config) as client:
        view = StackView.of(config)
        report = Report(orphans=find_orphans(client, view))
        if not report.orphans:
            return report
        detached = {orphan.detached.pid: orphan for orphan in report.orphans if orphan.detached}
        for pid, orphan in detached.items():
            echo(f"reconcile: stopping pid {pid} of run '{orphan.run.name}' ({orphan.reason})")
            stop_tree(orphan.detached, grace_s=_STOP_GRACE_S)
        runs = _Runs(client)
        groups: dict[UUID, list[Orphan]] = {}
        for orphan in report.orphans:
            groups.setdefault(runs.owner(orphan.run).id, []).append(orphan)
        for root_id, members in groups.items():
            _settle(runs, root_id, members, config, report, echo)
        return report


def _settle(
    runs: _Runs, root_id: UUID, members: list[Orphan], config: ModelOpsConfig, report: Report, echo: Echo
) -> None:
    """Reopen the approval of the root (the runs' process owner) if it was pending, then end every
    orphan of this tree.

    When the approval is reopened, runs of the tree the engine already ended Crashed (on SIGTERM)
    get the message naming the replacement as well: every old run points at the new one.
    """
    client = runs.client
    root = client.read_flow_run(root_id)  # fresh: a stopped process may just have ended it
    replacement = None
    if _is_lifecycle(client, root):
        tree = runs.descendants(root)
        approvals = [run for run in tree if _is_approval(client, run)]
        if not any(run.state is not None and run.state.is_completed() for run in approvals):
            try:
                replacement = _reopen(client, root, approvals)
                report.reopened[str(root.id)] = replacement
                echo(
                    f"reconcile: the approval of '{root.name}' is reopened in lifecycle run "
                    f"'{replacement.name}' ({config.prefect_ui_url}/runs/flow-run/{replacement.id})"
                )
            except Exception as exc:  # noqa: BLE001 - still end the old runs, and say why
                report.errors.append(f"could not reopen the approval of '{root.name}': {exc}")
                echo(f"reconcile: {report.errors[-1]}")
        if replacement is not None:
            listed = {orphan.run.id for orphan in members}
            members = members + [
                Orphan(run, "its process ended while the approval was pending")
                for run in [root, *tree]
                if run.id not in listed and run.state is not None and run.state.type == StateType.CRASHED
            ]
    for orphan in members:
        message = _ending_message(orphan, replacement, config)
        cancelling = orphan.run.state is not None and orphan.run.state.type == StateType.CANCELLING
        client.set_flow_run_state(
            orphan.run.id, (Cancelled if cancelling else Crashed)(message=message), force=True
        )
        echo(f"reconcile: run '{orphan.run.name}' ended: {message}")


def _reopen(client: SyncPrefectClient, root: FlowRun, approvals: list[FlowRun]) -> FlowRun:
    """A new lifecycle run for the same candidate version, with the first request's answer-by time."""
    parameters: dict[str, Any] = dict(root.parameters)
    latest = _latest(approvals) if approvals else None
    if latest is not None:
        parameters["candidate_version"] = str(latest.parameters.get("candidate_version"))
        deadline = _pause_deadline(client, latest)
        if deadline is not None:
            parameters["approval_deadline"] = deadline.isoformat()
    assert root.deployment_id is not None
    model, version = parameters.get("model_name"), parameters.get("candidate_version")
    return client.create_flow_run_from_deployment(
        root.deployment_id,
        parameters=parameters,
        # the name the run takes once it resolves its version, so the old runs' messages name it
        name=f"lifecycle-{model}-v{version}" if model and version else None,
        tags=["reopened"],
        idempotency_key=f"reopen:{root.id}",
    )


def _latest(approvals: list[FlowRun]) -> FlowRun:
    return max(approvals, key=lambda run: run.created or datetime.min.replace(tzinfo=UTC))


def _pause_deadline(client: SyncPrefectClient, approval: FlowRun) -> datetime | None:
    """When the approval's first pause expires: the answer-by time the approvers were given."""
    for state in client.read_flow_run_states(approval.id):
        if state.type == StateType.PAUSED and state.state_details.pause_timeout is not None:
            return state.state_details.pause_timeout
    return None


def _ending_message(orphan: Orphan, replacement: FlowRun | None, config: ModelOpsConfig) -> str:
    text = f"no process behind this run: {orphan.reason}; ended by the stack's reconciler"
    if replacement is None:
        return f"{text}. It was not re-launched: start it again if it is still needed."
    url = f"{config.prefect_ui_url}/runs/flow-run/{replacement.id}"
    return (
        f"{text}. The pending approval was {_REOPENED} '{replacement.name}' ({replacement.id}): {url} "
        "- answer it there or with `modelops approve`."
    )


def _is_lifecycle(client: SyncPrefectClient, run: FlowRun) -> bool:
    if run.deployment_id is None:
        return False
    try:
        return run.deployment_id == client.read_deployment_by_name(LIFECYCLE).id
    except ObjectNotFound:
        return False


def _is_approval(client: SyncPrefectClient, run: FlowRun) -> bool:
    return "approval" in run.tags and client.read_flow(run.flow_id).name == APPROVAL_FLOW_NAME


__all__ = [
    "Orphan",
    "Report",
    "StackView",
    "after_worker_restart",
    "count_orphans",
    "find_orphans",
    "reconcile",
    "reopened_approval",
    "replacement_run_id",
    "why_orphaned",
]
