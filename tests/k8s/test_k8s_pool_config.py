"""The kubernetes config selects the Kubernetes work pool, and what `modelops up` does with it on a real
Prefect server (the session's harness): the pool is created with the project's base job template, the
config's namespace, the flow image `up` builds and the stack's MLflow URL; a second `up` sets the
template again. The local config keeps its process pool."""

from __future__ import annotations

import pytest

from modelops.config import load_config
from modelops.stack import apply_deployments, docker_pool, kubernetes_pool
from modelops.stack import components as comp


def test_the_kubernetes_config_selects_the_kubernetes_pool_and_worker():
    config = load_config("kubernetes", environ={})
    assert (config.stack.work_pool, config.stack.work_pool_type) == ("modelops-kubernetes", "kubernetes")
    assert comp.prefect_file(config).name == "prefect.docker.yaml"  # builds and pushes the flow image
    spec = comp.worker(config, None)
    assert spec.argv[spec.argv.index("--type") + 1] == "kubernetes"
    assert spec.argv[spec.argv.index("--pool") + 1] == "modelops-kubernetes"
    assert spec.env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == config.serving.namespace
    local = load_config("local", environ={})
    assert local.stack.work_pool_type == "process"
    worker = comp.worker(local, None)
    assert worker.argv[worker.argv.index("--type") + 1] == "process"


@pytest.mark.slow
def test_up_creates_the_pool_with_the_template_and_sets_it_again(prefect_harness, monkeypatch):
    from modelops.integrations.prefect_client import prefect_client

    monkeypatch.setenv("MODELOPS_CONFIG", "kubernetes")
    monkeypatch.setenv("MODELOPS_SERVING__NAMESPACE", "risk-team")
    pool = "modelops-kubernetes-upcheck"
    config = load_config()
    apply_deployments.ensure_work_pool(pool, "kubernetes")
    with prefect_client(sync_client=True) as client:
        created = client.read_work_pool(pool)
    assert created.type == "kubernetes"
    defaults = {k: v.get("default") for k, v in created.base_job_template["variables"]["properties"].items()}
    assert defaults["namespace"] == "risk-team"
    assert defaults["image"] == f"{config.stack.flow_image}:{docker_pool.flow_image_tag(config)}"
    assert defaults["service_account_name"] == "modelops-flow-runner"
    assert defaults["env"]["MLFLOW_TRACKING_URI"] == config.mlflow_uri
    assert defaults["env"]["MODELOPS_CONFIG"] == "kubernetes"
    assert "MODELOPS_DATABASE_URL" not in defaults["env"]  # the Secret modelops-database, by reference
    assert (
        created.base_job_template["job_configuration"]["job_manifest"]
        == kubernetes_pool.load_template()["job_configuration"]["job_manifest"]
    )

    monkeypatch.setenv("MODELOPS_SERVING__NAMESPACE", "risk-team-2")
    apply_deployments.ensure_work_pool(pool, "kubernetes")
    with prefect_client(sync_client=True) as client:
        again = client.read_work_pool(pool)
        client.delete_work_pool(pool)
    assert again.base_job_template["variables"]["properties"]["namespace"]["default"] == "risk-team-2"


@pytest.mark.slow
def test_a_pool_of_another_type_under_the_name_is_refused(prefect_harness):
    from prefect.client.schemas.actions import WorkPoolCreate

    from modelops.integrations.prefect_client import prefect_client

    pool = "modelops-kubernetes-taken"
    with prefect_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    try:
        with pytest.raises(RuntimeError, match="exists with type 'process', not 'kubernetes'"):
            kubernetes_pool.ensure_pool(pool, kubernetes_pool.load_template())
    finally:
        with prefect_client(sync_client=True) as client:
            client.delete_work_pool(pool)
