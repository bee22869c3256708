"""FakeKubernetesApiServer: an in-process HTTP fake of the Kubernetes API calls the serving targets make.

It is a FAKE, not a cluster: it answers the REST calls of ``modelops.integrations.cluster.KubernetesApi``
over real HTTP on 127.0.0.1 (so the real ``kubernetes_asyncio`` client code runs), and simulates
just enough of a cluster to test apply / rollout / rollback:

* server-side apply (``PATCH`` with ``application/apply-patch+yaml``, ``fieldManager``, ``force``);
  core objects are checked against the real Kubernetes schema (kubernetes-validate) and refused with
  422 when invalid; a changed Deployment spec bumps ``metadata.generation``;
* a Deployment controller: an image registered as ready rolls out at once; an image that never
  gets ready leaves the rollout stuck the way ``maxSurge: 1, maxUnavailable: 0`` does (one extra
  unavailable pod, old pods kept) and reports ``ProgressDeadlineExceeded`` after a few reads;
* the service proxy answers as TF Serving would for the image the ready pods run
  (``GET /v1/models/m``, ``.../metadata``, ``POST ...:predict``), or 503 when no pod is ready.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from support.network import free_port

KUBERNETES_VERSION = "1.37.0"


@dataclass
class FakeImage:
    version: str
    ready: bool = True  # pods pass their readiness probe
    smoke_ok: bool = True  # :predict answers 200 with a score


class FakeKubernetesApiServer:
    def __init__(self, deadline_reads: int = 3) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.images: dict[str, FakeImage] = {}
        self.requests: list[tuple[str, str]] = []
        self.deadline_reads = deadline_reads
        # API groups this cluster does not serve: no Prometheus Operator installed.
        self.unserved_groups = {"monitoring.coreos.com"}
        self._serving_template: dict[str, dict[str, Any]] = {}  # deployment path -> template of ready pods
        self._reads_since_apply: dict[str, int] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        routes = [
            Route(
                "/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy/{rest:path}",
                self._proxy,
                methods=["GET", "POST"],
            ),
            Route("/{root:path}", self._resource, methods=["GET", "PATCH", "DELETE"]),
        ]
        self._server = uvicorn.Server(
            uvicorn.Config(Starlette(routes=routes), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeKubernetesApiServer:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake Kubernetes API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def configuration(self):
        from kubernetes_asyncio.client import Configuration

        configuration = Configuration(host=self.url)
        configuration.api_key = {"BearerToken": "Bearer fake-token"}
        return configuration

    def get(self, path: str) -> dict[str, Any] | None:
        return self.objects.get(path)

    # ---------------------------------------------------------------- objects

    async def _resource(self, request: Request) -> JSONResponse:
        path = request.url.path
        self.requests.append((request.method, path))
        if path.startswith("/apis/") and path.split("/")[2] in self.unserved_groups:
            return _status(404, "the server could not find the requested resource")
        if request.method == "GET":
            obj = self.objects.get(path)
            if obj is None:
                return _status(404, f"{path} not found")
            if obj["kind"] == "Deployment":
                self._reconcile(path, obj)
            return JSONResponse(obj)
        if request.method == "DELETE":
            if self.objects.pop(path, None) is None:
                return _status(404, f"{path} not found")
            self._serving_template.pop(path, None)
            return _status(200, "deleted")
        return await self._apply(request, path)

    async def _apply(self, request: Request, path: str) -> JSONResponse:
        if request.headers.get("content-type") != "application/apply-patch+yaml":
            return _status(415, f"expected a server-side apply, got {request.headers.get('content-type')}")
        if (
            request.query_params.get("fieldManager") != "modelops"
            or request.query_params.get("force") != "true"
        ):
            return _status(400, "apply needs fieldManager=modelops and force=true")
        if request.headers.get("authorization") != "Bearer fake-token":
            return _status(401, "Unauthorized")
        body = json.loads(await request.body())
        meta = body.get("metadata", {})
        if not path.endswith(f"/namespaces/{meta.get('namespace')}/{path.split('/')[-2]}/{meta.get('name')}"):
            return _status(
                400, f"object {meta.get('namespace')}/{meta.get('name')} does not match the path {path}"
            )
        invalid = _schema_errors(body)
        if invalid:
            return _status(422, f"{body['kind']} {meta['name']} is invalid: {invalid}")
        existing = self.objects.get(path)
        stored = copy.deepcopy(body)
        generation = 1
        if existing is not None:
            generation = existing["metadata"].get("generation", 1)
            if existing.get("spec") != body.get("spec"):
                generation += 1
        stored["metadata"]["generation"] = generation
        stored["metadata"].setdefault("uid", f"uid-{len(self.objects)}")
        if body["kind"] == "Deployment":
            stored["status"] = copy.deepcopy((existing or {}).get("status") or {})
            self._reads_since_apply[path] = 0
        if body["kind"] == "Route":
            stored["spec"].setdefault("host", f"{meta['name']}-{meta['namespace']}.apps.fake.example")
        self.objects[path] = stored
        return JSONResponse(stored)

    def _reconcile(self, path: str, deployment: dict[str, Any]) -> None:
        """The Deployment controller, one step per read."""
        reads = self._reads_since_apply[path] = self._reads_since_apply.get(path, 0) + 1
        generation = deployment["metadata"]["generation"]
        replicas = deployment["spec"].get("replicas", 1)
        template = deployment["spec"]["template"]
        if reads == 1:
            return  # the controller lags one read behind the apply
        image = self.images.get(_image(template))
        old = self._serving_template.get(path)
        if old == template or (image is not None and image.ready):
            self._serving_template[path] = copy.deepcopy(template)
            deployment["status"] = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
            }
            return
        old_ready = replicas if old is not None else 0
        status = {
            "observedGeneration": generation,
            "replicas": old_ready + 1,
            "updatedReplicas": 1,
            "readyReplicas": old_ready,
            "availableReplicas": old_ready,
            "unavailableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}],
        }
        if reads > self.deadline_reads:
            status["conditions"] = [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f"ReplicaSet has timed out progressing (image {_image(template)})",
                }
            ]
        deployment["status"] = status

    # ---------------------------------------------------------------- service proxy

    async def _proxy(self, request: Request) -> JSONResponse:
        ns, svc, rest = request.path_params["ns"], request.path_params["svc"], request.path_params["rest"]
        self.requests.append((request.method, request.url.path))
        if (
            request.path_params["port"] != "8501"
            or f"/api/v1/namespaces/{ns}/services/{svc}" not in self.objects
        ):
            return _status(404, f"service {ns}/{svc}:{request.path_params['port']} not found")
        deployment_path = f"/apis/apps/v1/namespaces/{ns}/deployments/{svc}"
        template = self._serving_template.get(deployment_path)
        if template is None:
            return _status(503, f"no endpoints available for service {svc}")
        image = self.images[_image(template)]
        model = template["metadata"]["annotations"]["modelops.io/model-name"]
        if request.method == "GET" and rest == f"v1/models/{model}":
            return JSONResponse(
                {"model_version_status": [{"version": image.version, "state": "AVAILABLE", "status": {}}]}
            )
        if request.method == "GET" and rest == f"v1/models/{model}/metadata":
            inputs = {"LOAN": {"dtype": "DT_FLOAT"}, "JOB": {"dtype": "DT_STRING"}}
            signature = {"signature_def": {"serving_default": {"inputs": inputs}}}
            return JSONResponse({"model_spec": {"name": model}, "metadata": {"signature_def": signature}})
        if request.method == "POST" and rest == f"v1/models/{model}:predict":
            if not image.smoke_ok:
                return JSONResponse({"error": "Could not find variable dense/kernel"}, status_code=500)
            return JSONResponse({"predictions": [0.25]})
        return JSONResponse({"error": f"Malformed request: {request.method} {rest}"}, status_code=404)


def _image(template: dict[str, Any]) -> str:
    return template["spec"]["containers"][0]["image"]


def _status(code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code},
        status_code=code,
    )


def _schema_errors(obj: dict[str, Any]) -> str | None:
    if "openshift.io" in obj.get("apiVersion", ""):
        return None  # no published schema bundled; tests/test_k8s_manifests.py checks these
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return exc.message
    return None
