"""The Kubernetes work pool against a REAL Kubernetes API server (the v1.20 control plane fixture).

What runs for real:

* etcd, kube-apiserver (authentication by the worker's service-account token, RBAC, the batch/v1 Job
  API and its watch), kube-controller-manager (the Job controller creates the pod; the token
  controller gives each ServiceAccount its token) and kube-scheduler (binds the pod to the node);
* ``infra/k8s/worker`` rendered by the real kustomize and applied by server-side apply, with the
  Secrets it names;
* a real Prefect server (the session's ``prefect_harness``): the pool created by
  ``modelops.stack.kubernetes_pool`` with ``infra/k8s/worker/base-job-template.json``, a deployment
  of the project's ``train`` flow on it and a flow run;
* a real ``prefect worker start --type kubernetes`` process on this host, started with the arguments
  and environment of the worker Deployment's container, authenticating to the API server with the
  worker ServiceAccount's own token (so its Role is what allows or refuses each call): it picks the
  flow run up, renders the template and creates the Job; its observer (kopf) watches the namespace's
  Jobs and pods and reports the pod's phase to Prefect as an event.

What does NOT run: any container. The node is fake (scripts/k8s-control-plane/fake_node.py): it marks
the Job's pod (and the in-cluster worker Deployment's pod) Running and Ready without pulling the image
or starting a process, so the flow itself never executes, the kubelet never resolves the Secrets, and
the flow run stays Pending (nothing in the pod reports Running to Prefect).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.control_plane import ControlPlane, service_account_kubeconfig
from support.network import free_port

from modelops.config import PROJECT_ROOT, load_config
from modelops.stack import kubernetes_pool

pytestmark = [pytest.mark.slow, pytest.mark.k8s]

WORKER_DIR = PROJECT_ROOT / "infra" / "k8s" / "worker"
BIN = Path(sys.executable).parent
WORKER = "modelops-prefect-worker"
FLOW_RUNNER = "modelops-flow-runner"
IMAGE = "registry.example:5000/modelops/modelops-flows:0.1.0-test"
NODE = "fake-node-1"
# Stand-ins for the team's values; the test checks that none of them is written into the Job.
SECRETS = {
    "modelops-prefect": {"api-key": f"pnu_test_{uuid.uuid4().hex}"},  # + api-url, the harness's URL
    "modelops-mlflow": {"tracking-uri": "https://mlflow-user:mlflow-pass@mlflow.example/"},
    "modelops-database": {"url": "postgresql://modelops:db-pass@db.example:5432/modelops"},
}


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(interval)


@pytest.fixture
def namespaces(control_plane: ControlPlane) -> Iterator[tuple[str, str]]:
    """The worker's namespace and another one; both deleted afterwards."""
    made = [control_plane.create_namespace("pool"), control_plane.create_namespace("other")]
    try:
        yield made[0], made[1]
    finally:
        for namespace in made:
            control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _create_secrets(plane: ControlPlane, namespace: str, api_url: str) -> None:
    for name, data in SECRETS.items():
        values = {**data, "api-url": api_url} if name == "modelops-prefect" else data
        literals = [f"--from-literal={key}={value}" for key, value in values.items()]
        plane.kubectl("-n", namespace, "create", "secret", "generic", name, *literals)


