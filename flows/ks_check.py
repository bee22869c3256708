"""The seed's production stage: timer → performance task → KS gateway, plus "review and fix".

``ks_check`` reads a model's champion's labelled scoring log over the model's window
(``config.monitoring_for(model)``: ``models.<name>.monitoring`` over ``monitoring``), computes KS
and AUC against the model's threshold, stores a ``ks_checks`` row, emits ``modelops.performance.ok``
or ``.degraded`` (an automation retrains on the latter), publishes a Markdown artifact ``ks-<model>``
with the KS trend and label-free drift (score KS, PSI per feature) against the training reference
→ ``modelops.drift.detected``. The reference is the one logged with the version in MLflow unless one is given.

When the check itself fails (database down, no champion) it emits ``modelops.monitoring.failed``,
notifies, and pauses in a ``monitoring-review`` subflow whose form lets a person acknowledge or
re-run; the pause times out so a scheduled run never blocks forever.

The scheduled deployment runs ``ks_check(every_champion=True)``: one parent run
(``ks-check-every-champion``) lists every registered model with a ``champion`` alias and checks each
in its own subflow run ``ks-check-<model>-v<version>``. A model whose check fails does not stop the
others: all are checked first, then each failure waits for its review.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from prefect import get_run_logger, tags
from prefect.flow_runs import pause_flow_run
from prefect.runtime import flow_run

from flows.base import flow
from modelops.config import ModelOpsConfig, load_config
from modelops.integrations.database import resolve_database_url
from modelops.messages import ks_message, monitoring_error_message
from modelops.monitoring.ks_decision import decide_ks
from modelops.monitoring.review import MonitoringError, MonitoringReview, describe_error, review_description
from tasks import artifacts, charts, events, registry, runs, scoring_log
from tasks.notify import notify

MAX_RERUNS = 3
TREND_LENGTH = 20
EVERY_CHAMPION_RUN = "ks-check-every-champion"


def ks_check_run_name() -> str:
    """``ks-check-every-champion``, or ``ks-check-<model>[-v<version>]`` until the version is resolved."""
    parameters = flow_run.parameters
    if parameters.get("every_champion"):
        return EVERY_CHAMPION_RUN
    version = parameters.get("version")
    return f"ks-check-{parameters.get('model_name') or 'default-model'}" + (f"-v{version}" if version else "")


@flow(name="ks-check", flow_run_name=ks_check_run_name)
def ks_check(
    model_name: str | None = None,
    version: str | None = None,
    config: ModelOpsConfig | str | None = None,
    reference: Any = None,
    database_url: str | None = None,
    review_timeout_s: int | None = None,
    teams: bool = True,
    email: bool = True,
    notify_ok: bool = False,
    every_champion: bool = False,
) -> dict[str, Any]:
    """One KS check of the model's champion (or ``version``); returns the result as a dict.

    ``every_champion``: check every registered model that has a champion, each in its own subflow
    run with its own settings (the scheduled deployment does this); returns ``{"checks": {model:
    result}, ...}``. ``model_name``, ``version`` and ``reference`` are then not given.
    ``notify_ok``: also notify when KS is fine (off by default: a check runs every few minutes).
    ``reference``: a CSV/Parquet path or DataFrame of training rows (feature columns, optional
    ``score``) for label-free drift; default: the version's training reference from MLflow.
    ``review_timeout_s``: how long a failed check waits for a person (default ``approval.timeout_s``;
    0 = no review step).
    """
    cfg = config if isinstance(config, ModelOpsConfig) else load_config(config)
    review_timeout = cfg.approval.timeout_s if review_timeout_s is None else review_timeout_s
    switches = {"teams": teams, "email": email}
    if every_champion:
        if model_name or version or reference is not None:
            raise ValueError("every_champion checks each champion: give no model_name, version or reference")
        return check_every_champion(cfg, database_url, review_timeout, switches, notify_ok)
    model = model_name or cfg.model.name
    cfg = cfg.for_model(model)

    def check() -> dict[str, Any]:
        try:
            return check_once(model, version, cfg, reference, database_url, switches, notify_ok)
        except Exception as exc:
            return announce_failure(model, version, cfg, switches, describe_error(exc))

    return review_until_settled(check(), check, review_timeout)


def announce_failure(
    model: str, version: str | None, cfg: ModelOpsConfig, switches: dict[str, bool], error: str
) -> dict[str, Any]:
    """A check that could not run: ``modelops.monitoring.failed``, a notification, an ``error`` result."""
    get_run_logger().error("KS check of %s failed: %s", model, error)
    events.emit("modelops.monitoring.failed", model, version, error=error)
    notify(monitoring_error_message(model, version, error), cfg.notifications, **switches)
    return {
        "model": model,
        "version": version,
        "status": "error",
        "error": error,
        "review": {"action": "none"},
    }


def review_until_settled(
    result: dict[str, Any], check: Callable[[], dict[str, Any]], review_timeout: int
) -> dict[str, Any]:
    """While the check fails, ask a person (the review form): re-run it, up to MAX_RERUNS times, or stop."""
    for _ in range(MAX_RERUNS):
        if result["status"] != "error" or review_timeout <= 0:
            return result
        outcome = ask_for_review(result["model"], result["error"], review_timeout)
        result = result | {"review": outcome}
        if outcome["action"] != "rerun":
            return result
        get_run_logger().info(
            "re-running the KS check as asked by %s", outcome.get("reviewer") or "the reviewer"
        )
        result = check()
    return result


def check_every_champion(
    cfg: ModelOpsConfig,
    database_url: str | None,
    review_timeout: int,
    switches: dict[str, bool],
    notify_ok: bool,
) -> dict[str, Any]:
    """Check each model with a champion in its own subflow run; then the reviews of those that failed."""
    champions = registry.list_champions(cfg.mlflow_uri)
    log = get_run_logger()
    if not champions:
        log.info("no registered model has a champion alias in MLflow at %s: nothing to check", cfg.mlflow_uri)
    reruns = {
        model: partial(check_champion, model, version, cfg, database_url, switches, notify_ok)
        for model, version in champions.items()
    }
    checks = {model: check() for model, check in reruns.items()}
    for model, result in checks.items():
        checks[model] = review_until_settled(result, reruns[model], review_timeout)
    for model, result in checks.items():
        log.info("%s v%s: %s", model, result.get("version"), result["status"])
    return {
        "status": "checked",
        "checks": checks,
        "degraded": sorted(m for m, r in checks.items() if r["status"] == "degraded"),
        "errors": sorted(m for m, r in checks.items() if r["status"] == "error"),
    }


def check_champion(
    model: str,
    version: str,
    cfg: ModelOpsConfig,
    database_url: str | None,
    switches: dict[str, bool],
    notify_ok: bool,
) -> dict[str, Any]:
    """The subflow run ``ks-check-<model>-v<version>``; its crash is an ``error`` result, not the parent's."""
    with tags("modelops", "ks-check", f"model:{model}"):
        state = ks_check(
            model_name=model,
            version=version,
            config=cfg,
            database_url=database_url,
            review_timeout_s=0,  # the parent asks for reviews once every model was checked
            teams=switches["teams"],
            email=switches["email"],
            notify_ok=notify_ok,
            return_state=True,
        )
    if state.is_completed():
        return state.result()
    error = f"the check's run ended {state.type.value}: {state.message or 'no message'}"
    get_run_logger().error("KS check of %s v%s: %s", model, version, error)
    return {
        "model": model,
        "version": version,
        "status": "error",
        "error": error,
        "review": {"action": "none"},
    }


