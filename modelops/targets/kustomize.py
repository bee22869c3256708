"""Render a kustomization (an ``infra/k8s`` overlay) with the real kustomize: ``kubectl kustomize``.

kubectl has carried kustomize since 1.14 (v5 since kubectl 1.27), so no second tool is needed.
The per-model edits (names, image, namespace, replicas) are made after rendering by
:mod:`modelops.targets.manifests`, so the overlays on disk stay plain kustomize that
``kubectl apply -k`` accepts as they are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

KUBECTL_ENV = "MODELOPS_KUBECTL"  # a kubectl that is not on PATH
RENDER_TIMEOUT_S = 120.0


class ManifestError(ValueError):
    """A kustomization cannot be rendered, or a name is not valid."""


def kubectl_path() -> str:
    configured = os.environ.get(KUBECTL_ENV)
    found = configured if configured and Path(configured).is_file() else shutil.which(configured or "kubectl")
    if found is None:
        where = f"{KUBECTL_ENV}={configured!r} is not a file" if configured else "kubectl is not on PATH"
        raise ManifestError(
            f"{where}: the Kubernetes manifests are rendered with `kubectl kustomize`; install kubectl "
            f"(1.27 or later, kustomize v5) or set {KUBECTL_ENV} to its path"
        )
    return found


def render_overlay(directory: str | Path) -> list[dict[str, Any]]:
    """Every object of the kustomization in ``directory``, in the order kustomize lists them."""
    directory = Path(directory)
    if not (directory / "kustomization.yaml").is_file():
        raise ManifestError(f"{directory} has no kustomization.yaml")
    command = [kubectl_path(), "kustomize", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ManifestError(
            f"`kubectl kustomize {directory}` did not finish in {RENDER_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise ManifestError(f"`kubectl kustomize {directory}` failed: {reason}")
    try:
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    except yaml.YAMLError as exc:
        raise ManifestError(f"`kubectl kustomize {directory}` printed no valid YAML: {exc}") from None
