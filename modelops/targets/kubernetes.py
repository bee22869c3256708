"""The ``kubernetes`` and ``openshift`` serving targets: ``infra/k8s`` manifests applied through the API.

Deploy = push the image, render the overlay (``infra/k8s/overlays/<target>``), set the image,
namespace, replicas and model version, server-side apply every object, wait for the Deployment's
rollout (``observedGeneration``, ``updatedReplicas``, ``replicas``, ``availableReplicas`` as
``kubectl rollout status`` reads them), then check ``GET /v1/models/<name>`` and smoke-test
``:predict`` through the API server's service proxy. When the rollout stalls, times out or the
smoke test fails, the previous image and version are applied again (and waited for) and
:class:`DeployError` is raised; with no previous version the failed Deployment is deleted.

Rendering: a documented subset of kustomize, enough for these manifests and checked against
``kubectl kustomize`` by the tests: ``resources`` (files and directories), ``namespace``,
``images`` (``name`` -> ``newName``/``newTag``/``digest``), ``labels`` (``pairs``, optionally
``includeTemplates``; not ``includeSelectors``) and ``patches`` given by ``path``
(strategic merge: maps merge, lists of named items merge by ``name``, other lists are replaced).
The manifests are written for the model ``hmeq-risk``; for another model the names, selectors and
probe paths are rewritten after rendering.

On OpenShift the image is pushed to the project's ImageStream (``serving.registry`` is the
internal registry's route) and the Deployment names it as ``<image_stream>:<tag>``, resolved by
the ImageStream's local lookup policy; the URL reported is the Route's ``https://`` host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
import re
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml

from modelops.config import PROJECT_ROOT, ModelOpsConfig
from modelops.targets.base import DeployError, Rollout, ServingTarget
from modelops.targets.docker import SmokeTestError, Transport, is_available, smoke_test

log = logging.getLogger("modelops.targets.kubernetes")

K8S_DIR = PROJECT_ROOT / "infra" / "k8s"
BASE_MODEL = "hmeq-risk"
BASE_APP = f"{BASE_MODEL}-serving"
BASE_IMAGE_NAME = "modelops/hmeq-risk"
CONTAINER = "tfserving"
HTTP_PORT = 8501
VERSION_ANNOTATION = "modelops.io/model-version"
MODEL_ANNOTATION = "modelops.io/model-name"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches", "labels"}
# Apply order: what the Deployment refers to first.
_ORDER = ["ServiceAccount", "ConfigMap", "ImageStream", "Service", "Deployment", "Route"]


class ManifestError(ValueError):
    """A kustomization uses something the renderer does not support, or a name is not valid."""


# ---------------------------------------------------------------- rendering (kustomize subset)


def render_overlay(directory: str | Path) -> list[dict[str, Any]]:
    directory = Path(directory)
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise ManifestError(f"{directory} has no kustomization.yaml")
    kustomization = yaml.safe_load(path.read_text()) or {}
    unsupported = set(kustomization) - _SUPPORTED
    if unsupported:
        raise ManifestError(
            f"{path}: {sorted(unsupported)} not supported by the built-in renderer "
            f"(supported: {sorted(_SUPPORTED)}); use `kubectl kustomize` and apply its output instead"
        )
    objects: list[dict[str, Any]] = []
    for resource in kustomization.get("resources") or []:
        target = directory / resource
        if target.is_dir():
            objects.extend(render_overlay(target))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
    for patch in kustomization.get("patches") or []:
        if set(patch) != {"path"}:
            raise ManifestError(
                f"{path}: only `patches: - path: <file>` (strategic merge) is supported, got {patch}"
            )
        for doc in yaml.safe_load_all((directory / patch["path"]).read_text()):
            if doc:
                _apply_patch(objects, doc, directory / patch["path"])
    for rule in kustomization.get("labels") or []:
        _add_labels(objects, rule, path)
    if kustomization.get("namespace"):
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images") or []:
        _set_image(objects, image)
    return objects


def _apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any], source: Path) -> None:
    for obj in objects:
        if obj.get("kind") == patch.get("kind") and obj["metadata"]["name"] == patch["metadata"]["name"]:
            merged = _strategic_merge(obj, patch)
            obj.clear()
            obj.update(merged)
            return
    raise ManifestError(f"{source}: patch target {patch.get('kind')} {patch['metadata']['name']} not found")


def _add_labels(objects: list[dict[str, Any]], rule: dict[str, Any], source: Path) -> None:
    if rule.get("includeSelectors"):
        raise ManifestError(
            f"{source}: labels with includeSelectors: true are not supported by the built-in renderer"
        )
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(rule.get("pairs") or {})
        template = (obj.get("spec") or {}).get("template")
        if rule.get("includeTemplates") and isinstance(template, dict):
            template.setdefault("metadata", {}).setdefault("labels", {}).update(rule.get("pairs") or {})


def _strategic_merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if _named_list(base) and _named_list(patch):
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = next((i for i, b in enumerate(merged_list) if b["name"] == item["name"]), None)
            if match is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[match] = _strategic_merge(merged_list[match], item)
        return merged_list
    return copy.deepcopy(patch)


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def _set_image(objects: list[dict[str, Any]], rule: dict[str, str]) -> None:
    for container in _containers(objects):
        name, tag, digest = _split_image(container["image"])
        if name != rule["name"]:
            continue
        name = rule.get("newName", name)
        if rule.get("digest"):
            container["image"] = f"{name}@{rule['digest']}"
        else:
            tag = rule.get("newTag", tag)
            container["image"] = (
                f"{name}@{digest}" if digest and "newTag" not in rule else f"{name}:{tag}" if tag else name
            )


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    image, _, digest = image.partition("@")
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, None, digest or None
    return name, tag, digest or None


def _containers(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for obj in objects:
        pod = (obj.get("spec") or {}).get("template", {}).get("spec", {})
        found.extend(pod.get("initContainers") or [])
        found.extend(pod.get("containers") or [])
    return found


def customize(
    objects: list[dict[str, Any]],
    *,
    model_name: str,
    image: str,
    namespace: str,
    replicas: int,
    version: str,
    image_stream: str,
) -> list[dict[str, Any]]:
    """The rendered overlay for one model: names, probe paths, image, namespace, replicas, version."""
    app = f"{model_name}-serving".lower()
    if not _DNS_LABEL.match(app):
        raise ManifestError(
            f"model name {model_name!r} gives the object name {app!r}, which is not a DNS label "
            "([a-z0-9-], at most 63 characters): rename the model"
        )
    probe = f"/v1/models/{BASE_MODEL}"

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        if value == BASE_APP:
            return app
        if value == probe:
            return f"/v1/models/{model_name}"
        return value

    result = []
    for obj in objects:
        obj = rewrite(copy.deepcopy(obj))
        obj["metadata"]["namespace"] = namespace
        if obj["kind"] == "ImageStream":
            obj["metadata"]["name"] = image_stream
        if obj["kind"] == "Deployment":
            obj["spec"]["replicas"] = replicas
            for meta in (obj["metadata"], obj["spec"]["template"]["metadata"]):
                # On the pod template too: every version is a rollout, even with an unchanged tag.
                meta.setdefault("annotations", {}).update(
                    {VERSION_ANNOTATION: version, MODEL_ANNOTATION: model_name}
                )
            for container in obj["spec"]["template"]["spec"]["containers"]:
                if container["name"] == CONTAINER:
                    container["image"] = image
        result.append(obj)
    return sorted(result, key=lambda o: _ORDER.index(o["kind"]) if o["kind"] in _ORDER else len(_ORDER))


# ---------------------------------------------------------------- rollout status (as kubectl reads it)


def rollout_state(deployment: dict[str, Any], generation: int) -> tuple[str, str]:
    """``("done"|"waiting"|"failed", reason)`` for one read of the Deployment."""
    status = deployment.get("status") or {}
    wanted = deployment["spec"].get("replicas", 1)
    # Conditions describe the observed generation only: an older one's verdict says nothing about this one.
    if status.get("observedGeneration", 0) < generation:
        return "waiting", "the controller has not seen the new generation yet"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"progress deadline exceeded: {condition.get('message', '')}"
    updated = status.get("updatedReplicas", 0)
    if updated < wanted:
        return "waiting", f"{updated} of {wanted} new replicas updated"
    if status.get("replicas", 0) > updated:
        return "waiting", f"{status.get('replicas', 0) - updated} old replicas pending termination"
    available = status.get("availableReplicas", 0)
    if available < updated:
        return "waiting", f"{available} of {updated} updated replicas available"
    return "done", f"{available} replicas available"


# ---------------------------------------------------------------- the targets


def _run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine from sync code, also when the caller already runs an event loop (async flows)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class KubernetesTarget(ServingTarget):
    name = "kubernetes"
    overlay = "kubernetes"

    def __init__(
        self,
        config: ModelOpsConfig,
        *,
        connect: Callable[[], Any] | None = None,
        poll_interval_s: float = 2.0,
        manifests_dir: Path | None = None,
    ) -> None:
        """``connect()`` returns an async context manager yielding a :class:`KubernetesApi`-like object."""
        from modelops.integrations.cluster import KubernetesApi

        self.config = config
        self.namespace = config.serving.namespace
        self.timeout_s = config.serving.rollout_timeout_s
        self.poll_interval_s = poll_interval_s
        self.overlay_dir = (manifests_dir or K8S_DIR) / "overlays" / self.overlay
        self._connect = connect or KubernetesApi.connect

    # -- image

    def _publish(self, model_name: str, version: str, model_dir: Path, image: str | None) -> str:
        from modelops.integrations.image import ImageError, build_serving_image, docker_client, push_image

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
        from modelops.integrations.image import ImageError, docker_client, push_image

        try:
            client = docker_client(timeout=30)
        except ImageError:
            return
        if client.images.list(name=image):
            push_image(self.config, image, client=client)

    def cluster_image(self, pushed: str) -> str:
        return pushed

    # -- deploy

    def deploy(self, model_name: str, version: str, model_dir: Path, image: str | None = None) -> Rollout:
        version = str(version)
        pushed = self._publish(model_name, version, model_dir, image)
        return _run(self.deploy_async(model_name, version, pushed))

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
        from modelops.integrations.cluster import KubernetesError

        image = self.cluster_image(pushed_image)
        objects = self.render(model_name, version, image)
        deployment = next(o for o in objects if o["kind"] == "Deployment")
        name = deployment["metadata"]["name"]
        async with self._connect() as api:
            try:
                previous = await api.read("apps/v1", "Deployment", self.namespace, name)
                prev_image, prev_version = _served(previous)
                for obj in objects:
                    applied = await api.apply(obj)
                    if obj["kind"] == "Deployment":
                        generation = applied["metadata"].get("generation", 1)
                log.info(
                    "%s: applied %d objects; waiting for %s/%s to roll out %s",
                    self.name,
                    len(objects),
                    self.namespace,
                    name,
                    image,
                )
            except KubernetesError as exc:
                raise DeployError(f"{self.name}: {exc}") from None
            try:
                await self._wait_rollout(api, name, generation)
                transport = self._proxy_transport(api, name)
                if not await _in_thread(is_available, transport, model_name, version):
                    raise DeployError(f"the Service {name} does not report version {version} AVAILABLE")
                score = await _in_thread(smoke_test, transport, model_name)
            except (DeployError, SmokeTestError, KubernetesError) as exc:
                outcome = await self._roll_back(api, objects, previous, prev_image, prev_version, model_name)
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

    async def _wait_rollout(self, api: Any, name: str, generation: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        reason = "not read yet"
        while time.monotonic() < deadline:
            current = await api.read("apps/v1", "Deployment", self.namespace, name)
            if current is None:
                raise DeployError(f"the Deployment {self.namespace}/{name} disappeared during the rollout")
            state, reason = rollout_state(current, generation)
            if state == "done":
                return
            if state == "failed":
                raise DeployError(f"rollout of {name} failed: {reason}")
            await asyncio.sleep(self.poll_interval_s)
        raise DeployError(f"rollout of {name} not finished after {self.timeout_s:.0f} s ({reason})")

    def _proxy_transport(self, api: Any, service: str) -> Transport:
        loop = asyncio.get_running_loop()

        def call(method: str, path: str, body: Any) -> tuple[int, Any]:
            future = asyncio.run_coroutine_threadsafe(
                api.service_proxy(method, self.namespace, service, HTTP_PORT, path, body), loop
            )
            return future.result(timeout=60)

        return call

    async def _roll_back(
        self,
        api: Any,
        objects: list[dict[str, Any]],
        previous: dict[str, Any] | None,
        prev_image: str | None,
        prev_version: str | None,
        model_name: str,
    ) -> str:
        from modelops.integrations.cluster import KubernetesError

        deployment = next(o for o in objects if o["kind"] == "Deployment")
        name = deployment["metadata"]["name"]
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
            applied = await api.apply(restored)
            log.warning("%s: rolling %s back to %s (version %s)", self.name, name, prev_image, prev_version)
            await self._wait_rollout(api, name, applied["metadata"].get("generation", 1))
        except (DeployError, KubernetesError) as exc:
            return (
                f"ROLLBACK to {prev_image} ALSO FAILED ({exc}): check the Deployment {self.namespace}/{name}"
            )
        return f"rolled back to {prev_image} (version {prev_version}), which serves again"

    async def _url(self, api: Any, service: str) -> str:
        return f"http://{service}.{self.namespace}.svc:{HTTP_PORT}"

    # -- current / stop

    def current(self, model_name: str) -> Rollout | None:
        return _run(self._current(model_name))

    async def _current(self, model_name: str) -> Rollout | None:
        name = f"{model_name}-serving".lower()
        async with self._connect() as api:
            deployment = await api.read("apps/v1", "Deployment", self.namespace, name)
            if deployment is None:
                return None
            image, version = _served(deployment)
            url = await self._url(api, name)
        return Rollout(
            self.name, model_name, version or "", url, image, details={"namespace": self.namespace}
        )

    def stop(self, model_name: str) -> None:
        _run(self._stop(model_name))

    async def _stop(self, model_name: str) -> None:
        objects = self.render(model_name, "0", "unused")
        async with self._connect() as api:
            for obj in reversed(objects):
                if obj["kind"] == "ImageStream":
                    continue  # keeps the pushed images
                await api.delete(obj["apiVersion"], obj["kind"], self.namespace, obj["metadata"]["name"])


class OpenShiftTarget(KubernetesTarget):
    name = "openshift"
    overlay = "openshift"

    def cluster_image(self, pushed: str) -> str:
        # Pulled through the ImageStream (lookupPolicy.local): the in-cluster registry name differs.
        return f"{self.config.serving.image_stream}:{pushed.rpartition(':')[2]}"

    async def _url(self, api: Any, service: str) -> str:
        route = await api.read("route.openshift.io/v1", "Route", self.namespace, service)
        host = ((route or {}).get("spec") or {}).get("host")
        return f"https://{host}" if host else await super()._url(api, service)


def _served(deployment: dict[str, Any] | None) -> tuple[str | None, str | None]:
    if deployment is None:
        return None, None
    template = deployment["spec"]["template"]
    image = next((c["image"] for c in template["spec"]["containers"] if c["name"] == CONTAINER), None)
    annotations = template.get("metadata", {}).get("annotations") or {}
    return image, annotations.get(VERSION_ANNOTATION)


async def _in_thread(function: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(function, *args)
