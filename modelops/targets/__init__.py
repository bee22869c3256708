"""Serving targets: where a champion runs. ``make_target(config)`` picks one from ``serving.target``."""

from __future__ import annotations

from modelops.config import ModelOpsConfig
from modelops.targets.base import DeployError, Rollout, ServingTarget

__all__ = ["CONTAINER_TARGETS", "DeployError", "Rollout", "ServingTarget", "make_target"]

CONTAINER_TARGETS = frozenset({"docker", "kubernetes", "openshift"})


def make_target(config: ModelOpsConfig) -> ServingTarget:
    kind = config.serving.target
    if kind == "local":
        from modelops.targets.local import LocalTarget

        return LocalTarget(config)
    if kind == "docker":
        from modelops.targets.docker import DockerTarget

        return DockerTarget(config)
    if kind == "kubernetes":
        from modelops.targets.kubernetes import KubernetesTarget

        return KubernetesTarget(config)
    from modelops.targets.kubernetes import OpenShiftTarget

    return OpenShiftTarget(config)
