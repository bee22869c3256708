"""The serving manifests of one model: ``infra/k8s`` rendered, then named for the model and version.

The manifests are written for the model ``hmeq-risk``; for another model the names, selectors and
probe paths are rewritten after rendering, and the image, namespace, replica count (also the
HPA's floor) and model version (an annotation on the Deployment and its pod template) are set; the
OpenShift BuildConfig builds into the configured ImageStream.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from modelops.config import PROJECT_ROOT
from modelops.targets.kustomize import ManifestError

K8S_DIR = PROJECT_ROOT / "infra" / "k8s"
BASE_MODEL = "hmeq-risk"
BASE_APP = f"{BASE_MODEL}-serving"
BASE_IMAGE_NAME = "modelops/hmeq-risk"
CONTAINER = "tfserving"
HTTP_PORT = 8501
VERSION_ANNOTATION = "modelops.io/model-version"
MODEL_ANNOTATION = "modelops.io/model-name"
# Production add-ons whose API a cluster may not serve (no Prometheus Operator, not OpenShift, or
# older than autoscaling/v2 and policy/v1, such as 1.20): the targets skip them when it answers 404.
ADD_ON_KINDS = frozenset({"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "BuildConfig"})
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Apply order: what the Deployment refers to first.
_ORDER = [
    "ServiceAccount",
    "ConfigMap",
    "ImageStream",
    "BuildConfig",
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "ServiceMonitor",
    "Route",
]


def app_name(model_name: str) -> str:
    """The name of the model's Deployment, Service and Route."""
    return f"{model_name}-serving".lower()


def customize(
    objects: list[dict[str, Any]],
    *,
    model_name: str,
    image: str,
    namespace: str,
    replicas: int,
    version: str,
    image_stream: str,
) -> list[dict[str, Any]]:
    """The rendered overlay for one model: names, probe paths, image, namespace, replicas, version."""
    app = app_name(model_name)
    if not _DNS_LABEL.match(app):
        raise ManifestError(
            f"model name {model_name!r} gives the object name {app!r}, which is not a DNS label "
            "([a-z0-9-], at most 63 characters): rename the model"
        )
    renames = {BASE_APP: app, f"/v1/models/{BASE_MODEL}": f"/v1/models/{model_name}"}
    result = []
    for obj in objects:
        obj = _rename(copy.deepcopy(obj), renames)
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "ImageStream":
            obj["metadata"]["name"] = image_stream
        if obj["kind"] == "Deployment":
            _set_deployment(obj, model_name=model_name, image=image, replicas=replicas, version=version)
        if obj["kind"] == "HorizontalPodAutoscaler":
            obj["spec"]["minReplicas"] = replicas
            obj["spec"]["maxReplicas"] = max(obj["spec"]["maxReplicas"], replicas)
        if obj["kind"] == "BuildConfig":
            _set_build(obj, model_name=model_name, image_stream=image_stream)
        result.append(obj)
    return sorted(result, key=lambda o: _ORDER.index(o["kind"]) if o["kind"] in _ORDER else len(_ORDER))


def _rename(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _rename(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, renames) for v in value]
    if isinstance(value, str):
        return renames.get(value, value)
    return value


def _set_deployment(obj: dict[str, Any], *, model_name: str, image: str, replicas: int, version: str) -> None:
    obj["spec"]["replicas"] = replicas
    for meta in (obj["metadata"], obj["spec"]["template"]["metadata"]):
        # On the pod template too: every version is a rollout, even with an unchanged tag.
        meta.setdefault("annotations", {}).update({VERSION_ANNOTATION: version, MODEL_ANNOTATION: model_name})
    for container in obj["spec"]["template"]["spec"]["containers"]:
        if container["name"] == CONTAINER:
            container["image"] = image


def _set_build(obj: dict[str, Any], *, model_name: str, image_stream: str) -> None:
    target = obj["spec"]["output"]["to"]
    target["name"] = f"{image_stream}:{target['name'].partition(':')[2] or 'latest'}"
    for arg in obj["spec"]["strategy"].get("dockerStrategy", {}).get("buildArgs") or []:
        if arg["name"] == "SERVED_MODEL_NAME":
            arg["value"] = model_name


def without_replicas(deployment: dict[str, Any]) -> dict[str, Any]:
    return {**deployment, "spec": {k: v for k, v in deployment["spec"].items() if k != "replicas"}}


def deployment_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")


def served(deployment: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(image, model version) a Deployment's pod template runs; ``(None, None)`` without one."""
    if deployment is None:
        return None, None
    template = deployment["spec"]["template"]
    image = next((c["image"] for c in template["spec"]["containers"] if c["name"] == CONTAINER), None)
    annotations = template.get("metadata", {}).get("annotations") or {}
    return image, annotations.get(VERSION_ANNOTATION)
