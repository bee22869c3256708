"""The ``kubernetes`` serving target: ``infra/k8s`` manifests applied through the Kubernetes API.

Deploy = push the image, render the overlay (``infra/k8s/overlays/<target>``, see
:mod:`modelops.targets.kustomize` and :mod:`modelops.targets.manifests`), server-side apply every
object, follow the Deployment with a watch until its rollout is done
(:mod:`modelops.targets.rollout_status`), then check
``GET /v1/models/<name>`` and smoke-test ``:predict`` with :mod:`modelops.serving.rest_client`
through the API server's service proxy. When the rollout stalls, times out or the smoke test
fails, the previous image and version are applied again (and waited for) and :class:`DeployError`
is raised; with no previous version the failed Deployment is deleted.

The target's methods are synchronous; the API calls are asyncio, run by
:func:`modelops.targets.async_bridge.run_sync`. OpenShift: :mod:`modelops.targets.openshift`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelops.config import ModelOpsConfig
from modelops.integrations.cluster import KubernetesApi, KubernetesError, service_proxy_path
from modelops.integrations.image import ImageError, build_serving_image, docker_client, push_image
from modelops.serving.rest_client import AsyncServingClient, Reply, ServingClientError
from modelops.targets.async_bridge import run_sync
from modelops.targets.base import DeployError, Rollout, ServingTarget
from modelops.targets.kustomize import ManifestError, render_overlay
from modelops.targets.manifests import (
    ADD_ON_KINDS,
    HTTP_PORT,
    K8S_DIR,
    app_name,
    customize,
    deployment_of,
    served,
    without_replicas,
)
from modelops.targets.rollout_status import rollout_state

log = logging.getLogger("modelops.targets.kubernetes")


class ServiceProxyTransport:
    """The REST client's transport to a Service's port through the API server's service proxy."""

    def __init__(self, api: KubernetesApi, namespace: str, service: str, port: int = HTTP_PORT) -> None:
        self.api = api
        self.namespace, self.service, self.port = namespace, service, port
        self.base = api.host.rstrip("/") + service_proxy_path(namespace, service, port)

    async def send(self, method: str, path: str, payload: Any = None) -> Reply:
        try:
            status, content = await self.api.service_proxy(
                method, self.namespace, self.service, self.port, path, payload
            )
        except KubernetesError as exc:
            raise ServingClientError(str(exc), kind="connect") from None
        return Reply(status, content)


