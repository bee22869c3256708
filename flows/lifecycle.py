"""The ``lifecycle`` flow: one run per candidate, like the seed's Workflow Manager process.

    lifecycle ─┬─ deployment_stage: approve champion → prebuild → build → deploy → promote
               └─ production_stage: the live champion is watched by the scheduled ks-check

Each step is a task in ``tasks/``; this module only puts them in order.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import get_run_logger, tags
from prefect.runtime import flow_run
from pydantic import Field

from flows.approval import request_champion_approval
from flows.base import flow
from modelops.approval import ApprovalDecision, approval_window
from modelops.config import ModelOpsConfig, load_config
from modelops.messages import decision_message, deploy_failed_message, deployed_message
from modelops.pipeline.prebuild import PrebuiltModel
from modelops.targets import DeployError, Rollout
from tasks import artifacts, events, evidence, image, registry, runs, scoring_log, serving
from tasks.notify import notify


def stage_run_name() -> str:
    """``deployment-stage-<model>-v<N>`` (renamed so once an alias is resolved)."""
    parameters = flow_run.parameters
    return (
        f"deployment-stage-{parameters['model_name']}-{runs.version_label(parameters['candidate_version'])}"
    )


@flow(name="deployment-stage", flow_run_name=stage_run_name)
def deployment_stage(
    model_name: str,
    candidate_version: str,
    config_name: str | None,
    switches: dict[str, bool],
    approval_deadline: str | None = None,
) -> dict[str, Any]:
    """Approve champion → prebuild → build → deploy → promote (alias moves only after a healthy rollout)."""
    config = load_config(config_name)
    version = registry.resolve_candidate(config, model_name, candidate_version)
    runs.name_this_run(f"deployment-stage-{model_name}-v{version}", model_name)
    runs.name_parent_run(f"lifecycle-{model_name}-v{version}", model_name)
    comparison = evidence.collect_evidence(config, model_name, version)
    timeout_s, reminder_share = approval_window(
        config.approval.timeout_s, config.approval.reminder_share, approval_deadline
    )
    decision = request_champion_approval(
        model_name,
        version,
        comparison,
        config.approval.approvers,
        timeout_s,
        notifications=config.notifications,
        switches=switches,
        reminder_share=reminder_share,
    )
    artifacts.publish_approval_decision(decision, comparison, flow_run.parent_flow_run_id)
    scoring_log.record_decision(config, decision, comparison)
    announce_decision(config, decision, switches)
    outcome: dict[str, Any] = {"model_name": model_name, "version": version, "decision": decision.as_dict()}
    if not decision.approved:
        return outcome | {"deployed": False}
    model = registry.prebuild(config, model_name, version)
    rollout = release(config, model, decision, switches)
    return outcome | {"deployed": True, "url": rollout.url, "image": rollout.image}


def release(
    config: ModelOpsConfig, model: PrebuiltModel, decision: ApprovalDecision, switches: dict[str, bool]
) -> Rollout:
    """Build → deploy → promote → announce; the alias moves only after a healthy rollout."""
    image_reference = image.build_serving_image(config, model, decision.image_tag)
    rollout = roll_out(config, model, image_reference, switches)
    registry.promote_champion(config, rollout, decision.reviewer, decision.image_tag, decision.comment)
    events.emit(
        "modelops.model.deployed",
        rollout.model_name,
        rollout.version,
        target=rollout.target,
        url=rollout.url,
        image=rollout.image,
        previous_version=rollout.previous_version,
    )
    notify(deployed_message(rollout), config.notifications, **switches)
    return rollout


def announce_decision(config: ModelOpsConfig, decision: ApprovalDecision, switches: dict[str, bool]) -> None:
    """The approved / rejected event and notification; a rejection also frees the challenger alias."""
    name, version = decision.model_name, decision.model_version
    if decision.approved:
        events.emit(
            "modelops.champion.approved",
            name,
            version,
            reviewer=decision.reviewer,
            image_tag=decision.image_tag,
        )
    else:
        registry.mark_rejected(config, name, version, decision.reviewer, decision.reason, decision.comment)
        events.emit(
            "modelops.champion.rejected", name, version, reviewer=decision.reviewer, reason=decision.reason
        )
    notify(decision_message(decision), config.notifications, **switches)


def roll_out(
    config: ModelOpsConfig, model: Any, image_reference: str | None, switches: dict[str, bool]
) -> Rollout:
    """Deploy; a failed rollout is announced (the previous champion keeps serving) and re-raised."""
    try:
        return serving.deploy(config, model, image_reference)
    except DeployError as exc:
        events.emit("modelops.deploy.failed", model.model_name, model.version, error=str(exc))
        message = deploy_failed_message(model.model_name, model.version, config.serving.target, str(exc))
        notify(message, config.notifications, **switches)
        raise


@flow(name="production-stage", flow_run_name="production-stage-{model_name}-v{version}")
def production_stage(
    model_name: str, version: str, ks_threshold: float, config_name: str | None, switches: dict[str, bool]
) -> dict[str, Any]:
    """The champion is live: the scheduled ``ks-check`` deployment now watches it against the threshold."""
    config = load_config(config_name).for_model(model_name)
    get_run_logger().info(
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


def lifecycle_run_name() -> str:
    """``lifecycle-<model>-<candidate>``; the deployment stage renames it ``lifecycle-<model>-v<N>``."""
    parameters = flow_run.parameters
    model = parameters.get("model_name") or "default-model"
    return f"lifecycle-{model}-{runs.version_label(parameters.get('candidate_version', 'challenger'))}"


@flow(name="lifecycle", flow_run_name=lifecycle_run_name)
def lifecycle(
    model_name: str | None = None,
    candidate_version: str = "challenger",
    ks_threshold: Annotated[float | None, Field(gt=0, lt=1)] = None,
    notify_teams: bool = False,
    notify_email: bool = False,
    config: str | None = None,
    approval_deadline: str | None = None,
) -> dict[str, Any]:
    """The seed's start form: model, candidate (version or alias), KS threshold, notification switches.

    Runs ``deployment_stage`` then, when a new champion is live, ``production_stage``.
    ``approval_deadline`` (ISO time) is set when the stack's reconciler reopens an approval whose
    run died in a restart: the approvers keep the answer-by time they were first given.
    """
    cfg = load_config(config)
    name = model_name or cfg.model.name
    threshold = ks_threshold if ks_threshold is not None else cfg.monitoring_for(name).ks_threshold
    switches = {"teams": notify_teams, "email": notify_email}
    with tags("modelops", f"model:{name}"):
        outcome = deployment_stage(name, str(candidate_version), config, switches, approval_deadline)
        if outcome["deployed"]:
            outcome["production"] = production_stage(name, outcome["version"], threshold, config, switches)
    outcome["lifecycle_run_id"] = str(flow_run.id) if flow_run.id else None
    return outcome
