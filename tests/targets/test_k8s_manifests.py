"""Every manifest under infra/k8s, rendered with `kubectl kustomize`, validated offline against real
schemas and checked for the security settings (non-root, no privilege escalation, resource
requests/limits), the probes on the model and the production parts: HPA, PDB, ServiceMonitor on the
metrics path, and the OpenShift BuildConfig."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from support.manifests import OVERLAYS, all_objects, rendered

from modelops.serving.metrics import METRICS_PATH
from modelops.targets.kustomize import KUBECTL_ENV, ManifestError, render_overlay
from modelops.targets.manifests import K8S_DIR

KUBERNETES_VERSION = "1.37.0"
SCHEMAS = {  # (apiVersion, kind) that kubernetes-validate does not know -> our JSON schema
    ("route.openshift.io/v1", "Route"): "route.openshift.io-v1-route.json",
    ("image.openshift.io/v1", "ImageStream"): "image.openshift.io-v1-imagestream.json",
    ("build.openshift.io/v1", "BuildConfig"): "build.openshift.io-v1-buildconfig.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com-v1-servicemonitor.json",
}


def _validate(obj: dict[str, Any]) -> None:
    schema = SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if schema is not None:
        jsonschema.validate(obj, json.loads((K8S_DIR / "schemas" / schema).read_text()))
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("label,obj", all_objects(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_is_valid_against_the_schema(label, obj):
    _validate(obj)


def test_schemas_refuse_broken_objects():
    route = next(o for o in rendered("openshift") if o["kind"] == "Route")
    route["spec"]["tls"]["termination"] = "none"
    with pytest.raises(jsonschema.ValidationError):
        _validate(route)
    deployment = next(o for o in rendered("kubernetes") if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalaton"] = (
        False
    )
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    build = next(o for o in rendered("openshift") if o["kind"] == "BuildConfig")
    build["spec"]["source"] = {"type": "Binary"}
    with pytest.raises(jsonschema.ValidationError):
        _validate(build)
    monitor = next(o for o in rendered("kubernetes") if o["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor)


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    return [
        (label, obj)
        for label, obj in all_objects()
        if obj.get("kind") in ("Deployment", "StatefulSet", "Pod")
    ]


@pytest.mark.parametrize("label,workload", _workloads(), ids=lambda v: v if isinstance(v, str) else "")
def test_workload_security_and_resources(label, workload):
    pod = workload["spec"]["template"]["spec"] if workload["kind"] != "Pod" else workload["spec"]
    pod_security = pod.get("securityContext") or {}
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        security = container.get("securityContext") or {}
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, container["name"]
        assert security.get("allowPrivilegeEscalation") is False, container["name"]
        assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, container["name"]
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind) or {}), f"{container['name']}: {kind}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("model", ["hmeq-risk", "credit-lgd"])
def test_serving_probes_ask_the_model(overlay, model):
    deployment = next(o for o in rendered(overlay, model) if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": f"/v1/models/{model}", "port": "http"}
    assert container["image"] == f"registry.example.com/modelops/{model}:v3"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    names = {o["metadata"]["name"] for o in rendered(overlay, model) if o["kind"] != "ImageStream"}
    assert names == {f"{model}-serving"}
    assert all(o["metadata"]["namespace"] == "risk-models" for o in rendered(overlay, model))


def test_openshift_leaves_the_uid_to_the_scc_and_kubernetes_pins_it():
    openshift = next(o for o in rendered("openshift") if o["kind"] == "Deployment")
    kubernetes = next(o for o in rendered("kubernetes") if o["kind"] == "Deployment")
    assert "runAsUser" not in openshift["spec"]["template"]["spec"]["securityContext"]
    assert kubernetes["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("model", ["hmeq-risk", "credit-lgd"])
def test_autoscaling_disruption_budget_and_scraping_follow_the_model(overlay, model):
    objects = rendered(overlay, model)
    app = f"{model}-serving"
    deployment = _one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    hpa = _one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": app}
    assert hpa["spec"]["minReplicas"] == 2  # serving.replicas of the rendering
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"  # needs the container's cpu request, which it has
    assert "cpu" in deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]

    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    monitor = _one(objects, "ServiceMonitor")
    service = _one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == METRICS_PATH
    # The real tensorflow_model_server serves that path only with a monitoring config that says so.
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--monitoring_config_file=/etc/tfserving/monitoring.config" in container["args"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/tfserving"]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    config = _one(objects, "ConfigMap")
    assert volume["configMap"]["name"] == config["metadata"]["name"] == app
    assert f'path: "{METRICS_PATH}"' in config["data"]["monitoring.config"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}[endpoint["port"]] == "http"


@pytest.mark.parametrize("model", ["hmeq-risk", "credit-lgd"])
def test_openshift_builds_the_serving_image_from_a_binary_upload_into_the_image_stream(model):
    objects = rendered("openshift", model)
    build = _one(objects, "BuildConfig")
    assert build["spec"]["source"]["type"] == "Binary"
    assert build["spec"]["strategy"]["type"] == "Docker"
    assert build["spec"]["output"]["to"] == {"kind": "ImageStreamTag", "name": f"{model}:latest"}
    assert _one(objects, "ImageStream")["metadata"]["name"] == model
    args = {a["name"]: a["value"] for a in build["spec"]["strategy"]["dockerStrategy"]["buildArgs"]}
    assert args["SERVED_MODEL_NAME"] == model
    dockerfile = (K8S_DIR.parent / "docker" / "Dockerfile").read_text()
    assert all(f"ARG {name}" in dockerfile for name in args)
    assert not [
        o for o in rendered("kubernetes", model) if o["kind"] in {"BuildConfig", "ImageStream", "Route"}
    ]


def test_overlays_are_rendered_by_real_kustomize(tmp_path: Path):
    # A generator the old built-in subset refused: real kustomize renders it, hash suffix and all.
    (tmp_path / "kustomization.yaml").write_text(
        "resources: []\nconfigMapGenerator: [{name: settings, literals: [a=b]}]\n"
    )
    (config_map,) = render_overlay(tmp_path)
    assert config_map["kind"] == "ConfigMap" and config_map["metadata"]["name"].startswith("settings-")
    assert config_map["data"] == {"a": "b"}


def test_a_broken_kustomization_is_one_error_naming_it(tmp_path: Path):
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(ManifestError, match=r"`kubectl kustomize .*` failed: .*missing\.yaml"):
        render_overlay(tmp_path)
    with pytest.raises(ManifestError, match="has no kustomization.yaml"):
        render_overlay(tmp_path / "nowhere")


def test_a_missing_kubectl_is_one_error_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv(KUBECTL_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ManifestError, match=r"kubectl is not on PATH: .*kubectl kustomize.*MODELOPS_KUBECTL"):
        render_overlay(K8S_DIR / "overlays" / "kubernetes")
    monkeypatch.setenv(KUBECTL_ENV, os.fspath(tmp_path / "kubectl"))
    with pytest.raises(ManifestError, match=r"MODELOPS_KUBECTL=.* is not a file"):
        render_overlay(K8S_DIR / "overlays" / "kubernetes")


def test_model_names_that_are_not_dns_labels_are_refused():
    with pytest.raises(ManifestError, match="not a DNS label"):
        rendered("kubernetes", model="Credit_LGD")
