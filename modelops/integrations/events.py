"""Prefect events about a model: what automations (retrain on degraded KS) and the UI react to.

Every event's resource is ``modelops.model.<name>`` with the model name as resource name, so a
trigger can ``match: {prefect.resource.id: modelops.model.*}`` and template
``{{ event.resource.name }}``. The payload always carries ``model`` and ``version``.
"""

from __future__ import annotations

import math
from typing import Any

from prefect.events import Event, emit_event

MODEL_EVENTS: tuple[str, ...] = (
    "modelops.model.registered",
    "modelops.champion.approved",
    "modelops.champion.rejected",
    "modelops.model.deployed",
    "modelops.deploy.failed",
    "modelops.performance.ok",
    "modelops.performance.degraded",
    "modelops.monitoring.failed",
    "modelops.model.retrained",
    "modelops.drift.detected",
)
RESOURCE_PREFIX = "modelops.model."


def model_resource(model_name: str, version: str | int | None = None) -> dict[str, str]:
    resource = {"prefect.resource.id": f"{RESOURCE_PREFIX}{model_name}", "prefect.resource.name": model_name}
    if version is not None:
        resource["modelops.model.version"] = str(version)
    return resource


def emit_model_event(name: str, model_name: str, version: str | int | None, **payload: Any) -> Event | None:
    """Emit one model event; returns the emitted ``prefect.events.Event`` (None if events are off).

    Raises ``ValueError`` for an event name outside :data:`MODEL_EVENTS` so a typo cannot create an
    event no automation listens to.
    """
    if name not in MODEL_EVENTS:
        raise ValueError(f"event {name!r} is not a modelops event: use one of {', '.join(MODEL_EVENTS)}")
    if not model_name:
        raise ValueError("emit_model_event needs a model name (the resource is modelops.model.<name>)")
    body = {"model": model_name, "version": None if version is None else str(version)}
    body.update({key: _plain(value) for key, value in payload.items()})
    return emit_event(event=name, resource=model_resource(model_name, version), payload=body)


def _plain(value: Any) -> Any:
    """JSON-friendly: NumPy scalars to Python numbers, NaN/inf to None, containers recursively."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
