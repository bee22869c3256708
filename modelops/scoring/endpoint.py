"""Where to send a model's scoring traffic when no URL is given.

In order: the local target's port for the model (each model has its own, see
:mod:`modelops.stack.serving_ports`), the champion version's ``serving_url`` tag in the registry
(set when a rollout is promoted, whatever the target), else the config's serving URL.
"""

from __future__ import annotations

from modelops.config import ModelOpsConfig
from modelops.stack.serving_ports import local_serving_url


def find_serving_url(config: ModelOpsConfig, model: str) -> tuple[str, str]:
    """The URL serving ``model``, and where it came from (for the user's progress line)."""
    local = local_serving_url(config, model)
    if local:
        return local, "the local target's port for the model"
    recorded = _champion_url(config, model)
    if recorded:
        return recorded, "the champion version's serving_url tag"
    return config.serving_url, "the config's serving URL"


def _champion_url(config: ModelOpsConfig, model: str) -> str | None:
    try:  # MLflow is heavy and absent from the client image: only loaded when the port map has no answer
        from modelops.integrations.serving_url import champion_serving_url
    except ImportError:
        return None
    return champion_serving_url(model, config.mlflow_uri)
