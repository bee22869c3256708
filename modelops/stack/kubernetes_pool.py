"""The stack's Kubernetes work pool: flow runs as Kubernetes Jobs (``stack.work_pool_type: kubernetes``).

The pool's base job template is ``infra/k8s/worker/base-job-template.json``: prefect-kubernetes's
default template with the project's choices (the flow image, the ``modelops-flow-runner`` service
account, resources, ``backoffLimit: 0``, a TTL for finished Jobs, the serving manifests' security
context, a writable home and /tmp on emptyDirs, MLflow's and the database's URLs from the Secrets
``modelops-mlflow`` / ``modelops-database`` by ``secretKeyRef``). The in-cluster worker
(``infra/k8s/worker``) creates the pool with the same file when it does not exist yet;
``modelops up`` with a kubernetes pool creates it or sets the template again (:func:`ensure_pool`)
with the config's namespace and flow image (:func:`base_job_template`).

A plain value a deployment (or the pool's ``env`` variable) gives for one of the Secret-backed names
wins over the Secret reference: prefect-kubernetes keeps a template entry only when no variable of
that name is set.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelops.config import PROJECT_ROOT, ModelOpsConfig
from modelops.stack import work_pools

TEMPLATE = PROJECT_ROOT / "infra" / "k8s" / "worker" / "base-job-template.json"
POOL_TYPE = "kubernetes"
IMAGE_PROJECT_ROOT = "/opt/modelops"  # where infra/docker/flow.Dockerfile puts the project


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    return json.loads(path.read_text())


def base_job_template(
    config: ModelOpsConfig,
    *,
    namespace: str | None = None,
    image: str | None = None,
    env: dict[str, str] | None = None,
    path: Path = TEMPLATE,
) -> dict[str, Any]:
    """The file's template with the defaults of this config.

    ``namespace``: where the Jobs go (default ``serving.namespace``: the flow runs deploy the serving
    objects there with the same account); ``image``: the flow image (default: the file's); ``env``:
    plain variables added to the file's (``MODELOPS_CONFIG`` is the config's environment name). The
    MLflow URL goes in as a plain value only when it holds no password; otherwise it stays the
    ``modelops-mlflow`` Secret reference, like the database URL always does.
    """
    template = copy.deepcopy(load_template(path))
    properties = template["variables"]["properties"]
    properties["namespace"]["default"] = namespace or config.serving.namespace
    if image:
        properties["image"]["default"] = image
    variables = dict(properties["env"].get("default") or {})
    variables["MODELOPS_CONFIG"] = config.environment
    variables["MODELOPS_PROJECT_ROOT"] = IMAGE_PROJECT_ROOT
    variables.update(env or {})
    tracking = variables.get("MLFLOW_TRACKING_URI")
    if tracking and urlsplit(tracking).password:
        del variables["MLFLOW_TRACKING_URI"]  # never a password in the pool: the Secret reference stays
    properties["env"]["default"] = variables
    return template


def ensure_pool(name: str, template: dict[str, Any]) -> str:
    """Create the pool with ``template``, or set it on an existing one; returns what was done."""
    return work_pools.ensure_pool(name, POOL_TYPE, template)
