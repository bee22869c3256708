"""Images run as a non-root user; every pod (Deployments and the client Job) is locked down; no secret
value in a manifest or a Dockerfile. tests/test_k8s_manifests.py checks Deployments/Pods; this file adds
the Job (client + log sidecar), the Dockerfiles and secret handling in manifests."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from support.manifests import all_objects

from modelops.config import PROJECT_ROOT

DOCKER_DIR = PROJECT_ROOT / "infra" / "docker"
FINAL_IMAGES = ["Dockerfile", "client.Dockerfile"]  # standin/ builds a base image, like tensorflow/serving
SECRET_NAME = re.compile(r"(?i)(password|passwd|token|secret|api_?key|webhook|credential)")


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


@pytest.mark.parametrize("name", FINAL_IMAGES)
def test_final_images_switch_to_a_numeric_non_root_user(name):
    instructions = _instructions(DOCKER_DIR / name)
    last_stage = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    users = [arg for op, arg in instructions[last_stage:] if op == "USER"]
    assert users, f"{name}: no USER after the last FROM: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), f"{name}: USER {users[-1]}: Kubernetes' runAsNonRoot can only verify a numeric UID"
    assert int(user) != 0 and user not in {"root"}, f"{name}: USER {users[-1]} is root"
    assert group in {"", "0"} or group.isdigit()


@pytest.mark.parametrize("name", [p.name for p in DOCKER_DIR.rglob("*Dockerfile")])
def test_dockerfiles_carry_no_secret_values(name):
    path = next(DOCKER_DIR.rglob(name))
    for op, argument in _instructions(path):
        if op in {"ARG", "ENV"}:
            key = re.split(r"[=\s]", argument, maxsplit=1)[0]
            assert not SECRET_NAME.search(key), (
                f"{name}: {op} {key}: pass secrets at run time, never in the image"
            )


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for label, obj in all_objects():
        kind = obj.get("kind")
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((label, obj["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            found.append((label, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "Pod":
            found.append((label, obj["spec"]))
    return found


POD_SPECS = _pod_specs()


def test_the_client_job_is_among_the_checked_pods():
    assert any(label.startswith("client/Job/") for label, _ in POD_SPECS), [label for label, _ in POD_SPECS]


@pytest.mark.parametrize(("label", "pod"), POD_SPECS, ids=[label for label, _ in POD_SPECS])
def test_every_pod_is_non_root_unprivileged_and_bounded(label, pod):
    pod_security = pod.get("securityContext") or {}
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    assert pod.get("automountServiceAccountToken") is False, f"{label}: mounts an API token it does not need"
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        name = f"{label}/{container['name']}"
        security = container.get("securityContext") or {}
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True, name
        assert security.get("allowPrivilegeEscalation") is False, name
        assert security.get("privileged") is not True, name
        assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0, name
        assert "ALL" in (security.get("capabilities") or {}).get("drop", []), (
            f"{name}: capabilities not dropped"
        )
        resources = container.get("resources") or {}
        assert {"cpu", "memory"} <= set(resources.get("limits") or {}), f"{name}: no cpu/memory limits"
        assert {"cpu", "memory"} <= set(resources.get("requests") or {}), f"{name}: no cpu/memory requests"
        long_running = (
            container in pod.get("initContainers", []) and container.get("restartPolicy") == "Always"
        )
        long_running = long_running or not label.startswith("client/")
        if long_running:  # servers and native sidecars are watched; a batch container just ends
            assert "livenessProbe" in container, f"{name}: no liveness probe"
        for variable in container.get("env", []):
            if SECRET_NAME.search(variable["name"]) or variable["name"].endswith("DATABASE_URL"):
                assert "value" not in variable, (
                    f"{name}: {variable['name']} has a literal value: use valueFrom"
                )


def test_serving_pods_have_readiness_and_liveness_probes():
    serving = [(label, pod) for label, pod in POD_SPECS if not label.startswith("client/")]
    assert serving
    for label, pod in serving:
        for container in pod["containers"]:
            assert "readinessProbe" in container and "livenessProbe" in container, (
                f"{label}/{container['name']}"
            )
