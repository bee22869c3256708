"""apply / rollout / rollback of the kubernetes and openshift targets, against FakeKubernetesApiServer
(real kubernetes_asyncio client, real HTTP, a simulated Deployment controller and service proxy)."""

from __future__ import annotations

import pytest
from support.fakes.kubernetes_api import FakeImage, FakeKubernetesApiServer

from modelops.config import load_config
from modelops.integrations.cluster import KubernetesApi
from modelops.targets.base import DeployError
from modelops.targets.kubernetes import KubernetesTarget
from modelops.targets.openshift import OpenShiftTarget

MODEL = "hmeq-risk"
REGISTRY = "registry.example:5000/modelops/hmeq-risk"
DEPLOYMENT = "/apis/apps/v1/namespaces/modelops/deployments/hmeq-risk-serving"


@pytest.fixture
def fake():
    with FakeKubernetesApiServer(deadline_reads=4) as server:
        yield server


def _target(fake, cls=KubernetesTarget, **serving):
    config = load_config("kubernetes", environ={})
    config = config.model_copy(
        update={"serving": config.serving.model_copy(update={"rollout_timeout_s": 10.0, **serving})}
    )
    return cls(
        config,
        connect=lambda: KubernetesApi.connect(configuration=fake.configuration()),
        poll_interval_s=0.05,
    )


def _deploy(target, version, image):
    return target.deploy(MODEL, version, model_dir=None, image=image)


def _served_image(fake):
    return fake.get(DEPLOYMENT)["spec"]["template"]["spec"]["containers"][0]["image"]


def test_first_deploy_applies_everything_and_waits_for_the_rollout(fake):
    fake.images[f"{REGISTRY}:v1"] = FakeImage(version="1")
    rollout = _deploy(_target(fake), "1", f"{REGISTRY}:v1")
    assert rollout.version == "1" and rollout.previous_version is None and rollout.image == f"{REGISTRY}:v1"
    assert rollout.url == "http://hmeq-risk-serving.modelops.svc:8501"
    applied = [path for method, path in fake.requests if method == "PATCH"]
    assert applied == [
        "/api/v1/namespaces/modelops/serviceaccounts/hmeq-risk-serving",
        "/api/v1/namespaces/modelops/configmaps/hmeq-risk-serving",
        "/api/v1/namespaces/modelops/services/hmeq-risk-serving",
        DEPLOYMENT,
        "/apis/autoscaling/v2/namespaces/modelops/horizontalpodautoscalers/hmeq-risk-serving",
        "/apis/policy/v1/namespaces/modelops/poddisruptionbudgets/hmeq-risk-serving",
        "/apis/monitoring.coreos.com/v1/namespaces/modelops/servicemonitors/hmeq-risk-serving",
    ]
    deployment = fake.get(DEPLOYMENT)
    assert deployment["spec"]["template"]["metadata"]["annotations"]["modelops.io/model-version"] == "1"
    # The HPA and PDB are stored; the ServiceMonitor's API is not served here (no Prometheus Operator),
    # so it is skipped with a warning rather than failing the deploy.
    kinds = {obj["kind"] for obj in fake.objects.values()}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds and "ServiceMonitor" not in kinds
    # The smoke test went through the service proxy: status, metadata, predict.
    proxied = [path for _, path in fake.requests if "/proxy/" in path]
    assert proxied[-1].endswith("/services/hmeq-risk-serving:8501/proxy/v1/models/hmeq-risk:predict")


def test_second_deploy_replaces_the_first(fake):
    target = _target(fake)
    fake.images[f"{REGISTRY}:v1"] = FakeImage(version="1")
    fake.images[f"{REGISTRY}:v2"] = FakeImage(version="2")
    _deploy(target, "1", f"{REGISTRY}:v1")
    second = _deploy(target, "2", f"{REGISTRY}:v2")
    assert second.previous_version == "1" and second.details["previous_image"] == f"{REGISTRY}:v1"
    assert fake.get(DEPLOYMENT)["metadata"]["generation"] == 2
    assert target.current(MODEL).version == "2"


def test_readiness_failure_rolls_back_to_the_previous_image(fake):
    target = _target(fake)
    fake.images[f"{REGISTRY}:v1"] = FakeImage(version="1")
    fake.images[f"{REGISTRY}:v2"] = FakeImage(version="2", ready=False)
    _deploy(target, "1", f"{REGISTRY}:v1")
    with pytest.raises(DeployError) as caught:
        _deploy(target, "2", f"{REGISTRY}:v2")
    message = str(caught.value)
    assert "hmeq-risk version 2 failed" in message
    assert "progress deadline exceeded" in message
    assert f"rolled back to {REGISTRY}:v1 (version 1)" in message
    assert _served_image(fake) == f"{REGISTRY}:v1"
    current = target.current(MODEL)
    assert current.version == "1" and current.image == f"{REGISTRY}:v1"


