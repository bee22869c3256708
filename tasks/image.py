"""Docker: the serving image with the model inside, built and pushed."""

from __future__ import annotations

from modelops.config import ModelOpsConfig
from modelops.pipeline.prebuild import PrebuiltModel
from modelops.pipeline.rollout import build_and_push_image
from tasks.base import task


@task("build-serving-image")
def build_serving_image(config: ModelOpsConfig, model: PrebuiltModel, image_tag: str) -> str | None:
    """The pushed image reference for container targets; None for the local target (no image)."""
    return build_and_push_image(config, model, image_tag)
