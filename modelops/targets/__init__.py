"""Serving targets: where a champion runs. ``modelops.targets.factory.make_target(config)`` picks one
from ``serving.target``.

This package's top imports only the shared contract (:mod:`modelops.targets.base`), so a process that
needs one target (the stack's supervisor uses :mod:`modelops.targets.local`) does not load the
others' clients (Docker, Kubernetes, Prefect blocks).
"""

from __future__ import annotations

from modelops.targets.base import DeployError, Rollout, ServingTarget

__all__ = ["CONTAINER_TARGETS", "DeployError", "Rollout", "ServingTarget"]

CONTAINER_TARGETS = frozenset({"docker", "kubernetes", "openshift"})
