"""Prefect events about a model: what the automations (retrain on degraded KS) react to."""

from __future__ import annotations

from typing import Any

from modelops.integrations.events import emit_model_event
from tasks.base import task


@task("emit-event")
def emit(name: str, model_name: str, version: str | int | None, **payload: Any) -> None:
    """Emit ``name`` (one of ``MODEL_EVENTS``) on the resource ``modelops.model.<model_name>``."""
    emit_model_event(name, model_name, version, **payload)
