"""One interface for every place a champion can be served: local process, Docker, Kubernetes, OpenShift.

A target rolls a new model version out *beside* what serves now, checks health, smoke-tests it
through the TF Serving REST API, and only then swaps it in. When anything fails it raises
:class:`DeployError` and the previous version keeps serving.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DeployError(RuntimeError):
    """The rollout failed; the previous champion (if any) is still serving."""


@dataclass(frozen=True)
class Rollout:
    """What serves a model after a successful deploy."""

    target: str
    model_name: str
    version: str
    url: str  # base URL of the TF Serving REST API, e.g. http://127.0.0.1:8501
    image: str | None = None
    previous_version: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class ServingTarget(abc.ABC):
    name: str

    @abc.abstractmethod
    def deploy(self, model_name: str, version: str, model_dir: Path, image: str | None = None) -> Rollout:
        """Serve ``model_dir`` (a SavedModel) as ``model_name``/``version``; raise DeployError on failure.

        ``image`` is the pushed serving image for container targets, ``None`` for the local target.
        """

    @abc.abstractmethod
    def current(self, model_name: str) -> Rollout | None:
        """What serves ``model_name`` now, or ``None``."""

    @abc.abstractmethod
    def stop(self, model_name: str) -> None:
        """Stop serving ``model_name`` (used by ``modelops down`` and tests)."""
