"""The kubernetes (or openshift) target against a REAL cluster: runs only when KUBECONFIG is set.

Needs: a namespace (serving.namespace), a registry the cluster's nodes can pull from
(serving.registry, credentials via serving.registry_token), a Docker engine here to build the image
(scripts/docker-engine.sh start) and a base image the engine has (serving.base_image). Choose the
environment with MODELOPS_CLUSTER_TEST_CONFIG (default: kubernetes) and override keys with
MODELOPS_SERVING__* variables, e.g.:

    KUBECONFIG=~/.kube/config MODELOPS_SERVING__REGISTRY=registry.example.com \\
      .venv/bin/pytest -m cluster tests/test_cluster_deploy.py
"""

from __future__ import annotations

import os
import uuid

import pytest
from support.fakes.docker_env import require_engine
from support.fakes.tiny_savedmodel import write_broken_savedmodel, write_tiny_savedmodel

from modelops.config import load_config
from modelops.targets.base import DeployError
from modelops.targets.kubernetes import KubernetesTarget
from modelops.targets.openshift import OpenShiftTarget

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"), reason="no KUBECONFIG: no Kubernetes cluster to deploy to"
    ),
]


def test_deploy_roll_back_and_stop_on_a_real_cluster(tmp_path):
    client = require_engine()
    config = load_config(os.environ.get("MODELOPS_CLUSTER_TEST_CONFIG", "kubernetes"))
    model_name = f"tiny-{uuid.uuid4().hex[:6]}"
    config = config.model_copy(
        update={"serving": config.serving.model_copy(update={"image_stream": model_name})}
    )
    target = (OpenShiftTarget if config.serving.target == "openshift" else KubernetesTarget)(config)
    try:
        first = target.deploy(model_name, "1", write_tiny_savedmodel(tmp_path / model_name / "1"))
        assert first.version == "1"
        with pytest.raises(DeployError, match="rolled back"):
            target.deploy(model_name, "2", write_broken_savedmodel(tmp_path / model_name / "2"))
        assert target.current(model_name).version == "1"
    finally:
        target.stop(model_name)
        client.close()
