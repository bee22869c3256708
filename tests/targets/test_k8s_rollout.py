"""The kubernetes and openshift targets against a REAL Kubernetes API server (v1.20 control plane).

What runs for real: etcd, kube-apiserver (server-side apply, discovery, watch, RBAC, the service
proxy), kube-controller-manager (the Deployment and ReplicaSet controllers: rolling updates, the
ReplicaSet a rollback returns to, Service endpoints from ready pods) and kube-scheduler. The node is
fake (scripts/k8s-control-plane/fake_node.py): it runs no container, but marks pods Running and
Ready (or never Ready, for images a test names) and gives them the IP a test asks for. At that IP a
real serving process answers, in a network namespace this test creates, so the target's smoke test
goes API server → service proxy → Service endpoints → pod IP → the model, for real.

Not on 1.20: ``autoscaling/v2`` HPA, ``policy/v1`` PDB and the ServiceMonitor CRD; the target skips
those kinds with a warning (their manifests are validated offline in test_k8s_manifests.py).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from support.control_plane import (
    ControlPlane,
    pod_networks_available,
    service_account_kubeconfig,
    serving_pod,
)
from support.serving import build_saved_model

from modelops.config import load_config
from modelops.integrations.cluster import KubernetesApi
from modelops.targets.base import DeployError
from modelops.targets.kubernetes import KubernetesTarget
from modelops.targets.openshift import OpenShiftTarget

pytestmark = [pytest.mark.slow, pytest.mark.k8s]

MODEL = "hmeq-risk"
REGISTRY = "registry.example:5000/modelops/hmeq-risk"
APP = "hmeq-risk-serving"
K8S_DIR = Path(__file__).resolve().parents[2] / "infra" / "k8s"
_POD_IPS = (f"10.245.{random.randrange(256)}.{i}" for i in itertools.count(2))


@pytest.fixture(scope="module")
def pod_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Real serving processes, one per model version, each at its own pod IP: {version: ip}.

    Version 3 is broken (it answers scores above 1): its pods are Ready, its smoke test fails.
    """
    if not pod_networks_available():
        pytest.skip(
            "no network namespaces here (needs root and `ip netns`): the smoke test cannot reach a pod"
        )
    base = tmp_path_factory.mktemp("pod-models")
    models = base / MODEL
    build_saved_model(models / "1", bias=-1.4)
    build_saved_model(models / "2", bias=-0.9)
    build_saved_model(models / "3", score_scale=10.0)
    ips: dict[str, str] = {}
    with ExitStack() as stack:
        for version in ("1", "2", "3"):
            ip = next(_POD_IPS)
            stack.enter_context(serving_pod(ip, MODEL, models, version, base / f"server-v{version}.log"))
            ips[version] = ip
        yield ips


