"""The Kubernetes objects under infra/k8s, rendered as a deploy renders them (tests validate them)."""

from __future__ import annotations

from typing import Any

import yaml

from modelops.targets.kubernetes import K8S_DIR, customize, render_overlay

OVERLAYS = ["kubernetes", "openshift"]
CLIENT_DIR = K8S_DIR / "client"  # the client app + log sidecar, owned by another engineer


def rendered(overlay: str, model: str = "hmeq-risk") -> list[dict[str, Any]]:
    """The objects of ``overlays/<overlay>`` for ``model`` (image v3, namespace risk-models, 2 replicas)."""
    return customize(
        render_overlay(K8S_DIR / "overlays" / overlay),
        model_name=model,
        image=f"registry.example.com/modelops/{model}:v3",
        namespace="risk-models",
        replicas=2,
        version="3",
        image_stream=model,
    )


def client_objects() -> list[dict[str, Any]]:
    if not CLIENT_DIR.is_dir():
        return []
    if (CLIENT_DIR / "kustomization.yaml").is_file():
        return render_overlay(CLIENT_DIR)
    return [
        doc
        for path in sorted(CLIENT_DIR.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def all_objects() -> list[tuple[str, dict[str, Any]]]:
    """Every object of every overlay, another model's objects and the client's, each with a label."""
    found = [
        (f"{overlay}/{obj['kind']}/{obj['metadata']['name']}", obj)
        for overlay in OVERLAYS
        for obj in rendered(overlay)
    ]
    found += [(f"another-model/{o['kind']}", o) for o in rendered("kubernetes", model="credit-lgd")]
    found += [(f"client/{o.get('kind')}/{o.get('metadata', {}).get('name')}", o) for o in client_objects()]
    return found
