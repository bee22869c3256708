"""The serving target (a local process, Docker, Kubernetes or OpenShift): roll a version out."""

from __future__ import annotations

from modelops.config import ModelOpsConfig
from modelops.pipeline import rollout
from modelops.pipeline.prebuild import PrebuiltModel
from modelops.targets import Rollout
from tasks.base import task


@task("deploy")
def deploy(config: ModelOpsConfig, model: PrebuiltModel, image: str | None) -> Rollout:
    """Start the version beside the current one, wait until ready, smoke-test, switch; else roll back."""
    return rollout.deploy(config, model, image)