def check_once(
    model: str,
    version: str | None,
    cfg: ModelOpsConfig,
    reference: Any,
    database_url: str | None,
    switches: dict[str, bool],
    notify_ok: bool,
) -> dict[str, Any]:
    """Read the window → decide → drift → store → emit and notify → publish the report."""
    dsn = resolve_database_url(cfg, explicit=database_url)
    version = str(version) if version else champion_of(model, cfg)
    runs.name_this_run(f"ks-check-{model}-v{version}", model)
    if reference is None:  # the training reference logged with the version, found from the registry
        reference = registry.training_reference(model, version, cfg.mlflow_uri)
    window = scoring_log.read_labelled_window(dsn, model, version, cfg)
    decision = decide_ks(window.scores, window.labels, cfg.monitoring.ks_threshold, cfg.monitoring.min_sample)
    drift = scoring_log.measure_drift(dsn, model, version, reference, cfg) if reference is not None else None
    window_info = window.info()
    details = {"reason": decision.reason, "window": window_info, "drift": drift.as_dict() if drift else None}
    check_id = scoring_log.store_ks_check(dsn, model, version, decision, window, details, cfg)
    get_run_logger().info("KS check %s v%s: %s (%s)", model, version, decision.status, decision.reason)
    if decision.status in ("ok", "degraded"):
        figures = decision.figures() | {"window": window_info, "check_id": check_id}
        events.emit(f"modelops.performance.{decision.status}", model, version, **figures)
        if decision.status == "degraded" or notify_ok:
            notify(ks_message(model, version, decision, window.describe()), cfg.notifications, **switches)
    if drift is not None and drift.detected:
        events.emit("modelops.drift.detected", model, version, **drift.event_payload())
    trend = scoring_log.read_ks_trend(dsn, model, TREND_LENGTH, cfg)
    pictures = charts.draw_ks_charts(cfg, dsn, model, version, check_id, decision, reference, drift)
    key = artifacts.publish_ks_report(model, version, decision, window.describe(), trend, drift, pictures)
    return {
        "model": model,
        "version": version,
        **decision.as_dict(),
        "window": window_info,
        "check_id": check_id,
        "artifact": key,
        "drift": drift.as_dict() if drift else None,
    }


def champion_of(model: str, cfg: ModelOpsConfig) -> str:
    try:
        version = registry.current_champion(model, cfg.mlflow_uri)
    except Exception as exc:
        where = f"MLflow at {cfg.mlflow_uri}"
        raise MonitoringError(
            f"cannot read the champion alias of {model!r} from {where}: {describe_error(exc)}"
        ) from None
    if not version:
        raise MonitoringError(
            f"model {model!r} has no champion version (MLflow alias 'champion'): approve and deploy a "
            "model first, or pass version=..."
        )
    return version


def ask_for_review(model: str, error: str, timeout_s: int) -> dict[str, Any]:
    """The review subflow's answer, or ``{"action": "timeout"}`` when nobody answered in time."""
    with tags("modelops", "monitoring-review", f"model:{model}"):
        state = review_monitoring_error(model_name=model, error=error, timeout_s=timeout_s, return_state=True)
    if state.is_completed():
        return state.result()
    return {"action": "timeout", "reviewer": "", "comment": state.message or ""}


@flow(name="monitoring-review", flow_run_name="review-ks-check-{model_name}")
def review_monitoring_error(model_name: str, error: str, timeout_s: int) -> dict[str, Any]:
    """Pause until a person acknowledges the error or asks for a re-run. Fails on timeout."""
    answer = pause_flow_run(
        wait_for_input=MonitoringReview.with_initial_data(description=review_description(model_name, error)),
        timeout=timeout_s,
        poll_interval=min(2, timeout_s),
    )
    get_run_logger().info("monitoring review: %s by %s (%s)", answer.action, answer.reviewer, answer.comment)
    return {"action": answer.action, "reviewer": answer.reviewer, "comment": answer.comment}
