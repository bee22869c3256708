"""The ``retrain`` flow: launched by the automation on ``modelops.performance.degraded``.

    guard → ETL from the scoring log (+ reference data) → train (same recipe) → compare on the
    recent hold-out → register (alias challenger, lineage tags) → notify → start ``lifecycle``

The new version goes back to a person for approval: the lifecycle deployment is started as its own
run (not a subflow), the seed's loop back to "approve champion".
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from modelops.config import ModelOpsConfig, load_config
from flows.steps import step
from modelops.pipeline import retraining
from modelops.integrations.events import emit_model_event
from modelops.integrations.notify import notify

# Recent traffic for retraining: this many KS windows back (the newest behaviour, not all history).
RECENT_WINDOWS = 2
REFERENCE_SHARE = 0.15


@step(name="extract-retraining-data")
def extract_retraining_data(config: ModelOpsConfig, model_name: str, champion: str | None):
    from modelops.integrations.database import resolve_database_url
    from modelops.pipeline.prebuild import version_schema
    from modelops.integrations.registry import client_for, resolve_version
    from modelops.integrations.scoring_log import fetch_recent_labelled_records

    reference_version = champion or "challenger"
    schema = version_schema(model_name, reference_version, config.mlflow_uri)
    recent = fetch_recent_labelled_records(
        resolve_database_url(config),
        model_name,
        RECENT_WINDOWS * config.monitoring.window.size if config.monitoring.window.kind == "count" else 6000,
        schema=config.database.schema_name,
        label_column=schema.target,
    )
    lineage = resolve_version(client_for(config.mlflow_uri), model_name, reference_version).tags or {}
    reference = retraining.reference_frame(lineage.get("data_source"), schema)
    dataset = retraining.build_retraining_set(
        recent,
        reference,
        schema,
        reference_share=REFERENCE_SHARE,
        min_records=max(400, config.monitoring.min_sample),
        seed=config.training.seed,
    )
    get_run_logger().info(
        "retraining set: %d recent + %d reference records; %s",
        dataset.n_recent,
        dataset.n_reference,
        dataset.window,
    )
    return schema, dataset


@step(name="train-candidate")
def train_candidate(config: ModelOpsConfig, model_name: str, schema, dataset, lineage: dict[str, Any]):
    from flows.train import train_on_frame

    return train_on_frame(
        dataset.train,
        schema,
        config.training,
        model_name,
        lineage,
        tracking_uri=config.mlflow_uri,
        experiment=config.model.experiment,
        data_source=f"retrain:{dataset.window}",
        decision_threshold=config.model.decision_threshold,
    )


@step(name="compare-on-recent-holdout")
def compare_on_recent_holdout(
    config, model_name: str, new_version: str, champion: str | None, schema, dataset
):
    from modelops.integrations.registry import set_version_tags

    versions = {"candidate": new_version} | ({"champion": champion} if champion else {})
    figures = retraining.compare_on_holdout(
        model_name, versions, dataset.recent_holdout, schema, config.mlflow_uri
    )
    tags = {
        f"recent_holdout_{role}_{k}": f"{v:.4f}"
        for role, f in figures.items()
        for k, v in f.items()
        if k != "version"
    }
    set_version_tags(model_name, new_version, tags, config.mlflow_uri)
    return figures


@step(name="start-lifecycle")
def start_lifecycle(model_name: str, version: str, config_name: str | None, switches: dict[str, bool]) -> str:
    from prefect.deployments import run_deployment

    from modelops.deployments import LIFECYCLE as LIFECYCLE_DEPLOYMENT

    run = run_deployment(
        LIFECYCLE_DEPLOYMENT,
        parameters={
            "model_name": model_name,
            "candidate_version": version,
            "config": config_name,
            "notify_teams": switches["teams"],
            "notify_email": switches["email"],
        },
        timeout=0,
        as_subflow=False,
        tags=["modelops", f"model:{model_name}", "retrained"],
    )
    get_run_logger().info(
        "lifecycle run %s started for %s v%s: it waits for a reviewer", run.name, model_name, version
    )
    return str(run.id)


@flow(name="retrain", flow_run_name="retrain-{model_name}")
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
    """Retrain on recent labelled traffic; register a challenger; send it to review."""
    cfg = load_config(config)
    name = model_name or cfg.model.name
    switches = {"teams": notify_teams, "email": notify_email}
    log = get_run_logger()
    reason = retraining.retrain_guard(
        name, cfg.mlflow_uri, triggered_version, cfg.monitoring.retrain_cooldown_s if trigger_event_id else 0
    )
    if reason:
        log.info("retrain of %s skipped: %s", name, reason)
        return {"model_name": name, "skipped": reason}
    from modelops.integrations.registry import CHAMPION, get_alias_version

    champion = get_alias_version(name, CHAMPION, cfg.mlflow_uri)
    notify(
        "retraining_needed",
        f"{name}: retraining started (KS {ks if ks is not None else 'n/a'})",
        {"champion": champion or "-", "trigger event": trigger_event_id or "manual"},
        cfg.notifications,
        **switches,
    )
    schema, dataset = extract_retraining_data(cfg, name, champion)
    lineage = {
        "trigger": "modelops.performance.degraded" if trigger_event_id else "manual",
        "trigger_event_id": trigger_event_id or "",
        "trigger_ks": "" if ks is None else f"{ks:.4f}",
        "triggered_version": triggered_version or champion or "",
        "retrained_from": champion or "",
        "data_window": dataset.window,
        "n_recent": dataset.n_recent,
        "n_reference": dataset.n_reference,
    }
    result = train_candidate(cfg, name, schema, dataset, lineage)
    figures = compare_on_recent_holdout(cfg, name, result.version, champion, schema, dataset)
    emit_model_event(
        "modelops.model.retrained",
        name,
        result.version,
        previous_champion=champion,
        trigger_ks=ks,
        candidate_recent_ks=figures["candidate"]["ks"],
        champion_recent_ks=figures.get("champion", {}).get("ks"),
    )
    facts = {
        f"{role} v{int(f['version'])} recent KS / AUC": f"{f['ks']:.3f} / {f['auc']:.3f}"
        for role, f in figures.items()
    }
    notify("retrained", f"{name} v{result.version} retrained", facts, cfg.notifications, **switches)
    lifecycle_run = start_lifecycle(name, result.version, config, switches) if start_review else None
    return {
        "model_name": name,
        "version": result.version,
        "run_id": result.run_id,
        "recent_holdout": figures,
        "lifecycle_run_id": lifecycle_run,
        "lineage": lineage,
    }
