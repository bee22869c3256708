"""``modelops demo``: the seed's whole loop on the embedded stack, narrated as it goes.

    stack up → train v1 → lifecycle (approval) → v1 live → replay periods with growing drift
    → KS check (a ks-check run asked for after each period, or the scheduled one) sees the decline
    → automation → retrain v2 → lifecycle (approval)
    → v2 live → replay again → KS recovered → timeline

Everything happens through the same deployments, automations and APIs a person would use: the
demo only waits, narrates and (with ``--auto-approve``) answers the approval form over the REST
API like a browser would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psutil
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import SCHEDULE_TYPES, IntervalSchedule
from prefect.client.schemas.sorting import FlowRunSort

from flows.train import train
from modelops.cli.demo_timing import Timed, timing_json, timing_rows, timing_table
from modelops.config import CONFIG_DIR, ModelOpsConfig
from modelops.deployments import KS_CHECK as KS_CHECK_DEPLOYMENT
from modelops.deployments import LIFECYCLE as LIFECYCLE_DEPLOYMENT
from modelops.integrations.approvals import (
    ApprovalError,
    find_paused_approval,
    resume_approval,
    wait_until_answered,
)
from modelops.integrations.database import resolve_database_url
from modelops.integrations.performance_store import read_recent_checks
from modelops.integrations.prefect_api import PrefectUnreachable, start_deployment, use_prefect_api
from modelops.integrations.prefect_client import prefect_client
from modelops.integrations.registry import CHALLENGER, CHAMPION, get_alias_version
from modelops.integrations.scoring_log import count_records
from modelops.scoring.client import TrafficSettings, run_traffic
from modelops.scoring.source import load_replay_records
from modelops.stack import use_stack_environment
from modelops.stack.manager import up as stack_up

Narrate = Callable[[str], None]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DEMO_SCHEDULE_SLUG = "modelops-demo"
# A worker submits a scheduled run up to its prefetch (Prefect's default: 10 s) before it is due.
CHECK_SLOT_LEAD_S = 15.0


class DemoError(RuntimeError):
    """The loop did not go as it should; the message says where."""


@dataclass
class Step:
    name: str
    started: float  # epoch seconds (the timeline's clock)
    seconds: float = 0.0  # wall seconds, time.perf_counter
    detail: str = ""
    kind: str = ""  # groups steps in the "where the time went" table
    parts: dict[str, float] = field(default_factory=dict)  # seconds of what the step waited on
    failed: bool = False


@dataclass
class DemoResult:
    steps: list[Step] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(
        default_factory=list
    )  # one per KS check: period, version, ks, status
    versions: dict[str, str] = field(default_factory=dict)  # alias -> version at the end
    sent: int = 0
    retrain_runs: list[str] = field(default_factory=list)
    approvals: list[str] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)  # "where the time went" (demo_timing.timing_json)

    def timeline(self, ui_url: str, mlflow_url: str) -> str:
        lines = ["", "Timeline", "--------"]
        width = max(len(s.name) for s in self.steps) if self.steps else 10
        origin = self.steps[0].started if self.steps else 0.0
        for step in self.steps:
            lines.append(
                f"+{step.started - origin:6.1f}s  {step.name.ljust(width)}  "
                f"{step.seconds:6.1f}s  {step.detail}"
            )
        lines += ["", "KS per check (threshold shown)"]
        for check in self.checks:
            ks = "-" if check.get("ks") is None else f"{check['ks']:.3f}"
            lines.append(
                f"  period {check['period']:<3} v{check['model_version']:<3} KS {ks:>6}  "
                f"n={check.get('n', 0):<6} {check['status']} (threshold {check['threshold']:.2f})"
            )
        lines += [
            "",
            "Registry aliases: " + ", ".join(f"{a} -> v{v}" for a, v in sorted(self.versions.items())),
            f"Records scored and logged: {self.sent}",
            f"Prefect UI: {ui_url}    MLflow UI: {mlflow_url}",
            "The stack keeps running for exploration; `modelops down` stops it.",
        ]
        return "\n".join(lines)


class LoopDriver:
    """Waits on, and narrates, what the deployments and automations do."""

    def __init__(
        self, config: ModelOpsConfig, reviewer: str | None, narrate: Narrate = print, timeout_s: float = 600
    ) -> None:
        self.config = config
        self.reviewer = reviewer  # None: wait for a person
        self.narrate = narrate
        self.timeout_s = timeout_s
        self.result = DemoResult()
        self._current: Step | None = None

    # -- timeline ---------------------------------------------------------------------------------

    @contextmanager
    def step(self, name: str, kind: str = "") -> Iterator[Step]:
        current = Step(name=name, started=time.time(), kind=kind)
        self._current = current
        self.narrate(f"\n==> {name}")
        t0 = time.perf_counter()
        try:
            yield current
        except BaseException:
            current.failed = True
            raise
        finally:
            current.seconds = time.perf_counter() - t0
            self._current = None
            self.result.steps.append(current)
            self.narrate(
                f"    done in {current.seconds:.1f} s{': ' + current.detail if current.detail else ''}"
            )

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time what the current step waits on (a row under the step in the timing table)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._current is not None:
                parts = self._current.parts
                parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0

    # -- Prefect --------------------------------------------------------------------------------

    def _client(self) -> SyncPrefectClient:
        return prefect_client(sync_client=True)

    def wait_for_run(self, run_id: str, what: str, poll_s: float = 1.0) -> FlowRun:
        """The run once it completed; a DemoError when it ended otherwise or did not end in time."""
        run = self.wait_until_ended(run_id, what, poll_s)
        assert run.state is not None
        if run.state.type.value != "COMPLETED":
            raise DemoError(f"{what} ended {run.state.name}: {run.state.message}")
        return run

    def wait_until_ended(self, run_id: str, what: str, poll_s: float = 1.0) -> FlowRun:
        """The run once it ended, in whatever final state; a DemoError when it did not end in time."""
        deadline = time.time() + self.timeout_s
        with self._client() as client:
            while time.time() < deadline:
                run = client.read_flow_run(UUID(run_id))
                if run.state and run.state.type.value in TERMINAL:
                    return run
                time.sleep(poll_s)
        raise DemoError(f"{what} did not finish within {self.timeout_s:.0f} s")

    def runs_of(self, deployment: str, since: datetime) -> list[FlowRun]:
        with self._client() as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )

    def approve_when_paused(self, model_name: str, version: str) -> None:
        """Wait for the approval form; answer it (auto) or wait for a person to."""
        with self.part("waiting for the approval form (the worker starts the run, evidence)"):
            run_id = self._paused_approval(model_name, version)
        link = f"{self.config.prefect_ui_url}/runs/flow-run/{run_id}"
        self.narrate(f"    approval form for {model_name} v{version}: {link}")
        if self.reviewer:
            answer = {
                "approved": True,
                "image_tag": f"v{version}",
                "reviewer": self.reviewer,
                "comment": "approved by modelops demo --auto-approve",
            }
            with self.part("approval: the answer (REST resume)"):
                resume_approval(run_id, answer)
            self.narrate(f"    approved as {self.reviewer!r} with image tag v{version} (REST resume)")
        else:
            self.narrate(
                "    waiting for you: open the link, fill in the form (approve, image tag, your name) and "
                f"submit — or run `modelops approve --model {model_name} --tag v{version} --reviewer <you>`"
            )
            with self.part("approval: waiting for your answer"):
                wait_until_answered(run_id)
        self.result.approvals.append(run_id)

    def _paused_approval(self, model_name: str, version: str) -> str:
        deadline = time.time() + self.timeout_s
        while True:
            try:
                return find_paused_approval(model_name)
            except (ApprovalError, PrefectUnreachable):
                if time.time() > deadline:
                    raise DemoError(f"no approval form for {model_name} v{version} appeared") from None
                time.sleep(1)

    # -- stages ---------------------------------------------------------------------------------

    def start_lifecycle(self, model_name: str, version: str) -> str:
        run = start_deployment(LIFECYCLE_DEPLOYMENT, {"model_name": model_name, "candidate_version": version})
        return str(run.id)

    def check_now(self, since: datetime) -> str:
        """The id of a ks-check run that checks the traffic shipped up to ``since``: one asked for now,
        as the UI's "Quick run" does, unless the deployment's schedule already has one.

        The deployment runs one check at a time (``concurrency_limit: 1``). A run asked for while a
        scheduled one holds that slot, or is about to take it (the worker picks scheduled runs up to
        its prefetch ahead), waits ~30 s in AwaitingConcurrencySlot before Prefect offers it the slot
        again. So a scheduled run that started, or is due, after ``since`` is the check; one that
        started before ``since`` is waited for, and then a run is asked for.
        """
        while (busy := self.check_holding_the_slot()) is not None:
            started = busy.start_time or busy.expected_start_time
            if started is not None and started >= since:
                self.narrate(f"    ks-check: the scheduled run {busy.name} checks this period; waiting")
                return str(busy.id)
            self.narrate(f"    ks-check: waiting for the scheduled run {busy.name} to free the check's slot")
            self.wait_until_ended(str(busy.id), f"the ks-check run {busy.name}", poll_s=0.5)
        run = start_deployment(KS_CHECK_DEPLOYMENT, {})
        self.narrate(f"    ks-check: a run asked for now ({run.name}), as the UI's Quick run does")
        return str(run.id)

    def check_holding_the_slot(self, lead_s: float = CHECK_SLOT_LEAD_S) -> FlowRun | None:
        """A ks-check run that is Pending or Running, or Scheduled to start within ``lead_s``."""
        due_by = datetime.now(UTC) + timedelta(seconds=lead_s)
        with self._client() as client:
            deployment = client.read_deployment_by_name(KS_CHECK_DEPLOYMENT)
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(
                            any_=[StateType.PENDING, StateType.RUNNING, StateType.SCHEDULED]
                        )
                    )
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )
        for run in runs:
            if run.state_type is not StateType.SCHEDULED or (
                run.expected_start_time is not None and run.expected_start_time <= due_by
            ):
                return run
        return None

    def wait_for_check(self, since: datetime, period: int, run_id: str) -> dict[str, Any]:
        """Wait for ``run_id`` (the period's ks-check run from :meth:`check_now`) to complete; return the
        latest KS check stored after ``since`` (its own, or a scheduled run's that ran just before it),
        with ``run_id``."""
        self.wait_for_run(run_id, f"the KS check run {run_id}", poll_s=0.5)
        checks = read_recent_checks(
            resolve_database_url(self.config),
            self.config.model.name,
            limit=5,
            schema=self.config.database.schema_name,
        )
        after = [check for check in checks if check["checked_at"] > since]
        if not after:
            raise DemoError(
                f"the KS check run {run_id} completed but stored no check of {self.config.model.name}"
            )
        record = {"period": period, **after[-1], "run_id": run_id}
        self.result.checks.append(record)
        return record


@contextmanager
def short_ks_schedule(config: ModelOpsConfig, narrate: Narrate) -> Iterator[None]:
    """With ``monitoring.demo_interval_s`` > 0, give the ks-check deployment an extra interval schedule
    for the demo and remove it afterwards; with 0 (the default) do nothing.

    The deployment keeps its cron schedule from the config either way; the demo does not wait for it
    (ten minutes per check): it asks for a run after each period (:meth:`LoopDriver.check_now`).
    """
    seconds = config.monitoring.demo_interval_s
    with prefect_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(KS_CHECK_DEPLOYMENT)
        for schedule in client.read_deployment_schedules(deployment.id):
            if schedule.slug == DEMO_SCHEDULE_SLUG:  # left by a demo that was killed
                client.delete_deployment_schedule(deployment.id, schedule.id)
        if seconds == 0:
            created = None
        else:
            schedules: list[tuple[SCHEDULE_TYPES, bool]] = [
                (IntervalSchedule(interval=timedelta(seconds=seconds)), True)
            ]
            (created,) = client.create_deployment_schedules(deployment.id, schedules, slug=DEMO_SCHEDULE_SLUG)
    if created is None:
        yield
        return
    narrate(
        f"    ks-check deployment: demo schedule every {seconds} s "
        f"(beside its cron {config.monitoring.schedule_cron!r})"
    )
    try:
        yield
    finally:
        with prefect_client(sync_client=True) as client:
            client.delete_deployment_schedule(deployment.id, created.id)
        narrate("    ks-check deployment: demo schedule removed; the configured cron keeps running")


def _shipper(config: ModelOpsConfig) -> subprocess.Popen[bytes]:
    log = config.stack_home / "logs" / "demo-sidecar.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    code = "import sys; from modelops.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "ship"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_shipped(config: ModelOpsConfig, expected: int, timeout_s: float = 120) -> int:
    dsn = resolve_database_url(config)
    deadline = time.time() + timeout_s
    count = 0
    while time.time() < deadline:
        count = count_records(dsn, config.model.name, schema=config.database.schema_name)
        if count >= expected:
            return count
        time.sleep(0.5)
    raise DemoError(f"the log sidecar shipped {count} of {expected} records in {timeout_s:.0f} s")


def run_demo(
    config: ModelOpsConfig,
    reviewer: str | None,
    periods: int = 4,
    rows_per_period: int = 2000,
    narrate: Narrate = print,
    count_startup: bool = False,
) -> DemoResult:
    """The loop; at its end (or when a step fails) the table of where the time went, also written to
    ``<stack home>/demo-timing.json``. ``count_startup``: the table's first row is this process's
    seconds before the call (``modelops demo``: its imports)."""
    driver = LoopDriver(config, reviewer, narrate)
    t0 = time.perf_counter()
    startup_s = process_age_s() if count_startup else None
    try:
        with driver.step("start the embedded stack", kind=KIND_STACK) as step:
            stack_up(config)
            use_stack_environment(config)  # MLflow reads it at each call; the sidecar process inherits it
            step.detail = f"Prefect {config.prefect_ui_url}, MLflow {config.mlflow_uri}"
        with use_prefect_api(config):  # Prefect was imported (with this module) before the stack was known
            _run_loop(driver, config, periods, rows_per_period)
    except BaseException:
        _report_timing(driver, config, time.perf_counter() - t0, startup_s, failed=True)
        raise
    loop_s = time.perf_counter() - t0
    narrate(driver.result.timeline(config.prefect_ui_url, config.mlflow_uri))
    _report_timing(driver, config, loop_s, startup_s, failed=False)
    return driver.result


KIND_STACK = "stack up"
KIND_TRAIN = "training v1"
KIND_LIFECYCLE = "lifecycles (approval, prebuild, deploy)"
KIND_TRAFFIC = "replay (scoring, shipping)"
KIND_CHECK = "KS checks (ks-check deployment runs)"
KIND_RETRAIN = "retrain (automation to registered)"
AFTER_APPROVAL = "after the approval: prebuild → build → deploy → promote"


def process_age_s() -> float | None:
    """Seconds since this process started (its imports before the demo's first step)."""
    try:
        return max(time.time() - psutil.Process().create_time(), 0.0)
    except psutil.Error:
        return None


def _report_timing(
    driver: LoopDriver, config: ModelOpsConfig, loop_s: float, startup_s: float | None, failed: bool
) -> None:
    """Print where the time went and write it next to the stack's files; never fails the demo."""
    steps = [Timed(s.name, s.seconds, s.kind, dict(s.parts), s.failed) for s in driver.result.steps]
    total = loop_s + (startup_s or 0.0)
    rows = timing_rows(steps, total, startup_s)
    driver.result.timing = timing_json(rows, total, failed)
    driver.narrate(timing_table(rows, total, failed))
    path = config.stack_home / "demo-timing.json"
    try:
        path.write_text(json.dumps(driver.result.timing, indent=2) + "\n")
        driver.narrate(f"  (also in {path})")
    except OSError as exc:
        driver.narrate(f"  (could not write {path}: {exc})")


def _run_loop(driver: LoopDriver, config: ModelOpsConfig, periods: int, rows: int) -> None:
    model = config.model.name
    with driver.step("train v1 (MLflow run + registry version, alias challenger)", KIND_TRAIN) as step:
        trained = train(config=None)
        v1 = trained["version"]
        step.detail = f"v{v1}: holdout KS {trained['metrics']['ks']:.3f}, AUC {trained['metrics']['auc']:.3f}"
    with driver.step(f"lifecycle v{v1}: approve → prebuild → deploy (local target)", KIND_LIFECYCLE) as step:
        run_id = driver.start_lifecycle(model, v1)
        driver.approve_when_paused(model, v1)
        with driver.part(AFTER_APPROVAL):
            driver.wait_for_run(run_id, f"lifecycle of v{v1}")
        step.detail = f"v{v1} serves at {config.serving_url}"
    shipper = _shipper(config)
    with short_ks_schedule(config, driver.narrate), _stopping(shipper):
        _replay_until_recovered(driver, config, periods, rows, v1)
    driver.result.versions = {
        alias: version
        for alias in (CHAMPION, CHALLENGER)
        if (version := get_alias_version(model, alias)) is not None
    }


@contextmanager
def _stopping(process: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        process.terminate()  # the sidecar drains the spool before it exits
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _replay_until_recovered(
    driver: LoopDriver, config: ModelOpsConfig, periods: int, rows: int, first_version: str
) -> str:
    """Replay periods 1..N until a KS check degrades; then retrain, approve, and replay that period
    again on the new champion, which must check ok. Returns the retrained version."""
    retrained: str | None = None
    period, seed = 1, config.training.seed
    while True:
        shipped_at = _replay_period(driver, config, period, rows, seed, first_version)
        with driver.step(f"KS check after period {period}", KIND_CHECK) as step:
            check = driver.wait_for_check(shipped_at, period, driver.check_now(shipped_at))
            step.detail = f"v{check['model_version']} KS {check.get('ks') or 0:.3f}: {check['status']}"
        if retrained is not None:
            if check["status"] != "ok":
                raise DemoError(f"after retraining, the KS check of v{retrained} says {check['status']}")
            return retrained
        if check["status"] == "degraded":
            retrained = _retrain_and_approve(driver, config.model.name, shipped_at)
            seed += 1000  # fresh records of the same period for the recovery check
            continue
        if period == periods:
            raise DemoError(f"KS never fell below the threshold in {periods} periods: no retraining happened")
        period += 1


def _replay_period(
    driver: LoopDriver, config: ModelOpsConfig, period: int, rows: int, seed: int, first_version: str
) -> datetime:
    """Score one period against the champion and wait until the sidecar shipped it; returns when."""
    model = config.model.name
    champion = get_alias_version(model, CHAMPION) or first_version
    with driver.step(f"replay period {period} against v{champion}", KIND_TRAFFIC) as step:
        with driver.part("scoring (the traffic client against the serving URL)"):
            summary = run_traffic(
                load_replay_records(period=period, rows=rows, seed=seed + period),
                TrafficSettings(
                    url=config.serving_url,
                    model_name=model,
                    spool_dir=config.stack_home / "spool",
                    decision_threshold=config.model.decision_threshold,
                    concurrency=8,
                    spool_max_age_s=1.0,
                ),
            )
        driver.result.sent += summary.ok
        with driver.part("shipping (the log sidecar's records in PostgreSQL)"):
            _wait_shipped(config, driver.result.sent)
        step.detail = (
            f"{summary.ok} scored ({summary.errors} errors), p50 {summary.p50_ms or 0:.1f} ms, shipped"
        )
    return datetime.now(UTC)


def _retrain_and_approve(driver: LoopDriver, model: str, since: datetime) -> str:
    with driver.step(
        "automation → retrain → new version registered (alias challenger)", KIND_RETRAIN
    ) as step:
        retrained = _wait_for_retrain(driver, model, since)
        step.detail = f"v{retrained} registered"
    with driver.step(f"lifecycle v{retrained}: approve → prebuild → deploy", KIND_LIFECYCLE) as step:
        driver.approve_when_paused(model, retrained)
        with driver.part(AFTER_APPROVAL):
            _wait_for_champion(driver, model, retrained)
        step.detail = f"v{retrained} is the champion"
    return retrained


def _wait_for_retrain(driver: LoopDriver, model: str, since: datetime) -> str:
    deadline = time.time() + driver.timeout_s
    while time.time() < deadline:
        runs = driver.runs_of("retrain", since)
        if any(run.state and run.state.type.value == "COMPLETED" for run in runs):
            version = get_alias_version(model, CHALLENGER)
            if version:
                driver.result.retrain_runs = [str(r.id) for r in runs]
                return version
        time.sleep(1)
    raise DemoError(
        "the degraded event did not lead to a retrained version (automation, worker, retrain flow)"
    )


def _wait_for_champion(driver: LoopDriver, model: str, version: str) -> None:
    deadline = time.time() + driver.timeout_s
    while time.time() < deadline:
        if get_alias_version(model, CHAMPION) == version:
            return
        time.sleep(1)
    raise DemoError(f"v{version} did not become the champion")


def demo_config_path() -> Path:
    return CONFIG_DIR / "demo.yaml"
