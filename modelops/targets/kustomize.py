"""A documented subset of kustomize: enough to render ``infra/k8s`` overlays without ``kubectl``.

Supported, and checked against ``kubectl kustomize`` by the tests: ``resources`` (files and
directories), ``namespace``, ``images`` (``name`` -> ``newName``/``newTag``/``digest``), ``labels``
(``pairs``, optionally ``includeTemplates``; not ``includeSelectors``) and ``patches`` given by
``path`` (strategic merge: maps merge, lists of named items merge by ``name``, other lists are
replaced). Anything else raises :class:`ManifestError` naming the key and the way out.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

_SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches", "labels"}


class ManifestError(ValueError):
    """A kustomization uses something the renderer does not support, or a name is not valid."""


def render_overlay(directory: str | Path) -> list[dict[str, Any]]:
    """Every object of the kustomization in ``directory``, in the order kustomize lists them."""
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
    objects = _resources(directory, kustomization.get("resources") or [])
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


def _resources(directory: Path, resources: list[str]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for resource in resources:
        target = directory / resource
        if target.is_dir():
            objects.extend(render_overlay(target))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
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
    found: list[dict[str, Any]] = []
    for obj in objects:
        pod = (obj.get("spec") or {}).get("template", {}).get("spec", {})
        found.extend(pod.get("initContainers") or [])
        found.extend(pod.get("containers") or [])
    return found
