"""``make_target(config)``: the serving target named by ``serving.target``."""

from __future__ import annotations

from collections.abc import Callable

from modelops.config import ModelOpsConfig
from modelops.targets.base import ServingTarget
from modelops.targets.docker import DockerTarget
from modelops.targets.kubernetes import KubernetesTarget
from modelops.targets.local import LocalTarget
from modelops.targets.openshift import OpenShiftTarget

_TARGETS: dict[str, Callable[[ModelOpsConfig], ServingTarget]] = {
    "local": LocalTarget,
    "docker": DockerTarget,
    "kubernetes": KubernetesTarget,
    "openshift": OpenShiftTarget,
}


def make_target(config: ModelOpsConfig) -> ServingTarget:
    return _TARGETS[config.serving.target](config)
