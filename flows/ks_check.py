"""The seed's production stage: timer → performance task → KS gateway, plus "review and fix".

``ks_check`` reads the champion's labelled scoring log over the configured window, computes KS and
AUC, stores a ``ks_checks`` row, emits ``modelops.performance.ok`` or ``.degraded`` (an automation
retrains on the latter), publishes a Markdown artifact ``ks-<model>`` with the KS trend and, when a
training reference is given, label-free drift (score KS, PSI per feature) → ``modelops.drift.detected``.

When the check itself fails (database down, no champion) it emits ``modelops.monitoring.failed``,
notifies, and pauses in a ``monitoring-review`` subflow whose form lets a person acknowledge or
re-run; the pause times out so a scheduled run never blocks forever.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from modelops.config import ModelOpsConfig, load_config
from modelops.monitoring.drift import DriftReport, drift_report, load_reference
from modelops.monitoring.ks_decision import KsDecision, decide_ks
from modelops.monitoring.report import artifact_key, ks_report_markdown
from modelops.integrations import performance_store
from modelops.integrations.events import emit_model_event
from modelops.integrations.notify import notify

MAX_RERUNS = 3
TREND_LENGTH = 20
DEFAULT_REVIEW_TIMEOUT_S = 3600
_NOT_FEATURES = {"score", "label", "BAD", "target", "request_id", "scored_at"}


class MonitoringError(RuntimeError):
    """The KS check could not be made; the message says what failed and what to fix."""


class MonitoringReview(RunInput):
    """The "review and fix model performance error" form."""

    action: Literal["acknowledge", "rerun"] = Field(
        "acknowledge", description="acknowledge: stop here (fix it first); rerun: run the KS check again now"
    )
    reviewer: str = Field("", description="Your name")
    comment: str = Field("", description="What you found or fixed")


@task(name="resolve-champion-version", cache_policy=NO_CACHE)
def resolve_champion_version(model_name: str, tracking_uri: str) -> str:
    from modelops.integrations.registry import CHAMPION, get_alias_version

    try:
        version = get_alias_version(model_name, CHAMPION, tracking_uri=tracking_uri)
    except Exception as exc:
        raise MonitoringError(
            f"cannot read the champion alias of {model_name!r} from MLflow at {tracking_uri}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if not version:
        raise MonitoringError(
            f"model {model_name!r} has no champion version (MLflow alias 'champion'): approve and deploy a "
            "model first, or pass version=..."
        )
    return str(version)


@task(name="read-labelled-window", cache_policy=NO_CACHE)
def read_labelled_window(dsn: str, model_name: str, version: str, config: ModelOpsConfig):
    return performance_store.read_labelled_window(
        dsn, model_name, version, config.monitoring.window, schema=config.database.schema_name
    )


@task(name="score-drift", cache_policy=NO_CACHE)
def compute_drift(
    dsn: str, model_name: str, version: str, reference: Any, config: ModelOpsConfig
) -> DriftReport:
    frame = load_reference(reference) if isinstance(reference, str) else reference
    schema, window = config.database.schema_name, config.monitoring.window
    reference_scores = frame["score"].to_numpy(dtype=float) if "score" in frame.columns else None
    feature_columns = [c for c in frame.columns if c not in _NOT_FEATURES]
    current_scores = (
        performance_store.read_window_scores(dsn, model_name, version, window, schema=schema)
        if reference_scores is not None
        else None
    )
    current_features = (
        performance_store.read_window_features(dsn, model_name, version, window, schema=schema)
        if feature_columns
        else None
    )
    return drift_report(
        reference_scores,
        current_scores,
        frame[feature_columns] if feature_columns else None,
        current_features,
        psi_limit=config.monitoring.psi_limit,
        score_ks_limit=config.monitoring.score_ks_limit,
    )


@task(name="store-ks-check", cache_policy=NO_CACHE)
def store_check(
    dsn: str,
    model_name: str,
    version: str,
    decision: KsDecision,
    window: Any,
    details: dict[str, Any],
    config: ModelOpsConfig,
) -> int:
    return performance_store.store_ks_check(
        dsn,
        model_name=model_name,
        model_version=version,
        status=decision.status,
        ks=decision.ks,
        auc=decision.auc,
        threshold=decision.threshold,
        n=decision.n,
        n_events=decision.n_events,
        window_start=window.start,
        window_end=window.end,
        details=details,
        schema=config.database.schema_name,
    )


@task(name="publish-ks-report", cache_policy=NO_CACHE)
def publish_report(
    dsn: str,
    model_name: str,
    version: str,
    decision: KsDecision,
    window_text: str,
    drift: DriftReport | None,
    config: ModelOpsConfig,
) -> str:
    trend = performance_store.read_recent_checks(
        dsn, model_name, TREND_LENGTH, schema=config.database.schema_name
    )
    key = artifact_key(model_name)
    create_markdown_artifact(
        markdown=ks_report_markdown(model_name, version, decision, window_text, trend, drift),
        key=key,
        description=f"KS check of {model_name} v{version}: {decision.status}",
    )
    return key


@flow(name="monitoring-review", flow_run_name="review-ks-check-{model_name}")
def review_monitoring_error(model_name: str, error: str, timeout_s: int) -> dict[str, Any]:
    """Pause until a person acknowledges the error or asks for a re-run. Fails on timeout."""
    description = (
        f"## KS check of {model_name} failed\n\n```\n{error}\n```\n\n"
        "Fix the cause (database, MLflow alias, scoring log), then choose **rerun** to check again, or "
        "**acknowledge** to end this run (the next scheduled check runs anyway)."
    )
    answer = pause_flow_run(
        wait_for_input=MonitoringReview.with_initial_data(description=description),
        timeout=timeout_s,
        poll_interval=min(2, timeout_s),
    )
    get_run_logger().info("monitoring review: %s by %s (%s)", answer.action, answer.reviewer, answer.comment)
    return {"action": answer.action, "reviewer": answer.reviewer, "comment": answer.comment}


@flow(name="ks-check", flow_run_name="ks-check-{model_name}")
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
) -> dict[str, Any]:
    """One KS check of the champion (or ``version``); returns the result as a dict.

    ``notify_ok``: also notify when KS is fine (off by default: a check runs every few minutes).
    ``reference``: a CSV/Parquet path or DataFrame of training rows (feature columns, optional
    ``score``) for label-free drift. ``review_timeout_s``: how long a failed check waits for a
    person (default ``approval.timeout_s``; 0 = no review step).
    """
    cfg = config if isinstance(config, ModelOpsConfig) else load_config(config)
    model = model_name or cfg.model.name
    review_timeout = cfg.approval.timeout_s if review_timeout_s is None else review_timeout_s
    log = get_run_logger()
    for attempt in range(1, MAX_RERUNS + 2):
        try:
            return _check_once(model, version, cfg, reference, database_url, teams, email, notify_ok)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, MonitoringError) else str(exc)
            log.error("KS check of %s failed: %s", model, error)
            emit_model_event("modelops.monitoring.failed", model, version, error=error, attempt=attempt)
            notify(
                "monitoring_error",
                f"KS check of {model} failed",
                {"model": model, "version": version or "champion", "error": error},
                cfg.notifications,
                teams=teams,
                email=email,
            )
            outcome = _review(model, error, review_timeout) if review_timeout > 0 else {"action": "none"}
            if outcome["action"] != "rerun" or attempt > MAX_RERUNS:
                return {
                    "model": model,
                    "version": version,
                    "status": "error",
                    "error": error,
                    "review": outcome,
                }
            log.info("re-running the KS check as asked by %s", outcome.get("reviewer") or "the reviewer")
    raise AssertionError("unreachable")


def _review(model: str, error: str, timeout_s: int) -> dict[str, Any]:
    with tags("modelops", "monitoring-review", f"model:{model}"):
        state = review_monitoring_error(model_name=model, error=error, timeout_s=timeout_s, return_state=True)
    if state.is_completed():
        return state.result()
    return {"action": "timeout", "reviewer": "", "comment": state.message or ""}


def _check_once(
    model: str,
    version: str | None,
    cfg: ModelOpsConfig,
    reference: Any,
    database_url: str | None,
    teams: bool,
    email: bool,
    notify_ok: bool,
) -> dict[str, Any]:
    from modelops.integrations.database import resolve_database_url

    log = get_run_logger()
    dsn = resolve_database_url(cfg, explicit=database_url)
    version = str(version) if version else resolve_champion_version(model, cfg.mlflow_uri)
    window = read_labelled_window(dsn, model, version, cfg)
    decision = decide_ks(window.scores, window.labels, cfg.monitoring.ks_threshold, cfg.monitoring.min_sample)
    drift = compute_drift(dsn, model, version, reference, cfg) if reference is not None else None
    window_info = {
        "kind": cfg.monitoring.window.kind,
        "size": cfg.monitoring.window.size,
        "start": window.start.isoformat() if window.start else None,
        "end": window.end.isoformat() if window.end else None,
    }
    details = {"reason": decision.reason, "window": window_info, "drift": drift.as_dict() if drift else None}
    check_id = store_check(dsn, model, version, decision, window, details, cfg)
    log.info("KS check %s v%s: %s (%s)", model, version, decision.status, decision.reason)
    figures = {
        "ks": decision.ks,
        "threshold": decision.threshold,
        "n": decision.n,
        "n_events": decision.n_events,
        "auc": decision.auc,
        "window": window_info,
        "check_id": check_id,
    }
    if decision.status == "ok":
        emit_model_event("modelops.performance.ok", model, version, **figures)
        if notify_ok:
            notify(
                "performance_ok",
                f"{model} v{version}: KS {decision.ks:.3f} is fine",
                _facts(model, version, decision, window),
                cfg.notifications,
                teams=teams,
                email=email,
            )
    elif decision.status == "degraded":
        emit_model_event("modelops.performance.degraded", model, version, **figures)
        notify(
            "retraining_needed",
            f"{model} v{version}: KS {decision.ks:.3f} below {decision.threshold}",
            _facts(model, version, decision, window),
            cfg.notifications,
            teams=teams,
            email=email,
        )
    if drift is not None and drift.detected:
        emit_model_event(
            "modelops.drift.detected",
            model,
            version,
            score_ks=drift.score_ks,
            score_ks_limit=drift.score_ks_limit,
            psi=drift.psi,
            psi_limit=drift.psi_limit,
            drifted_features=list(drift.drifted_features),
        )
    key = publish_report(dsn, model, version, decision, window.describe(), drift, cfg)
    return {
        "model": model,
        "version": version,
        **decision.as_dict(),
        "window": window_info,
        "check_id": check_id,
        "artifact": key,
        "drift": drift.as_dict() if drift else None,
    }


def _facts(model: str, version: str, decision: KsDecision, window: Any) -> dict[str, Any]:
    return {
        "model": model,
        "version": version,
        "status": decision.status,
        "KS": decision.ks,
        "threshold": decision.threshold,
        "AUC": decision.auc,
        "labelled records": decision.n,
        "window": window.describe(),
    }