def test_rollout_timeout_also_rolls_back(fake):
    fake.deadline_reads = 10_000  # the cluster never gives up by itself: our timeout must
    target = _target(fake, rollout_timeout_s=1.0)
    fake.images[f"{REGISTRY}:v1"] = FakeImage(version="1")
    fake.images[f"{REGISTRY}:v2"] = FakeImage(version="2", ready=False)
    _deploy(target, "1", f"{REGISTRY}:v1")
    with pytest.raises(
        DeployError, match=r"not finished after 1 s \(1 of 2 new replicas updated\).*rolled back"
    ):
        _deploy(target, "2", f"{REGISTRY}:v2")
    assert _served_image(fake) == f"{REGISTRY}:v1"


def test_smoke_test_failure_rolls_back(fake):
    target = _target(fake)
    fake.images[f"{REGISTRY}:v1"] = FakeImage(version="1")
    fake.images[f"{REGISTRY}:v2"] = FakeImage(version="2", smoke_ok=False)
    _deploy(target, "1", f"{REGISTRY}:v1")
    with pytest.raises(
        DeployError,
        match=r"hmeq-risk:predict answered HTTP 500: Could not find variable.*rolled back to .*:v1",
    ):
        _deploy(target, "2", f"{REGISTRY}:v2")
    assert _served_image(fake) == f"{REGISTRY}:v1"
    assert target.current(MODEL).version == "1"


def test_wrong_version_behind_the_service_rolls_back(fake):
    target = _target(fake)
    fake.images[f"{REGISTRY}:v1"] = FakeImage(version="1")
    fake.images[f"{REGISTRY}:v2"] = FakeImage(version="7")  # an image built from the wrong model folder
    _deploy(target, "1", f"{REGISTRY}:v1")
    with pytest.raises(DeployError, match="does not report version 2 AVAILABLE.*rolled back"):
        _deploy(target, "2", f"{REGISTRY}:v2")


def test_failed_first_deploy_deletes_the_deployment(fake):
    fake.images[f"{REGISTRY}:v1"] = FakeImage(version="1", ready=False)
    with pytest.raises(
        DeployError, match="nothing served before, so the Deployment hmeq-risk-serving was deleted"
    ):
        _deploy(_target(fake), "1", f"{REGISTRY}:v1")
    assert fake.get(DEPLOYMENT) is None


def test_openshift_applies_imagestream_and_route_and_pulls_through_the_stream(fake):
    fake.images["hmeq-risk:v1"] = FakeImage(version="1")
    target = _target(fake, cls=OpenShiftTarget)
    rollout = _deploy(target, "1", f"{REGISTRY}:v1")
    assert rollout.image == "hmeq-risk:v1"
    assert rollout.url == "https://hmeq-risk-serving-modelops.apps.fake.example"
    assert fake.get("/apis/image.openshift.io/v1/namespaces/modelops/imagestreams/hmeq-risk") is not None
    route = fake.get("/apis/route.openshift.io/v1/namespaces/modelops/routes/hmeq-risk-serving")
    assert (
        route["spec"]["to"]["name"] == "hmeq-risk-serving" and route["spec"]["tls"]["termination"] == "edge"
    )
    target.stop(MODEL)
    assert fake.get(DEPLOYMENT) is None
    assert fake.get("/apis/route.openshift.io/v1/namespaces/modelops/routes/hmeq-risk-serving") is None
    assert fake.get("/apis/image.openshift.io/v1/namespaces/modelops/imagestreams/hmeq-risk") is not None


def test_another_model_name_gets_its_own_objects(fake):
    fake.images[f"{REGISTRY}:v4"] = FakeImage(version="4")
    config_target = _target(fake, image_stream="credit-lgd")
    rollout = config_target.deploy("credit-lgd", "4", model_dir=None, image=f"{REGISTRY}:v4")
    assert rollout.details["deployment"] == "credit-lgd-serving"
    deployment = fake.get("/apis/apps/v1/namespaces/modelops/deployments/credit-lgd-serving")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    assert probe == "/v1/models/credit-lgd"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "credit-lgd-serving"}


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
