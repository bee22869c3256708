"""The ``retrain`` flow: launched by the automation on ``modelops.performance.degraded``.

    guard → ETL from the scoring log (+ reference data) → train (same recipe) → compare on the
    recent hold-out → register (alias challenger, lineage tags) → ``mlflow.models.evaluate``
    against the champion → notify → start ``lifecycle``

The new version goes back to a person for approval: the lifecycle deployment is started as its own
run (not a subflow), the seed's loop back to "approve champion".

One retrain per model at a time, and never one model's retrain in the way of another's. The
deployment has no concurrency limit (a deployment-wide limit counts every model's runs: with
CANCEL_NEW, model B's degraded event was cancelled while model A retrained, and B never retrained).
Instead each run takes the model's Prefect global concurrency slot ``modelops-retrain-<model>``
(limit 1, created on first use) without waiting. A second run for the same model ends at once,
Completed, "skipped: a retrain of M is already running (run X)"; runs for other models go on. A
Prefect slot rather than a lock of our own: Prefect lists it (UI: Concurrency) and its lease frees
it when a holder is killed. Duplicates are dropped, not queued: once the holder has registered a
challenger, the guard (a challenger awaits review, cooldown) would skip them anyway.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.runtime import flow_run

from flows.base import flow
from flows.train import train_on_frame
from modelops.config import ModelOpsConfig, load_config
from modelops.messages import retrained_message, retraining_started_message
from modelops.pipeline.retraining import holdout_tags, retrain_lineage
from tasks import deployments, events, evidence, registry, runs, scoring_log
from tasks.notify import notify


def retrain_run_name() -> str:
    """``retrain-<model>``; ``-v<version>`` is added once the new version is registered."""
    return f"retrain-{flow_run.parameters.get('model_name') or 'default-model'}"


@flow(name="retrain", flow_run_name=retrain_run_name)
def retrain(
    model_name: str | None = None,
    ks: float | None = None,
    trigger_event_id: str | None = None,
    triggered_version: str | None = None,
    notify_teams: bool = False,
    notify_email: bool = False,
    start_review: bool = True,
    config: str | None = None,
) -> dict[str, Any]:
    """Retrain on recent labelled traffic; register a challenger; send it to review (one run per model)."""
    base = load_config(config)
    name = model_name or base.model.name
    cfg = base.for_model(name)
    runs.name_this_run(f"retrain-{name}", name)
    with runs.one_retrain_per_model(name) as busy:
        cooldown_s = cfg.monitoring.retrain_cooldown_s if trigger_event_id else 0
        reason = busy or registry.why_not_retrain(name, cfg.mlflow_uri, triggered_version, cooldown_s)
        if reason:
            get_run_logger().info("retrain of %s skipped: %s", name, reason)
            return {"model_name": name, "skipped": reason}
        result = retrain_model(
            cfg,
            name,
            ks=ks,
            trigger_event_id=trigger_event_id,
            triggered_version=triggered_version,
            switches={"teams": notify_teams, "email": notify_email},
            review_config=config if start_review else None,
            start_review=start_review,
        )
    runs.name_this_run(f"retrain-{name}-v{result['version']}")
    return result


def retrain_model(
    cfg: ModelOpsConfig,
    name: str,
    *,
    ks: float | None,
    trigger_event_id: str | None,
    triggered_version: str | None,
    switches: dict[str, bool],
    review_config: str | None,
    start_review: bool,
) -> dict[str, Any]:
    """ETL → train → compare → register → evaluate → notify → start the lifecycle (``review_config``:
    its ``config`` parameter)."""
    champion = registry.current_champion(name, cfg.mlflow_uri)
    notify(retraining_started_message(name, ks, champion, trigger_event_id), cfg.notifications, **switches)
    schema, dataset = scoring_log.extract_retraining_data(cfg, name, champion or "challenger")
    lineage = retrain_lineage(dataset, champion, ks, trigger_event_id, triggered_version)
    result = train_on_frame(
        dataset.train,
        schema,
        cfg.training,
        name,
        lineage,
        tracking_uri=cfg.mlflow_uri,
        experiment=cfg.model.experiment if name == cfg.model.name else name,  # as `train` names it
        data_source=f"retrain:{dataset.window}",
        decision_threshold=cfg.model.decision_threshold,
    )
    versions = {"candidate": result.version} | ({"champion": champion} if champion else {})
    figures = evidence.compare_on_recent_holdout(cfg, name, versions, schema, dataset)
    registry.tag_version(name, result.version, holdout_tags(figures), cfg.mlflow_uri)
    evaluation = registry.evaluate_against_champion(cfg, name, result.version, champion, schema, dataset)
    events.emit(
        "modelops.model.retrained",
        name,
        result.version,
        previous_champion=champion,
        trigger_ks=ks,
        candidate_recent_ks=figures["candidate"]["ks"],
        champion_recent_ks=figures.get("champion", {}).get("ks"),
    )
    notify(retrained_message(name, result.version, figures), cfg.notifications, **switches)
    review_run = (
        deployments.start_lifecycle(name, result.version, review_config, switches) if start_review else None
    )
    return {
        "model_name": name,
        "version": result.version,
        "run_id": result.run_id,
        "recent_holdout": figures,
        "evaluation": evaluation,
        "lifecycle_run_id": review_run,
        "lineage": lineage,
    }