def _worker_command(
    deployment: dict[str, Any], namespace: str, api_url: str, port: int
) -> tuple[list[str], dict[str, str]]:
    """The worker container's command and environment, resolved as the kubelet would (Secrets and
    the downward API); only the template's path and the health server's address are this host's."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = list(container["args"])
    args[args.index("--base-job-template") + 1] = str(WORKER_DIR / "base-job-template.json")
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif ref := entry["valueFrom"].get("secretKeyRef"):
            values = (
                {**SECRETS[ref["name"]], "api-url": api_url}
                if ref["name"] == "modelops-prefect"
                else SECRETS[ref["name"]]
            )
            env[entry["name"]] = values[ref["key"]]
        elif entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[entry["name"]] = namespace
    env.update(PREFECT_WORKER_WEBSERVER_HOST="127.0.0.1", PREFECT_WORKER_WEBSERVER_PORT=str(port))
    return [str(BIN / container["command"][0]), *args], env


def _job_for(plane: ControlPlane, namespace: str, flow_run_id: str) -> dict[str, Any] | None:
    listed = json.loads(
        plane.kubectl(
            "-n", namespace, "get", "jobs", "-l", f"prefect.io/flow-run-id={flow_run_id}", "-o", "json"
        )
    )
    return listed["items"][0] if listed["items"] else None


def _running_pod(plane: ControlPlane, namespace: str, job_name: str) -> dict[str, Any] | None:
    listed = json.loads(
        plane.kubectl("-n", namespace, "get", "pods", "-l", f"job-name={job_name}", "-o", "json")
    )
    running = [p for p in listed["items"] if p["status"].get("phase") == "Running"]
    return running[0] if running else None


def _pod_events(pod_uid: str) -> list[str]:
    from prefect.events.filters import EventFilter, EventResourceFilter

    from modelops.integrations.prefect_client import prefect_client

    with prefect_client(sync_client=True) as client:
        response = client.request(
            "POST",
            "/events/filter",
            json={
                "filter": EventFilter(
                    resource=EventResourceFilter(id=[f"prefect.kubernetes.pod.{pod_uid}"])
                ).model_dump(mode="json", exclude_unset=True)
            },
        )
    return [event["event"] for event in response.json()["events"]]


def test_worker_runs_a_flow_run_as_a_job_with_its_service_account(
    control_plane, prefect_harness, namespaces, tmp_path
):
    from prefect.settings import PREFECT_API_URL

    from modelops.integrations.prefect_client import prefect_client

    plane = control_plane
    namespace, other = namespaces
    api_url = PREFECT_API_URL.value()

    # 1. infra/k8s/worker, and the Secrets it references, in a fresh namespace.
    objects = plane.apply_kustomization(WORKER_DIR, namespace, tmp_path)
    _create_secrets(plane, namespace, api_url)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == namespace
    # The in-cluster worker Deployment is accepted and "runs" on the fake node (no process starts).
    wait_for(
        lambda: (
            "1"
            in plane.kubectl(
                "-n", namespace, "get", "deployment", WORKER, "-o", "jsonpath={.status.availableReplicas}"
            )
        ),
        90,
        "the worker Deployment available (fake node)",
    )

    # 2. the pool with the project's template (as `modelops up` creates it), a deployment, a run.
    pool = deployment["spec"]["template"]["spec"]["containers"][0]["args"][3]
    assert pool == "modelops-kubernetes"
    template = kubernetes_pool.base_job_template(
        load_config("kubernetes", environ={}), namespace=namespace, image=IMAGE
    )
    assert kubernetes_pool.ensure_pool(pool, template) in ("created", "updated")
    with prefect_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("train")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=f"train-k8s-{uuid.uuid4().hex[:6]}",
            work_pool_name=pool,
            entrypoint="flows/train.py:train",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/modelops"}}],
        )
        flow_run = client.create_flow_run_from_deployment(deployment_id)
    run_id = str(flow_run.id)

    # 3. a real worker process with the Deployment's arguments and environment, as the worker's
    #    ServiceAccount (its own token: RBAC decides).
    kubeconfig = service_account_kubeconfig(plane, namespace, WORKER, tmp_path / "worker.kubeconfig")
    argv, container_env = _worker_command(deployment, namespace, api_url, free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "PREFECT_"))}
    env.update(
        container_env,
        KUBECONFIG=str(kubeconfig),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_WORKER_QUERY_SECONDS="1",
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        job = wait_for(
            lambda: _job_for(plane, namespace, run_id), 120, f"a Job for the flow run (worker log {log_path})"
        )
        pod = wait_for(
            lambda: _running_pod(plane, namespace, job["metadata"]["name"]), 90, "the Job's pod Running"
        )

        # 4. the Job is the template's: image, service account, environment from Secrets, labels.
        labels = job["metadata"]["labels"]
        assert labels["prefect.io/flow-run-id"] == run_id
        assert labels["prefect.io/flow-run-name"] == flow_run.name
        assert labels["prefect.io/work-pool-name"] == pool
        spec = job["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["image"] == IMAGE
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert spec["serviceAccountName"] == FLOW_RUNNER
        assert job["spec"]["backoffLimit"] == 0
        env_entries = {e["name"]: e for e in container["env"]}
        assert env_entries["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"] == {
            "name": "modelops-mlflow",
            "key": "tracking-uri",
        }
        assert env_entries["MODELOPS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "modelops-database",
            "key": "url",
        }
        # the worker's API key goes in as a reference to the Secret the worker read it from
        assert env_entries["PREFECT_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "modelops-prefect",
            "key": "api-key",
        }
        assert env_entries["PREFECT_API_URL"]["value"] == api_url
        assert env_entries["MODELOPS_CONFIG"]["value"] == "kubernetes"
        assert env_entries["PREFECT__FLOW_RUN_ID"]["value"] == run_id
        assert container["args"][:3] == ["prefect", "flow-run", "execute"]
        manifest_text = json.dumps(job)
        for data in SECRETS.values():
            for value in data.values():
                assert value not in manifest_text, "a Secret's value was written into the Job"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}

        # 5. its pod: scheduled by the real scheduler onto the fake node, Running (no container ran).
        assert pod["spec"]["nodeName"] == NODE
        assert pod["spec"]["serviceAccountName"] == FLOW_RUNNER
        assert pod["metadata"]["labels"]["prefect.io/flow-run-id"] == run_id

        # 6. Prefect: the run was handed to this Job (infrastructure id), and stays Pending: the
        #    flow never starts, since no container runs. The observer's watch saw the pod Running.
        def handed_over():
            with prefect_client(sync_client=True) as client:
                run = client.read_flow_run(flow_run.id)
            return run if run.infrastructure_pid else None

        run = wait_for(handed_over, 60, "the flow run's infrastructure id")
        assert run.infrastructure_pid == f"{namespace}:{job['metadata']['name']}"
        assert run.state is not None and run.state.type.value == "PENDING", run.state
        events = wait_for(
            lambda: [e for e in _pod_events(pod["metadata"]["uid"]) if e == "prefect.kubernetes.pod.running"],
            60,
            f"the observer's prefect.kubernetes.pod.running event (worker log {log_path})",
        )
        assert events

        # 7. the worker's account acts in its namespace only (answered by the API server's RBAC).
        who = f"system:serviceaccount:{namespace}:{WORKER}"
        allowed = [
            ("create", "jobs", namespace),
            ("watch", "pods", namespace),
            ("get", "pods/log", namespace),
        ]
        refused = [
            ("create", "jobs", other),
            ("list", "pods", other),
            ("get", "secrets", namespace),
            ("create", "pods", namespace),
            ("delete", "namespaces", other),
        ]
        for verb, what, where in allowed + refused:
            answer = plane.kubectl("auth", "can-i", verb, what, "-n", where, "--as", who, check=False).strip()
            assert answer == ("yes" if (verb, what, where) in allowed else "no"), (
                f"{WORKER}: {verb} {what} in {where}"
            )
        assert (
            plane.kubectl(
                "auth", "can-i", "list", "jobs", "--all-namespaces", "--as", who, check=False
            ).strip()
            == "no"
        )
        with_token = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "-n", other, "get", "jobs"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert with_token.returncode != 0 and "forbidden" in with_token.stderr.lower()
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    log_text = log_path.read_text(errors="replace")
    assert "Forbidden" not in log_text, log_text[-3000:]
