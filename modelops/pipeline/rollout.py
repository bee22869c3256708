"""Build (container targets), deploy through the configured target, and promote the champion.

The ``champion`` alias moves only after a healthy rollout; a failed rollout leaves the alias and
the serving process of the previous champion untouched.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from modelops.config import ModelOpsConfig
from modelops.integrations.image import build_serving_image, push_image
from modelops.integrations.registry import (
    CHALLENGER,
    CHAMPION,
    delete_alias,
    get_alias_version,
    refresh_model_card,
    set_alias,
    set_version_tags,
)
from modelops.pipeline.prebuild import PrebuiltModel
from modelops.targets import CONTAINER_TARGETS, Rollout
from modelops.targets.factory import make_target

log = logging.getLogger(__name__)


def build_and_push_image(config: ModelOpsConfig, model: PrebuiltModel, image_tag: str) -> str | None:
    """The pushed image reference for container targets; ``None`` for the local target."""
    if config.serving.target not in CONTAINER_TARGETS:
        log.info("build: target %s serves the SavedModel directly, no image to build", config.serving.target)
        return None
    reference = build_serving_image(
        config, model.model_dir, model.version, image_tag, model_name=model.model_name
    )
    digest = push_image(config, reference)
    log.info("build: pushed %s (%s)", reference, digest)
    return reference


def deploy(config: ModelOpsConfig, model: PrebuiltModel, image: str | None) -> Rollout:
    return make_target(config).deploy(model.model_name, model.version, model.model_dir, image)


def promote_champion(
    config: ModelOpsConfig, rollout: Rollout, approved_by: str, image_tag: str, comment: str = ""
) -> None:
    """Move ``champion`` to the rollout's version and keep ``validation_status`` current.

    The new champion is tagged ``approved`` (who, when, comment, where it runs); the version that
    was champion until now is tagged ``superseded`` (by which version, when). Both model cards are
    re-rendered.
    """
    uri = config.mlflow_uri
    name, version = rollout.model_name, str(rollout.version)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    previous = get_alias_version(name, CHAMPION, uri)
    set_version_tags(
        name,
        version,
        {
            "validation_status": "approved",
            "approved_by": approved_by,
            "approved_at": now,
            **({"approval_comment": comment} if comment else {}),
            "image_tag": image_tag,
            "deployed_at": now,
            "target": rollout.target,
            "serving_url": rollout.url,
            **({"image": rollout.image} if rollout.image else {}),
        },
        uri,
    )
    set_alias(name, CHAMPION, version, uri)
    if get_alias_version(name, CHALLENGER, uri) == version:
        delete_alias(name, CHALLENGER, uri)
    if previous and previous != version:
        set_version_tags(
            name,
            previous,
            {"validation_status": "superseded", "superseded_by": version, "superseded_at": now},
            uri,
        )
    refresh_model_card(name, version, uri)  # its aliases moved
    log.info(
        "promote: %s version %s is the champion%s",
        name,
        version,
        f" (supersedes {previous})" if previous else "",
    )


def mark_rejected(
    config: ModelOpsConfig, model_name: str, version: str, reviewer: str, reason: str, comment: str = ""
) -> None:
    """Tag the version rejected and free the ``challenger`` alias, so a later retrain may propose anew."""
    set_version_tags(
        model_name,
        version,
        {
            "validation_status": "rejected",
            "rejected_by": reviewer or "(nobody)",
            "rejection_reason": reason,
            "rejected_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **({"rejection_comment": comment} if comment else {}),
        },
        config.mlflow_uri,
    )
    if get_alias_version(model_name, CHALLENGER, config.mlflow_uri) == str(version):
        delete_alias(model_name, CHALLENGER, config.mlflow_uri)
        refresh_model_card(model_name, version, config.mlflow_uri)  # its alias went