class KubernetesTarget(ServingTarget):
    name = "kubernetes"
    overlay = "kubernetes"

    def __init__(
        self,
        config: ModelOpsConfig,
        *,
        connect: Callable[[], Any] | None = None,
        manifests_dir: Path | None = None,
    ) -> None:
        """``connect()`` returns an async context manager yielding a :class:`KubernetesApi`."""
        self.config = config
        self.namespace = config.serving.namespace
        self.timeout_s = config.serving.rollout_timeout_s
        self.overlay_dir = (manifests_dir or K8S_DIR) / "overlays" / self.overlay
        self._connect = connect or KubernetesApi.connect

    # -- image

    def _publish(self, model_name: str, version: str, model_dir: Path, image: str | None) -> str:
        try:
            if image is None:
                client = docker_client()
                image = build_serving_image(
                    self.config, model_dir, version, f"v{version}", model_name=model_name, client=client
                )
                push_image(self.config, image, client=client)
            else:
                self._push_if_local(image)
        except ImageError as exc:
            raise DeployError(f"{self.name}: {exc}") from None
        return image

    def _push_if_local(self, image: str) -> None:
        """A given image is pushed when this machine has it; otherwise it must already be in the registry."""
        try:
            client = docker_client(timeout=30)
        except ImageError:
            return
        if client.images.list(name=image):
            push_image(self.config, image, client=client)

    def cluster_image(self, pushed: str) -> str:
        return pushed

    async def _url(self, api: Any, service: str) -> str:
        return f"http://{service}.{self.namespace}.svc:{HTTP_PORT}"

    # -- deploy

    def deploy(self, model_name: str, version: str, model_dir: Path, image: str | None = None) -> Rollout:
        version = str(version)
        pushed = self._publish(model_name, version, model_dir, image)
        return run_sync(self.deploy_async(model_name, version, pushed))

    def render(self, model_name: str, version: str, image: str) -> list[dict[str, Any]]:
        try:
            return customize(
                render_overlay(self.overlay_dir),
                model_name=model_name,
                image=image,
                namespace=self.namespace,
                replicas=self.config.serving.replicas,
                version=version,
                image_stream=self.config.serving.image_stream,
            )
        except ManifestError as exc:
            raise DeployError(f"{self.name}: {exc}") from None

    async def deploy_async(self, model_name: str, version: str, pushed_image: str) -> Rollout:
        try:
            return await self._deploy(model_name, version, pushed_image)
        except KubernetesError as exc:  # no connection at all (the steps inside handle their own)
            raise DeployError(f"{self.name}: {exc}") from None

    async def _deploy(self, model_name: str, version: str, pushed_image: str) -> Rollout:
        image = self.cluster_image(pushed_image)
        objects = self.render(model_name, version, image)
        name = deployment_of(objects)["metadata"]["name"]
        async with self._connect() as api:
            previous, applied = await self._apply(api, objects, name, image)
            prev_image, prev_version = served(previous)
            try:
                await self._wait_rollout(api, applied)
                score = await self._check_service(api, name, model_name, version)
            except (DeployError, ServingClientError, KubernetesError) as exc:
                outcome = await self._roll_back(api, objects, previous, model_name)
                raise DeployError(
                    f"{self.name}: {model_name} version {version} failed: {exc}; {outcome}"
                ) from None
            url = await self._url(api, name)
        log.info(
            "%s: %s version %s serves (smoke score %.4f) at %s", self.name, model_name, version, score, url
        )
        return Rollout(
            target=self.name,
            model_name=model_name,
            version=version,
            url=url,
            image=image,
            previous_version=prev_version,
            details={"namespace": self.namespace, "deployment": name, "previous_image": prev_image},
        )

    async def _apply(
        self, api: Any, objects: list[dict[str, Any]], name: str, image: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Server-side apply every object; returns (the Deployment before, the applied Deployment)."""
        try:
            previous = await api.read("apps/v1", "Deployment", self.namespace, name)
            objects = await self._leave_replicas_to_autoscaler(api, objects)
            applied_deployment: dict[str, Any] = {}
            for obj in objects:
                try:
                    applied = await api.apply(obj)
                except KubernetesError as exc:
                    if obj["kind"] in ADD_ON_KINDS and getattr(exc, "status", None) == 404:
                        log.warning(
                            "%s: skipped %s (not served by this cluster): %s", self.name, obj["kind"], exc
                        )
                        continue
                    raise
                if obj["kind"] == "Deployment":
                    applied_deployment = applied
        except KubernetesError as exc:
            raise DeployError(f"{self.name}: {exc}") from None
        log.info(
            "%s: applied %d objects; waiting for %s/%s to roll out %s",
            self.name,
            len(objects),
            self.namespace,
            name,
            image,
        )
        return previous, applied_deployment

    async def _leave_replicas_to_autoscaler(
        self, api: Any, objects: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Without the Deployment's ``spec.replicas`` when the cluster serves the overlay's HPA, which
        owns that field (``serving.replicas`` is its floor): applying it would reset the HPA's count."""
        hpa = next((o for o in objects if o["kind"] == "HorizontalPodAutoscaler"), None)
        if hpa is None or not await api.serves(hpa["apiVersion"], hpa["kind"]):
            return objects
        return [without_replicas(o) if o["kind"] == "Deployment" else o for o in objects]

    async def _wait_rollout(self, api: Any, deployment: dict[str, Any]) -> None:
        """Follow the Deployment (a watch, no polling) until its rollout is done, failed or too long."""
        name = deployment["metadata"]["name"]
        generation = deployment["metadata"].get("generation", 1)
        deadline = time.monotonic() + self.timeout_s
        current: dict[str, Any] | None = deployment
        while True:
            if current is None:
                raise DeployError(f"the Deployment {self.namespace}/{name} disappeared during the rollout")
            state, reason = rollout_state(current, generation)
            if state == "done":
                return
            if state == "failed":
                raise DeployError(f"rollout of {name} failed: {reason}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeployError(f"rollout of {name} not finished after {self.timeout_s:.0f} s ({reason})")
            current = await self._next_change(api, current, remaining)

    async def _next_change(self, api: Any, current: dict[str, Any], wait_s: float) -> dict[str, Any] | None:
        """The Deployment after its next change (``None`` once deleted), or as it is after ``wait_s``."""
        meta = current["metadata"]
        changes = api.watch(
            "apps/v1",
            "Deployment",
            self.namespace,
            meta["name"],
            meta.get("resourceVersion"),
            timeout_s=max(1, min(60, math.ceil(wait_s))),
        )
        try:
            async with asyncio.timeout(wait_s + 5):  # the server ends the watch; this guards a silent one
                async for kind, obj in changes:
                    if kind == "DELETED":
                        return None
                    if kind in ("ADDED", "MODIFIED"):
                        return obj
        except (TimeoutError, KubernetesError) as exc:  # e.g. 410 Gone: resourceVersion too old
            log.debug("%s: watch of %s ended (%s); reading it again", self.name, meta["name"], exc)
        finally:
            await changes.aclose()
        return await api.read("apps/v1", "Deployment", self.namespace, meta["name"])

    async def _check_service(self, api: Any, service: str, model_name: str, version: str) -> float:
        """The Service reports ``version`` AVAILABLE and a smoke record gets a probability; its score."""
        serving = AsyncServingClient(ServiceProxyTransport(api, self.namespace, service))
        if not await serving.is_available(model_name, version):
            raise DeployError(f"the Service {service} does not report version {version} AVAILABLE")
        return (await serving.smoke_test(model_name))[0]

    async def _roll_back(
        self,
        api: Any,
        objects: list[dict[str, Any]],
        previous: dict[str, Any] | None,
        model_name: str,
    ) -> str:
        deployment = deployment_of(objects)
        name = deployment["metadata"]["name"]
        prev_image, prev_version = served(previous)
        try:
            if previous is None or prev_image is None:
                await api.delete("apps/v1", "Deployment", self.namespace, name)
                return f"nothing served before, so the Deployment {name} was deleted"
            restored = customize(
                [deployment],
                model_name=model_name,
                image=prev_image,
                namespace=self.namespace,
                replicas=self.config.serving.replicas,
                version=prev_version or "",
                image_stream=self.config.serving.image_stream,
            )[0]
            hpa = [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]
            restored = (await self._leave_replicas_to_autoscaler(api, [restored, *hpa]))[0]
            applied = await api.apply(restored)
            log.warning("%s: rolling %s back to %s (version %s)", self.name, name, prev_image, prev_version)
            await self._wait_rollout(api, applied)
        except (DeployError, KubernetesError) as exc:
            return (
                f"ROLLBACK to {prev_image} ALSO FAILED ({exc}): check the Deployment {self.namespace}/{name}"
            )
        return f"rolled back to {prev_image} (version {prev_version}), which serves again"

    # -- current / stop

    def current(self, model_name: str) -> Rollout | None:
        return run_sync(self._current(model_name))

    async def _current(self, model_name: str) -> Rollout | None:
        name = app_name(model_name)
        async with self._connect() as api:
            deployment = await api.read("apps/v1", "Deployment", self.namespace, name)
            if deployment is None:
                return None
            image, version = served(deployment)
            url = await self._url(api, name)
        return Rollout(
            self.name, model_name, version or "", url, image, details={"namespace": self.namespace}
        )

    def stop(self, model_name: str) -> None:
        run_sync(self._stop(model_name))

    async def _stop(self, model_name: str) -> None:
        objects = self.render(model_name, "0", "unused")
        async with self._connect() as api:
            for obj in reversed(objects):
                if obj["kind"] == "ImageStream":
                    continue  # keeps the pushed images
                await api.delete(obj["apiVersion"], obj["kind"], self.namespace, obj["metadata"]["name"])
