#!/usr/bin/env python3
"""A fake kubelet (in the spirit of kwok) for the test control plane: standard library only.

Registers ``--nodes`` Ready nodes, renews their heartbeats and leases, and moves every pod bound to
them from Pending to Running and Ready (containers do not run). A pod being deleted is finalized, as
a kubelet does once its containers are gone. Stops by itself after ``--seconds``.

``--rules FILE`` (JSON, re-read on every pass, absent = no rules) lets a test stage what a real
node would do with a given image:

* ``"never_ready_images": ["<substring>", ...]``: pods whose first container's image contains one of
  these run but never pass readiness (a rollout that never becomes available);
* ``"pod_ips": {"<image>": "<ip>"}``: pods of that exact image get that IP, so a test can put a real
  server there (for example in a network namespace) and reach it through the API server's proxy.

Vendored from the team's recipe (shared/recipes/k8s-control-plane) with the rules added.
"""

from __future__ import annotations

import argparse
import datetime
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MERGE = "application/strategic-merge-patch+json"


class Api:
    def __init__(self, server: str, token: str, cacert: str) -> None:
        self.server, self.token = server, token
        self.context = ssl.create_default_context(cafile=cacert)

    def call(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.server + path,
            data=data,
            method=method,
            headers={
                "Authorization": "Bearer " + self.token,
                "Content-Type": ctype,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError) as exc:  # API server down or restarting: say so, carry on
            print("request failed:", method, path, exc, flush=True)
            return 0, {}


def now(micro: bool = False) -> str:
    stamp = datetime.datetime.now(datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def node_conditions() -> list[dict[str, str]]:
    stamp = now()
    pressure = [
        ("MemoryPressure", "SufficientMemory"),
        ("DiskPressure", "NoDiskPressure"),
        ("PIDPressure", "SufficientPID"),
    ]
    rows = [("Ready", "True", "KubeletReady")] + [
        (kind, "False", "KubeletHas" + reason) for kind, reason in pressure
    ]
    return [
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "fake",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }
        for kind, status, reason in rows
    ]


def register(api: Api, name: str) -> None:
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "fake"},
        },
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": node_conditions(),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "architecture": "amd64",
                "operatingSystem": "linux",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": "",
                "osImage": "",
                "containerRuntimeVersion": "fake://0",
            },
        },
    }
    print("create node", name, api.call("POST", "/api/v1/nodes", node)[0], flush=True)


def heartbeat(api: Api, name: str) -> None:
    api.call("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"conditions": node_conditions()}}, MERGE)
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now(True)},
    }
    status, _ = api.call(
        "PUT", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}", lease
    )
    if status == 404:
        api.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)


def read_rules(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print("rules unreadable, ignored:", exc, flush=True)
        return {}


class Kubelet:
    def __init__(self, api: Api, nodes: list[str], rules_file: Path | None) -> None:
        self.api, self.nodes, self.rules_file = api, nodes, rules_file
        self.pods_started = 0

    def never_ready(self, image: str, rules: dict[str, Any]) -> bool:
        return any(marker in image for marker in rules.get("never_ready_images", []))

    def sync(self) -> None:
        rules = read_rules(self.rules_file)
        _, pods = self.api.call("GET", "/api/v1/pods")
        for pod in pods.get("items", []):
            if pod["spec"].get("nodeName") in self.nodes:
                self.sync_pod(pod, rules)

    def sync_pod(self, pod: dict[str, Any], rules: dict[str, Any]) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        image = pod["spec"]["containers"][0]["image"]
        ready = not self.never_ready(image, rules)
        if meta.get("deletionTimestamp"):
            options = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]},
            }
            print(
                "pod",
                meta["namespace"],
                meta["name"],
                "finalized delete",
                self.api.call("DELETE", path, options)[0],
                flush=True,
            )
            return
        phase = pod["status"].get("phase")
        if phase == "Running":
            # the node lifecycle controller marks pods NotReady while a node was NotReady: re-assert it
            conditions = pod["status"].get("conditions", [])
            if ready and any(c["type"] == "Ready" and c["status"] != "True" for c in conditions):
                stamp = now()
                patch = {
                    "status": {
                        "conditions": [
                            {"type": t, "status": "True", "lastTransitionTime": stamp}
                            for t in ("Ready", "ContainersReady")
                        ]
                    }
                }
                print(
                    "pod",
                    meta["namespace"],
                    meta["name"],
                    "ready again",
                    self.api.call("PATCH", path + "/status", patch, MERGE)[0],
                    flush=True,
                )
            return
        if phase != "Pending":
            return
        self.pods_started += 1
        stamp = now()
        ip = rules.get("pod_ips", {}).get(image) or f"10.244.0.{self.pods_started % 250 + 2}"
        flag = "True" if ready else "False"
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "fake://" + c["image"],
                "containerID": f"fake://{c['name']}-{self.pods_started}",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": stamp}},
            }
            for c in pod["spec"]["containers"]
        ]
        conditions = [
            {"type": t, "status": "True", "lastTransitionTime": stamp}
            for t in ("Initialized", "PodScheduled")
        ]
        conditions += [
            {"type": t, "status": flag, "lastTransitionTime": stamp} for t in ("Ready", "ContainersReady")
        ]
        status = {
            "status": {
                "phase": "Running",
                "hostIP": "127.0.0.1",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": stamp,
                "conditions": conditions,
                "containerStatuses": containers,
            }
        }
        code = self.api.call("PATCH", path + "/status", status, MERGE)[0]
        print(
            "pod",
            meta["namespace"],
            meta["name"],
            "->Running",
            "ready" if ready else "NOT ready",
            ip,
            code,
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="https://127.0.0.1:16443")
    parser.add_argument("--token", required=True)
    parser.add_argument("--cacert", required=True)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--rules", type=Path, default=None)
    args = parser.parse_args()
    api = Api(args.server, args.token, args.cacert)
    nodes = [f"fake-node-{i}" for i in range(1, args.nodes + 1)]
    for name in nodes:
        register(api, name)
    kubelet = Kubelet(api, nodes, args.rules)
    deadline = time.time() + args.seconds
    last_heartbeat = 0.0
    while time.time() < deadline:
        if time.time() - last_heartbeat > 10:
            for name in nodes:
                heartbeat(api, name)
            last_heartbeat = time.time()
        kubelet.sync()
        time.sleep(0.5)
    print("fake node: time up, exiting", flush=True)


if __name__ == "__main__":
    main()