@pytest.fixture
def cluster(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> ControlPlane:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return control_plane


def _target(namespace: str, cls: type[KubernetesTarget] = KubernetesTarget, **serving) -> KubernetesTarget:
    config = load_config("kubernetes", environ={})
    update = {"namespace": namespace, "rollout_timeout_s": 60.0, "replicas": 1, **serving}
    config = config.model_copy(update={"serving": config.serving.model_copy(update=update)})
    return cls(config)


def _image(version: str) -> str:
    return f"{REGISTRY}:v{version}"


def _replica_sets(cluster: ControlPlane, namespace: str) -> dict[str, dict]:
    """{image: ReplicaSet} of the serving Deployment."""
    listed = json.loads(cluster.kubectl("-n", namespace, "get", "replicasets", "-o", "json"))
    return {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs for rs in listed["items"]}


def _proxied_status(cluster: ControlPlane, namespace: str) -> dict:
    path = f"/api/v1/namespaces/{namespace}/services/{APP}:8501/proxy/v1/models/{MODEL}"
    return json.loads(cluster.kubectl("get", "--raw", path))


def test_rollout_update_and_automatic_rollbacks(cluster, pod_servers, caplog):
    namespace = cluster.create_namespace("rollout")
    cluster.fake_node_rules(
        never_ready_images=[":v9"],
        pod_ips={_image(v): ip for v, ip in pod_servers.items()} | {_image("4"): pod_servers["2"]},
    )
    target = _target(namespace)
    caplog.set_level(logging.WARNING, logger="modelops.targets.kubernetes")

    # 1. first rollout: every object 1.20 serves is applied; the smoke test reaches the real pod.
    first = target.deploy(MODEL, "1", model_dir=None, image=_image("1"))
    assert (first.version, first.previous_version) == ("1", None)
    assert first.url == f"http://{APP}.{namespace}.svc:8501"
    for kind in ("serviceaccount", "configmap", "service", "deployment"):
        cluster.kubectl("-n", namespace, "get", kind, APP)
    skipped = " ".join(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert all(
        kind in skipped for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor")
    )
    assert _proxied_status(cluster, namespace)["model_version_status"][0]["version"] == "1"
    deployment = json.loads(cluster.kubectl("-n", namespace, "get", "deployment", APP, "-o", "json"))
    assert deployment["spec"]["replicas"] == 1  # no HPA served here: the Deployment keeps the count

    # 2. update: deploy returns once the NEW ReplicaSet is available and the old one scaled down.
    second = target.deploy(MODEL, "2", model_dir=None, image=_image("2"))
    assert (second.version, second.previous_version) == ("2", "1")
    sets = _replica_sets(cluster, namespace)
    assert sets[_image("2")]["status"].get("availableReplicas") == 1
    assert sets[_image("1")]["spec"]["replicas"] == 0
    assert _proxied_status(cluster, namespace)["model_version_status"][0]["version"] == "2"

    # 3. a version whose pods never become ready: our timeout, then back to version 2's ReplicaSet.
    never_ready = _target(namespace, rollout_timeout_s=8.0)
    with pytest.raises(DeployError) as caught:
        never_ready.deploy(MODEL, "9", model_dir=None, image=_image("9"))
    message = str(caught.value)
    assert "not finished after 8 s" in message and f"rolled back to {_image('2')} (version 2)" in message
    sets = _replica_sets(cluster, namespace)
    assert sets[_image("9")]["spec"]["replicas"] == 0
    assert sets[_image("2")]["status"].get("availableReplicas") == 1
    assert target.current(MODEL).version == "2"

    # 4. ready pods serving the wrong version (an image built from the wrong folder): rolled back.
    with pytest.raises(DeployError, match=r"does not report version 4 AVAILABLE.*rolled back to .*:v2"):
        target.deploy(MODEL, "4", model_dir=None, image=_image("4"))

    # 5. ready pods of a broken model: the smoke test through the proxy refuses it; rolled back.
    with pytest.raises(DeployError, match=r"version 3 failed: .*rolled back to .*:v2"):
        target.deploy(MODEL, "3", model_dir=None, image=_image("3"))
    assert target.current(MODEL).version == "2"
    assert _proxied_status(cluster, namespace)["model_version_status"][0]["version"] == "2"

    target.stop(MODEL)
    assert cluster.kubectl("-n", namespace, "get", "deployment,service", "-o", "name").strip() == ""


def test_failed_first_rollout_deletes_the_deployment(cluster):
    namespace = cluster.create_namespace("first")
    cluster.fake_node_rules(never_ready_images=[":v1-never"])
    with pytest.raises(DeployError, match=f"nothing served before, so the Deployment {APP} was deleted"):
        _target(namespace, rollout_timeout_s=5.0).deploy(
            MODEL, "1", model_dir=None, image=f"{REGISTRY}:v1-never"
        )
    assert cluster.kubectl("-n", namespace, "get", "deployment", "-o", "name").strip() == ""


OPENSHIFT_KINDS = [
    ("image.openshift.io", "ImageStream", "imagestreams"),
    ("route.openshift.io", "Route", "routes"),
    ("build.openshift.io", "BuildConfig", "buildconfigs"),
]


def _install_openshift_crds(cluster: ControlPlane) -> None:
    """OpenShift's ImageStream, Route and BuildConfig as CRDs, so the API server stores and serves them."""
    for group, kind, plural in OPENSHIFT_KINDS:
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(crd))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.{group}", "--timeout=60s")


def test_openshift_objects_on_a_real_api_server(cluster, pod_servers):
    _install_openshift_crds(cluster)
    namespace = cluster.create_namespace("openshift")
    cluster.fake_node_rules(pod_ips={"hmeq-risk:v1": pod_servers["1"]})  # pulled through the ImageStream
    target = _target(namespace, cls=OpenShiftTarget, image_stream=MODEL)
    rollout = target.deploy(MODEL, "1", model_dir=None, image=_image("1"))
    assert rollout.image == "hmeq-risk:v1"
    route = json.loads(
        cluster.kubectl("-n", namespace, "get", "routes.route.openshift.io", APP, "-o", "json")
    )
    assert route["spec"]["to"]["name"] == APP and route["spec"]["tls"]["termination"] == "edge"
    build = json.loads(
        cluster.kubectl("-n", namespace, "get", "buildconfigs.build.openshift.io", "-o", "json")
    )
    assert build["items"][0]["spec"]["output"]["to"]["name"].startswith(f"{MODEL}:")
    cluster.kubectl("-n", namespace, "get", "imagestreams.image.openshift.io", MODEL)
    target.stop(MODEL)
    assert cluster.kubectl("-n", namespace, "get", "routes.route.openshift.io", "-o", "name").strip() == ""
    cluster.kubectl("-n", namespace, "get", "imagestreams.image.openshift.io", MODEL)  # kept: it holds images


def test_deployer_service_account_can_deploy_in_its_namespace_and_nowhere_else(
    cluster, pod_servers, tmp_path, monkeypatch
):
    namespace = cluster.create_namespace("rbac")
    other = cluster.create_namespace("other")
    cluster.apply_kustomization(K8S_DIR / "deployer", namespace, tmp_path)
    account = "modelops-deployer"
    kubeconfig = service_account_kubeconfig(cluster, namespace, account, tmp_path / "deployer.kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cluster.fake_node_rules(pod_ips={_image("1"): pod_servers["1"]})
    assert _target(namespace).deploy(MODEL, "1", model_dir=None, image=_image("1")).version == "1"

    with pytest.raises(DeployError, match="HTTP 403.*lacks RBAC permission"):
        _target(other).deploy(MODEL, "1", model_dir=None, image=_image("1"))
    assert cluster.kubectl("-n", other, "get", "all", "-o", "name").strip() in ("", "service/kubernetes")
    who = f"system:serviceaccount:{namespace}:{account}"
    for verb, what, where in [
        ("delete", "namespaces", other),
        ("get", "secrets", namespace),
        ("create", "deployments", other),
    ]:
        answer = cluster.kubectl("auth", "can-i", verb, what, "-n", where, "--as", who, check=False).strip()
        assert answer == "no", f"{account} may {verb} {what} in {where}"
    _target(namespace).stop(MODEL)


def test_unreachable_api_server_is_a_clear_deploy_error():
    from kubernetes_asyncio.client import Configuration
    from support.network import free_port

    config = load_config("kubernetes", environ={})
    host = f"http://127.0.0.1:{free_port()}"
    target = KubernetesTarget(
        config, connect=lambda: KubernetesApi.connect(configuration=Configuration(host=host))
    )
    with pytest.raises(DeployError, match=f"API server {host} is unreachable"):
        target.deploy(MODEL, "1", model_dir=None, image=f"{REGISTRY}:v1")
