"""A real Kubernetes control plane for the tests (scripts/k8s-control-plane), and pod networks.

``ControlPlane.start(run_dir)`` runs ``start.sh`` on free loopback ports: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler v1.20 (built once per machine by ``build.sh``, cached in
``~/.cache/k8s-1.20``), plus a fake node that makes pods Running and Ready without running them.
``stop()`` stops all of them. ``fake_node_rules()`` stages what the node does with an image.

``pod_network(ip)`` makes an address a pod can have reachable from this host: a network namespace
holding ``ip`` on one end of a veth pair, with a host route to it. A server started inside it with
``ip netns exec`` is what the API server's service proxy reaches when the fake node gives a pod that
IP. Needs root (``ip netns``); ``pod_networks_available()`` says whether this machine can.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.network import free_port

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "k8s-control-plane"
K8S_HOME = Path(os.environ.get("K8S_HOME", Path.home() / ".cache" / "k8s-1.20"))
REQUIRE_ENV = "MODELOPS_REQUIRE_K8S"


def unavailable(reason: str) -> None:
    """Skip, or fail when ``make test`` promised a control plane (MODELOPS_REQUIRE_K8S=1)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: scripts/test.sh built the control plane for these tests)")
    pytest.skip(reason)


@dataclass
class ControlPlane:
    run_dir: Path
    kubeconfig: Path
    api_port: int

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.run_dir / "pki" / "ca.crt"

    @classmethod
    def start(cls, run_dir: Path) -> ControlPlane:
        missing = [
            b
            for b in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
            if not (K8S_HOME / "bin" / b).exists()
        ]
        if missing:
            unavailable(
                f"no Kubernetes control plane built in {K8S_HOME}: run {SCRIPTS / 'build.sh'} (about 5 min)"
            )
        if shutil.which("etcd") is None or shutil.which("kubectl") is None:
            unavailable("etcd or kubectl is missing: run scripts/k8s-control-plane/build.sh")
        ports = {
            name: free_port()
            for name in ("APISERVER", "ETCD", "ETCD_PEER", "ETCD_METRICS", "KCM", "SCHEDULER")
        }
        env = {**os.environ, "K8S_HOME": str(K8S_HOME), "K8S_RUN": str(run_dir)}
        env.update({f"K8S_{name}_PORT": str(port) for name, port in ports.items()})
        plane = cls(run_dir, run_dir / "pki" / "kubeconfig", ports["APISERVER"])
        try:
            result = subprocess.run(
                [str(SCRIPTS / "start.sh")], env=env, capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            plane.stop()
            pytest.fail(f"the control plane did not start within 300 s; logs in {run_dir / 'logs'}")
        if result.returncode != 0:
            plane.stop()
            pytest.fail(f"the control plane did not start: {result.stderr.strip()[-2000:]}")
        return plane

    def stop(self) -> None:
        subprocess.run([str(SCRIPTS / "stop.sh"), str(self.run_dir)], check=False, timeout=120)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def fake_node_rules(
        self, *, never_ready_images: Sequence[str] = (), pod_ips: dict[str, str] | None = None
    ) -> None:
        """What the fake node does from its next pass on (see fake_node.py): replaces earlier rules."""
        rules = {"never_ready_images": list(never_ready_images), "pod_ips": pod_ips or {}}
        path = self.run_dir / "fake-node-rules.json"
        staged = path.with_suffix(".tmp")
        staged.write_text(json.dumps(rules))
        staged.replace(path)  # the node never reads half a file

    def apply_kustomization(self, directory: Path, namespace: str, workdir: Path) -> list[dict[str, Any]]:
        """Render ``directory`` with kustomize into ``namespace`` and server-side apply it; the objects.

        Through an overlay in ``workdir`` with a NamespaceTransformer that also moves RoleBinding
        subjects (a plain ``namespace:`` moves only subjects named "default"); kustomize wants a
        relative path to the base.
        """
        overlay = workdir / f"{directory.name}-in-{namespace}"
        overlay.mkdir(parents=True)
        transformer = {
            "apiVersion": "builtin",
            "kind": "NamespaceTransformer",
            "metadata": {"name": "namespace", "namespace": namespace},
            "setRoleBindingSubjects": "allServiceAccounts",
        }
        kustomization = {
            "resources": [os.path.relpath(directory, overlay)],
            "transformers": [yaml.safe_dump(transformer)],
        }
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        rendered = self.kubectl("kustomize", str(overlay))
        self.kubectl("apply", "--server-side", "-f", "-", input=rendered)
        return [doc for doc in yaml.safe_load_all(rendered) if doc]

    def create_namespace(self, prefix: str = "t") -> str:
        namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", namespace)
        return namespace


def pod_networks_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"mo-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return made


@contextmanager
def pod_network(ip: str) -> Iterator[str]:
    """A network namespace holding ``ip`` (reachable from the host); yields its name."""
    tag = uuid.uuid4().hex[:6]
    namespace, host_end, pod_end = f"mo-pod-{tag}", f"mh{tag}", f"mp{tag}"  # interface names <= 15 chars
    gateway = "169.254.77.1"

    def ip_cmd(*args: str) -> None:
        result = subprocess.run(["ip", *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")

    ip_cmd("netns", "add", namespace)
    try:
        ip_cmd("link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        ip_cmd("link", "set", pod_end, "netns", namespace)
        ip_cmd("addr", "add", f"{gateway}/32", "dev", host_end)
        ip_cmd("link", "set", host_end, "up")
        ip_cmd("-n", namespace, "addr", "add", f"{ip}/32", "dev", pod_end)
        ip_cmd("-n", namespace, "link", "set", pod_end, "up")
        ip_cmd("-n", namespace, "link", "set", "lo", "up")
        ip_cmd("route", "add", f"{ip}/32", "dev", host_end)
        ip_cmd("-n", namespace, "route", "add", f"{gateway}/32", "dev", pod_end)
        ip_cmd("-n", namespace, "route", "add", "default", "via", gateway, "dev", pod_end)
        yield namespace
    finally:
        pids = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            subprocess.run(["kill", "-9", pid], capture_output=True)
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@contextmanager
def serving_pod(ip: str, model_name: str, base_path: Path, version: str, log_path: Path) -> Iterator[str]:
    """The project's TF-Serving-compatible server for ``version`` of ``base_path``, at ``ip``:8501 in
    its own pod network; yields its URL once the version is AVAILABLE (from this host)."""
    from modelops.serving.rest_client import ServingClient

    with pod_network(ip) as namespace, log_path.open("ab") as log_file:
        command = [
            "ip", "netns", "exec", namespace, str(Path(sys.executable).parent / "modelops"), "serve",
            "--model-name", model_name, "--model-base-path", str(base_path), "--versions", version,
            "--host", ip, "--port", "8501",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        url = f"http://{ip}:8501"
        try:
            ServingClient(url).wait_until_available(model_name, version, timeout=180)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def service_account_kubeconfig(plane: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig at ``path`` that authenticates as ``namespace/account`` with its own token (1.20's
    token controller puts one in a Secret it lists on the account), so RBAC applies to what uses it."""
    deadline = time.monotonic() + 60
    secret = ""
    while not secret and time.monotonic() < deadline:
        secret = plane.kubectl(
            "-n", namespace, "get", "serviceaccount", account, "-o", "jsonpath={.secrets[0].name}"
        ).strip()
        if not secret:
            time.sleep(0.2)
    assert secret, f"no token Secret for {namespace}/{account} after 60 s"
    token = plane.kubectl(
        "-n", namespace, "get", "secret", secret, "-o", "go-template={{.data.token | base64decode}}"
    ).strip()
    cluster = {"server": plane.server, "certificate-authority": str(plane.ca_file)}
    context = {"cluster": "c", "user": account, "namespace": namespace}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "c", "context": context}],
                "current-context": "c",
            }
        )
    )
    path.chmod(0o600)
    return path
