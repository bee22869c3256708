"""The ``lifecycle`` flow: one run per candidate, like the seed's Workflow Manager process.

    lifecycle ─┬─ deployment_stage: approve champion → prebuild → build → deploy → promote
               └─ production_stage: record the live champion, monitoring baseline, notify

Each step is a task in ``modelops.tasks``; this module only puts them in order.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger, tags
from prefect.runtime import flow_run
from pydantic import Field

from modelops.config import ModelOpsConfig, load_config
from flows.approval import request_champion_approval
from modelops.approval import ApprovalDecision
from flows.steps import step
from modelops.pipeline import evidence as evidence_tasks
from modelops.pipeline import prebuild as prebuild_tasks
from modelops.pipeline import rollout as rollout_tasks
from modelops.integrations.events import emit_model_event
from modelops.integrations.notify import notify




@step(name="resolve-candidate", retries=2, retry_delay_seconds=3)
def resolve_candidate(config: ModelOpsConfig, model_name: str, candidate_version: str) -> str:
    from modelops.integrations.registry import client_for, resolve_version

    return str(resolve_version(client_for(config.mlflow_uri), model_name, candidate_version).version)


@step(name="collect-evidence")
def collect_evidence(config: ModelOpsConfig, model_name: str, version: str) -> Any:
    from modelops.integrations.database import DatabaseUnavailable, resolve_database_url

    try:
        database_url: str | None = resolve_database_url(config)
    except DatabaseUnavailable:
        database_url = None
    return evidence_tasks.collect_evidence(config, model_name, version, database_url)


@step(name="record-decision")
def record_decision(
    config: ModelOpsConfig, decision: ApprovalDecision, evidence: Any, switches: dict
) -> None:
    from modelops.integrations.database import DatabaseUnavailable, resolve_database_url
    from modelops.integrations.performance_store import record_approval

    log = get_run_logger()
    try:
        record_approval(resolve_database_url(config), decision, evidence, schema=config.database.schema_name)
    except DatabaseUnavailable as exc:
        log.warning("approval not written to the audit table: %s", exc)
    name, version = decision.model_name, decision.model_version
    if decision.approved:
        emit_model_event(
            "modelops.champion.approved",
            name,
            version,
            reviewer=decision.reviewer,
            image_tag=decision.image_tag,
        )
        notify(
            "approved",
            f"{name} v{version} approved as champion",
            {"reviewer": decision.reviewer, "image tag": decision.image_tag, "comment": decision.comment},
            config.notifications,
            **switches,
        )
        return
    rollout_tasks.mark_rejected(config, name, version, decision.reviewer, decision.reason)
    emit_model_event(
        "modelops.champion.rejected", name, version, reviewer=decision.reviewer, reason=decision.reason
    )
    notify(
        "rejected",
        f"{name} v{version} not approved ({decision.reason})",
        {"reviewer": decision.reviewer or "-", "comment": decision.comment or "-"},
        config.notifications,
        **switches,
    )


@step(name="prebuild", retries=1, retry_delay_seconds=5)
def prebuild(config: ModelOpsConfig, model_name: str, version: str) -> prebuild_tasks.PrebuiltModel:
    return prebuild_tasks.prebuild(config, model_name, version)


@step(name="build-serving-image")
def build_serving_image(
    config: ModelOpsConfig, model: prebuild_tasks.PrebuiltModel, image_tag: str
) -> str | None:
    return rollout_tasks.build_and_push_image(config, model, image_tag)


@step(name="deploy")
def deploy(config: ModelOpsConfig, model: prebuild_tasks.PrebuiltModel, image: str | None, switches: dict):
    from modelops.targets import DeployError

    try:
        rollout = rollout_tasks.deploy(config, model, image)
    except DeployError as exc:
        emit_model_event("modelops.deploy.failed", model.model_name, model.version, error=str(exc))
        notify(
            "deploy_failed",
            f"{model.model_name} v{model.version}: rollout failed, the previous champion keeps serving",
            {"target": config.serving.target, "error": str(exc)},
            config.notifications,
            **switches,
        )
        raise
    return rollout


@step(name="promote-champion", retries=2, retry_delay_seconds=3)
def promote_champion(
    config: ModelOpsConfig, rollout: Any, decision: ApprovalDecision, switches: dict
) -> None:
    rollout_tasks.promote_champion(config, rollout, decision.reviewer, decision.image_tag)
    emit_model_event(
        "modelops.model.deployed",
        rollout.model_name,
        rollout.version,
        target=rollout.target,
        url=rollout.url,
        image=rollout.image,
        previous_version=rollout.previous_version,
    )
    notify(
        "deployed",
        f"{rollout.model_name} v{rollout.version} is live on {rollout.target}",
        {
            "url": rollout.url,
            "image": rollout.image or "-",
            "previous version": rollout.previous_version or "-",
        },
        config.notifications,
        **switches,
    )


@flow(name="deployment-stage", flow_run_name="deployment-stage-{model_name}-v{candidate_version}")
def deployment_stage(
    model_name: str, candidate_version: str, config_name: str | None, switches: dict[str, bool]
) -> dict[str, Any]:
    """Approve champion → prebuild → build → deploy → promote (alias moves only after a healthy rollout)."""
    config = load_config(config_name)
    version = resolve_candidate(config, model_name, candidate_version)
    evidence = collect_evidence(config, model_name, version)
    decision = request_champion_approval(
        model_name, version, evidence, config.approval.approvers, config.approval.timeout_s
    )
    record_decision(config, decision, evidence, switches)
    if not decision.approved:
        return {
            "model_name": model_name,
            "version": version,
            "deployed": False,
            "decision": decision.as_dict(),
        }
    model = prebuild(config, model_name, version)
    image = build_serving_image(config, model, decision.image_tag)
    rollout = deploy(config, model, image, switches)
    promote_champion(config, rollout, decision, switches)
    return {
        "model_name": model_name,
        "version": version,
        "deployed": True,
        "url": rollout.url,
        "image": image,
        "decision": decision.as_dict(),
    }


@flow(name="production-stage", flow_run_name="production-stage-{model_name}-v{version}")
def production_stage(
    model_name: str, version: str, ks_threshold: float, config_name: str | None, switches: dict[str, bool]
) -> dict[str, Any]:
    """The champion is live: the scheduled ``ks-check`` deployment now watches it against the threshold."""
    config = load_config(config_name)
    log = get_run_logger()
    log.info(
        "%s v%s is monitored by the ks-check deployment (threshold %.2f, window %s %s, min sample %d)",
        model_name,
        version,
        ks_threshold,
        config.monitoring.window.size,
        config.monitoring.window.kind,
        config.monitoring.min_sample,
    )
    return {
        "model_name": model_name,
        "version": version,
        "ks_threshold": ks_threshold,
        "monitoring": "ks-check",
    }


@flow(name="lifecycle", flow_run_name="lifecycle-{model_name}-{candidate_version}")
def lifecycle(
    model_name: str | None = None,
    candidate_version: str = "challenger",
    ks_threshold: Annotated[float | None, Field(gt=0, lt=1)] = None,
    notify_teams: bool = False,
    notify_email: bool = False,
    config: str | None = None,
) -> dict[str, Any]:
    """The seed's start form: model, candidate (version or alias), KS threshold, notification switches.

    Runs ``deployment_stage`` then, when a new champion is live, ``production_stage``.
    """
    cfg = load_config(config)
    name = model_name or cfg.model.name
    threshold = ks_threshold if ks_threshold is not None else cfg.monitoring.ks_threshold
    switches = {"teams": notify_teams, "email": notify_email}
    with tags("modelops", f"model:{name}"):
        outcome = deployment_stage(name, str(candidate_version), config, switches)
        if outcome["deployed"]:
            outcome["production"] = production_stage(name, outcome["version"], threshold, config, switches)
    outcome["lifecycle_run_id"] = str(flow_run.id) if flow_run.id else None
    return outcome
