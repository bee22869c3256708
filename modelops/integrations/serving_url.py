"""Where a model's champion is served, as recorded on its registry version (tag ``serving_url``).

The lifecycle sets the tag when it promotes a healthy rollout (:mod:`modelops.pipeline.rollout`);
``modelops traffic --model M`` reads it when the local target has no port for M. MLflow is imported
at the top: a caller that may run without MLflow (the client image) imports this module lazily.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException

from modelops.integrations.registry import CHAMPION, client_for, tracking_server_unreachable

SERVING_URL_TAG = "serving_url"


def champion_serving_url(model_name: str, tracking_uri: str) -> str | None:
    """The champion version's ``serving_url`` tag; None without a reachable registry, champion or tag."""
    if tracking_server_unreachable(tracking_uri):
        return None
    try:
        version = client_for(tracking_uri).get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    return (version.tags or {}).get(SERVING_URL_TAG) or None
