"""Every manifest under infra/k8s, rendered, validated offline against real schemas and checked for the
security settings: non-root, no privilege escalation, resource requests/limits, probes on the model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from support.manifests import CLIENT_DIR, OVERLAYS, all_objects, rendered

from modelops.targets.kustomize import ManifestError, render_overlay
from modelops.targets.manifests import K8S_DIR

KUBERNETES_VERSION = "1.37.0"
SCHEMAS = {
    "Route": K8S_DIR / "schemas" / "route.openshift.io-v1-route.json",
    "ImageStream": K8S_DIR / "schemas" / "image.openshift.io-v1-imagestream.json",
}


def _validate(obj: dict[str, Any]) -> None:
    if obj["kind"] in SCHEMAS and "openshift.io" in obj["apiVersion"]:
        jsonschema.validate(obj, json.loads(SCHEMAS[obj["kind"]].read_text()))
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


KUSTOMIZATIONS = [K8S_DIR / "overlays" / overlay for overlay in OVERLAYS] + (
    [CLIENT_DIR] if (CLIENT_DIR / "kustomization.yaml").is_file() else []
)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S_DIR).as_posix())
def test_builtin_renderer_matches_kubectl_kustomize(directory):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the built-in renderer cannot be compared with kustomize")
    output = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(output) if o}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in render_overlay(directory)}
    assert ours == theirs


def test_unsupported_kustomize_features_are_refused(tmp_path: Path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: [{name: x}]\n")
    with pytest.raises(ManifestError, match=r"\['configMapGenerator'\] not supported.*kubectl kustomize"):
        render_overlay(tmp_path)


def test_model_names_that_are_not_dns_labels_are_refused():
    with pytest.raises(ManifestError, match="not a DNS label"):
        rendered("kubernetes", model="Credit_LGD")
