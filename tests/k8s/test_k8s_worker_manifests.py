"""infra/k8s/worker and the Kubernetes pool's base job template, offline: the manifests rendered by
the real kustomize, and the Job prefect-kubernetes renders from the template for a flow run, validated
against the Kubernetes 1.37 schemas (kubernetes-validate, strict) with the serving manifests' security
settings. No cluster and no Prefect server is needed (see test_k8s_work_pool.py for the live test)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import kubernetes_validate
import pytest
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorker, KubernetesWorkerJobConfiguration

from modelops.config import load_config
from modelops.stack import kubernetes_pool
from modelops.targets.kustomize import render_overlay
from modelops.targets.manifests import K8S_DIR

KUBERNETES_VERSION = "1.37.0"
WORKER_DIR = K8S_DIR / "worker"


def _render_job(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    class _NoServer:  # the template references no block or variable: nothing is fetched
        pass

    configuration = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(template, values, client=_NoServer())  # type: ignore[arg-type]
    )
    flow_run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="brave-fox")
    configuration.prepare_for_flow_run(flow_run)
    return configuration.job_manifest


@pytest.fixture(scope="module")
def worker_objects() -> list[dict[str, Any]]:
    return render_overlay(WORKER_DIR)


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    template = kubernetes_pool.base_job_template(
        load_config("kubernetes", environ={}), namespace="risk-models", image="registry.example.com/t/flows:1"
    )
    return _render_job(template, {})


def test_worker_manifests_are_valid(worker_objects):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in worker_objects)
    assert ("Deployment", "modelops-prefect-worker") in kinds
    assert ("ServiceAccount", "modelops-flow-runner") in kinds
    assert ("Role", "modelops-prefect-worker") in kinds
    for obj in worker_objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["metadata"]["namespace"] == "modelops"


def test_worker_role_is_namespaced_and_least_privilege(worker_objects):
    assert not [o for o in worker_objects if o["kind"].startswith("Cluster")]
    role = next(
        o
        for o in worker_objects
        if o["kind"] == "Role" and o["metadata"]["name"] == "modelops-prefect-worker"
    )
    granted = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert ("batch", "jobs", "create") in granted and ("batch", "jobs", "delete") in granted
    assert ("", "pods", "watch") in granted and ("", "pods/log", "get") in granted
    assert not [g for g in granted if g[1] == "secrets"], "the worker reads no Secret"
    assert not [g for g in granted if g[1] == "pods" and g[2] in ("create", "delete", "patch")]


def test_worker_deployment_takes_its_settings_from_secrets(worker_objects):
    deployment = next(o for o in worker_objects if o["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["serviceAccountName"] == "modelops-prefect-worker"
    assert container["image"] == "registry.example.com/modelops/modelops-flows:latest"  # kustomize images:
    assert container["args"][:6] == [
        "worker",
        "start",
        "--pool",
        "modelops-kubernetes",
        "--type",
        "kubernetes",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["PREFECT_API_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "modelops-prefect",
        "key": "api-url",
    }
    assert env["PREFECT_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "api-key"
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"]["valueFrom"]["fieldRef"] == {
        "fieldPath": "metadata.namespace"
    }
    # no literal secret anywhere: every value is a name, a number, a flag or a secret reference
    for entry in container["env"]:
        assert "value" not in entry or not any(s in entry["value"] for s in ("://", "pnu_", "password"))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    config_map = next(v for v in spec["volumes"] if v["name"] == mounted["/etc/modelops"])["configMap"][
        "name"
    ]
    template_map = next(o for o in worker_objects if o["kind"] == "ConfigMap")
    assert template_map["metadata"]["name"] == config_map  # kustomize's hashed name follows the file
    assert json.loads(template_map["data"]["base-job-template.json"]) == kubernetes_pool.load_template()


def test_base_job_template_keeps_prefects_variables():
    ours = kubernetes_pool.load_template()
    default = KubernetesWorker.get_default_base_job_template()
    assert set(ours["variables"]["properties"]) == set(default["variables"]["properties"])
    assert set(ours["job_configuration"]) == set(default["job_configuration"])
    defaults = {k: v.get("default") for k, v in ours["variables"]["properties"].items()}
    assert defaults["service_account_name"] == "modelops-flow-runner"
    assert defaults["backoff_limit"] == 0 and defaults["finished_job_ttl"] == 3600


def test_rendered_job_is_valid_and_locked_down(job):
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)
    assert job["metadata"]["namespace"] == "risk-models"
    assert (job["spec"]["parallelism"], job["spec"]["completions"]) == (1, 1)  # Job fields, not the pod's
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/t/flows:1"
    assert pod["serviceAccountName"] == "modelops-flow-runner"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELOPS_CONFIG"]["value"] == "kubernetes"
    assert env["MODELOPS_PROJECT_ROOT"]["value"] == "/opt/modelops"
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"]["name"] == "modelops-mlflow"
    assert env["MODELOPS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "modelops-database",
        "key": "url",
    }
    assert job["metadata"]["labels"]["prefect.io/flow-run-name"] == "brave-fox"


def test_a_plain_value_wins_over_the_secret_reference_and_passwords_stay_out():
    config = load_config("kubernetes", environ={})
    plain = kubernetes_pool.base_job_template(
        config, env={"MLFLOW_TRACKING_URI": "http://mlflow.modelops.svc:5000"}
    )
    env = {e["name"]: e for e in _render_job(plain, {})["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == {
        "name": "MLFLOW_TRACKING_URI",
        "value": "http://mlflow.modelops.svc:5000",
    }
    password = uuid.uuid4().hex  # generated: no credential-looking literal in the repository
    secret = kubernetes_pool.base_job_template(
        config, env={"MLFLOW_TRACKING_URI": f"https://u:{password}@mlflow.example/"}
    )
    assert password not in json.dumps(secret)
    env = {e["name"]: e for e in _render_job(secret, {})["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "valueFrom" in env["MLFLOW_TRACKING_URI"]
