"""The Kubernetes API calls the serving targets make, through the ``kubernetes_asyncio`` dynamic client.

The client is the one prefect-kubernetes ships. The connection comes from a prefect-kubernetes
``KubernetesCredentials`` block when one is named, else the in-cluster service account, else
``$KUBECONFIG`` / ``~/.kube/config``. Resources are found by discovery (``apiVersion`` + ``kind``), so
any kind the cluster serves works, including custom resources (ServiceMonitor, OpenShift's
ImageStream, Route, BuildConfig), and a kind it does not serve is a :class:`KubernetesError` with
status 404:

* ``read``   GET one object (``None`` when absent)
* ``apply``  server-side apply (``fieldManager=modelops``, ``force``): creates or updates, and owns
  only the fields it sets
* ``watch``  the changes of one object, from a ``resourceVersion`` on
* ``delete`` DELETE one object (absent is fine)
* ``serves`` whether the cluster serves a kind
* ``service_proxy`` a request to a Service through the API server's proxy
  (``/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy/{path}``), so the smoke test needs no
  network route into the cluster; it hands back the raw reply for the REST client to read.

``kubernetes_asyncio`` and ``prefect_kubernetes`` are imported inside :meth:`KubernetesApi.connect`
and the calls: they are heavy optional dependencies (about a second to import), needed only when a
cluster target deploys. ``aiohttp`` (their HTTP library, light) is imported at the top for its
exception types.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp

FIELD_MANAGER = "modelops"
CREDENTIALS_BLOCK_ENV = "MODELOPS_KUBERNETES_CREDENTIALS_BLOCK"
T = TypeVar("T")

_HINTS = {
    401: "the credentials were refused",
    403: "the service account lacks RBAC permission for this",
    422: "the object is invalid",
}


class KubernetesError(RuntimeError):
    """An API call failed; the message names the object, the HTTP status and the server's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class KubernetesApi:
    """Thin async wrapper over a ``kubernetes_asyncio`` dynamic client."""

    def __init__(self, dynamic: Any) -> None:
        self.dynamic = dynamic
        self.api_client = dynamic.client

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, credentials_block: str | None = None, configuration: Any = None
    ) -> AsyncIterator[KubernetesApi]:
        """Connect: ``configuration``, else a KubernetesCredentials block, in-cluster, kubeconfig."""
        from kubernetes_asyncio.client import ApiClient  # lazy: see the module's docstring
        from kubernetes_asyncio.dynamic import DynamicClient

        if configuration is None:
            configuration = await _configuration(credentials_block or os.environ.get(CREDENTIALS_BLOCK_ENV))
        async with ApiClient(configuration=configuration) as api_client:
            dynamic = await _reachable(configuration.host, lambda: DynamicClient(api_client))
            yield cls(dynamic)

    @property
    def host(self) -> str:
        return str(self.api_client.configuration.host)

    async def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes_asyncio.dynamic.exceptions import ResourceNotFoundError

        try:
            return await self._call(
                lambda: self.dynamic.resources.get(api_version=api_version, kind=kind),
                f"discover {kind} {api_version}",
            )
        except ResourceNotFoundError:
            raise KubernetesError(f"the cluster does not serve {kind} {api_version}", status=404) from None

    async def _call(self, request: Callable[[], Awaitable[T]], what: str) -> T:
        """One API call: an unreachable server and API errors become :class:`KubernetesError`."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            return await _reachable(self.host, request)
        except ApiException as exc:
            raise _error(what, exc.status, exc.body or exc.reason) from None

    async def _object(self, request: Callable[[], Awaitable[Any]], what: str) -> dict[str, Any]:
        """One call answered with an object (the dynamic client hands back error statuses as
        ``Status`` objects, not exceptions: the HTTP status decides here)."""
        response = await self._call(request, what)
        try:
            content = await response.read()
        finally:
            response.release()
        try:
            body = json.loads(content) if content else {}
        except ValueError:
            body = {"message": content[:500].decode(errors="replace")}
        if not 200 <= response.status < 300:
            raise _error(what, response.status, body)
        return body

    async def serves(self, api_version: str, kind: str) -> bool:
        try:
            await self._resource(api_version, kind)
        except KubernetesError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def read(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        resource = await self._resource(api_version, kind)
        try:
            return await self._object(
                lambda: self.dynamic.get(resource, name=name, namespace=namespace, serialize=False),
                f"read {kind} {namespace}/{name}",
            )
        except KubernetesError as exc:
            if exc.status == 404:
                return None
            raise

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        resource = await self._resource(obj["apiVersion"], obj["kind"])
        return await self._object(
            lambda: self.dynamic.server_side_apply(
                resource,
                body=obj,
                namespace=meta["namespace"],
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                serialize=False,
            ),
            f"apply {obj['kind']} {meta['namespace']}/{meta['name']}",
        )

    async def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        resource_version: str | None,
        timeout_s: int,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, object) for each change of one object after ``resource_version``, until
        ``timeout_s`` passes (the server ends the stream)."""
        from kubernetes_asyncio.watch import Watch  # lazy: see the module's docstring

        resource = await self._resource(api_version, kind)
        async with Watch() as watcher:  # closing it releases the stream's connection
            stream = self.dynamic.watch(
                resource,
                namespace=namespace,
                name=name,
                resource_version=resource_version,
                timeout=timeout_s,
                watcher=watcher,
            )
            while True:
                try:
                    event = await self._call(lambda: anext(stream), f"watch {kind} {namespace}/{name}")
                except StopAsyncIteration:
                    return
                yield event["type"], event["raw_object"]

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Gone afterwards: an absent object, or a kind the cluster does not serve, is fine."""
        try:
            resource = await self._resource(api_version, kind)
            await self._object(
                lambda: self.dynamic.delete(resource, name=name, namespace=namespace, serialize=False),
                f"delete {kind} {namespace}/{name}",
            )
        except KubernetesError as exc:
            if exc.status != 404:
                raise

    async def service_proxy(
        self, method: str, namespace: str, service: str, port: int | str, path: str, body: Any = None
    ) -> tuple[int, bytes]:
        """A request to a Service's port through the API server: (HTTP status, raw body).

        Raw on purpose: any status and body reach the REST client, which owns what a reply means.
        """
        response = await _reachable(
            self.host,
            lambda: self.api_client.call_api(
                service_proxy_path(namespace, service, port) + path,
                method,
                query_params=[],
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=30,
            ),
        )
        try:
            content = await response.read()
        finally:
            response.release()
        return response.status, content


def service_proxy_path(namespace: str, service: str, port: int | str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


async def _configuration(block_name: str | None) -> Any:
    from kubernetes_asyncio import config  # lazy: see the module's docstring
    from kubernetes_asyncio.client import Configuration

    configuration = Configuration()
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
        return configuration
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            # KUBECONFIG read now: the library reads it once, when first imported
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        except (config.ConfigException, OSError) as exc:
            raise KubernetesError(
                f"no Kubernetes connection: not in a cluster and no usable kubeconfig ({exc}); "
                f"set KUBECONFIG or name a KubernetesCredentials block in {CREDENTIALS_BLOCK_ENV}"
            ) from None
    return configuration


async def _reachable(host: str, request: Callable[[], Awaitable[T]]) -> T:
    try:
        return await request()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise KubernetesError(
            f"the Kubernetes API server {host} is unreachable ({exc}): check KUBECONFIG"
        ) from None


def _error(what: str, status: int | None, body: Any) -> KubernetesError:
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except ValueError:
            body = {"message": str(body)[:500]}
    reason = body.get("message") if isinstance(body, dict) else body
    hint = _HINTS.get(status or 0, "")
    return KubernetesError(f"{what} failed: HTTP {status}: {reason}" + (f" ({hint})" if hint else ""), status)
