"""The few Kubernetes API calls the serving targets make (talks to the Kubernetes API server).

Built on the client prefect-kubernetes ships (``kubernetes_asyncio``): the connection comes from a
prefect-kubernetes ``KubernetesCredentials`` block when one is named, else the in-cluster service
account, else ``$KUBECONFIG`` / ``~/.kube/config``. Calls are plain REST through the client's
``ApiClient`` (so its authentication and TLS settings apply):

* ``read``   GET one object (``None`` when absent)
* ``apply``  server-side apply (``PATCH`` ``application/apply-patch+yaml``, ``fieldManager=modelops``,
  ``force=true``): creates or updates, and owns only the fields it sets
* ``delete`` DELETE one object
* ``service_proxy`` a request to a Service through the API server's proxy
  (``/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy/{path}``), so the smoke test needs no
  network route into the cluster; it hands back the raw reply for the REST client to read.

``kubernetes_asyncio`` and ``prefect_kubernetes`` are imported inside :meth:`KubernetesApi.connect`:
they are heavy optional dependencies (about a second to import), needed only when a cluster target
deploys. ``aiohttp`` (their HTTP library, light) is imported at the top for its exception types.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

FIELD_MANAGER = "modelops"
CREDENTIALS_BLOCK_ENV = "MODELOPS_KUBERNETES_CREDENTIALS_BLOCK"

# (apiVersion, kind) -> plural resource name; every object here is namespaced.
RESOURCES: dict[tuple[str, str], str] = {
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Service"): "services",
    ("apps/v1", "Deployment"): "deployments",
    ("image.openshift.io/v1", "ImageStream"): "imagestreams",
    ("route.openshift.io/v1", "Route"): "routes",
    ("build.openshift.io/v1", "BuildConfig"): "buildconfigs",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
}


class KubernetesError(RuntimeError):
    """An API call failed; the message names the object, the HTTP status and the server's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def resource_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        plural = RESOURCES[(api_version, kind)]
    except KeyError:
        known = ", ".join(f"{k} ({v})" for v, k in RESOURCES)
        raise KubernetesError(f"no API path known for {kind} {api_version}; known kinds: {known}") from None
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class KubernetesApi:
    """Thin async wrapper over a ``kubernetes_asyncio.client.ApiClient``."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, credentials_block: str | None = None, configuration: Any = None
    ) -> AsyncIterator[KubernetesApi]:
        """Connect: ``configuration``, else a KubernetesCredentials block, in-cluster, kubeconfig."""
        from kubernetes_asyncio import config  # lazy: see the module's docstring
        from kubernetes_asyncio.client import ApiClient, Configuration

        if configuration is None:
            configuration = Configuration()
            block_name = credentials_block or os.environ.get(CREDENTIALS_BLOCK_ENV)
            if block_name:
                from prefect_kubernetes.credentials import KubernetesCredentials  # lazy: as above

                credentials = await KubernetesCredentials.load(block_name)
                if credentials.cluster_config is None:
                    config.load_incluster_config(client_configuration=configuration)
                else:
                    await config.load_kube_config_from_dict(
                        config_dict=credentials.cluster_config.config,
                        context=credentials.cluster_config.context_name,
                        client_configuration=configuration,
                    )
            else:
                try:
                    config.load_incluster_config(client_configuration=configuration)
                except config.ConfigException:
                    try:
                        await config.load_kube_config(client_configuration=configuration)
                    except (config.ConfigException, OSError) as exc:
                        raise KubernetesError(
                            f"no Kubernetes connection: not in a cluster and no usable kubeconfig ({exc}); "
                            f"set KUBECONFIG or name a KubernetesCredentials block in {CREDENTIALS_BLOCK_ENV}"
                        ) from None
        async with ApiClient(configuration=configuration) as api_client:
            yield cls(api_client)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """One REST call: (HTTP status, raw body); KubernetesError when the API server is unreachable."""
        try:
            response = await self.api_client.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=30,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubernetesError(
                f"the Kubernetes API server {self.host} is unreachable ({exc}): check KUBECONFIG"
            ) from None
        try:
            content = await response.read()
        finally:
            response.release()
        return response.status, content

    async def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """One REST call: (HTTP status, the JSON body parsed, or ``{"error": <text>}``)."""
        status, content = await self._send(method, path, **kwargs)
        text = content.decode(errors="replace")
        try:
            payload = json.loads(text) if text else None
        except ValueError:
            payload = {"error": text[:500]}
        return status, payload

    async def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        status, body = await self._call("GET", resource_path(api_version, kind, namespace, name))
        if status == 404:
            return None
        _check(status, body, f"read {kind} {namespace}/{name}")
        return body

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        status, body = await self._call(
            "PATCH",
            path,
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        _check(status, body, f"apply {obj['kind']} {meta['namespace']}/{meta['name']}")
        return body

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        status, body = await self._call("DELETE", resource_path(api_version, kind, namespace, name))
        if status != 404:
            _check(status, body, f"delete {kind} {namespace}/{name}")

    async def service_proxy(
        self, method: str, namespace: str, service: str, port: int | str, path: str, body: Any = None
    ) -> tuple[int, bytes]:
        """A request to a Service's port through the API server: (HTTP status, raw body)."""
        return await self._send(method, service_proxy_path(namespace, service, port) + path, body=body)


def service_proxy_path(namespace: str, service: str, port: int | str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


def _check(status: int, body: Any, what: str) -> None:
    if 200 <= status < 300:
        return
    reason = body.get("message") if isinstance(body, dict) else body
    hint = {
        401: "the credentials were refused",
        403: "the service account lacks RBAC permission for this",
        422: "the object is invalid",
    }.get(status, "")
    raise KubernetesError(f"{what} failed: HTTP {status}: {reason}" + (f" ({hint})" if hint else ""), status)
