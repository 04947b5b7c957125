"""A small renderer of the Kustomize features deploy/k8s uses, for machines without ``kubectl``.

Supported: ``resources`` (YAML files, and directories with a kustomization), ``namespace``,
``labels`` (metadata only), ``configMapGenerator`` from files (with ``disableNameSuffixHash``),
``images`` and ``patches`` given as JSON 6902 operations with a kind/name target. Anything else in a
kustomization is refused, so a manifest change that needs more fails loudly here instead of being
rendered wrong; where ``kubectl`` exists the tests compare this output with ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]

SUPPORTED = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "generatorOptions",
        "configMapGenerator",
        "images",
        "patches",
    }
)
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass", "APIService"}
)


class KustomizeError(ValueError):
    pass


def render(directory: Path) -> list[Object]:
    """The objects ``kustomize build directory`` would print (in file order, not kind order)."""
    path = directory / "kustomization.yaml"
    spec: Object = yaml.safe_load(path.read_text())
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{path}: unsupported fields {sorted(unknown)}")
    objects: list[Object] = []
    for resource in spec.get("resources", []):
        target = (directory / resource).resolve()
        if target.is_dir():
            objects += render(target)
        else:
            objects += [d for d in yaml.safe_load_all(target.read_text()) if d]
    objects += _generate(directory, spec)
    for patch in spec.get("patches", []):
        _patch(objects, directory, patch)
    for image in spec.get("images", []):
        _set_image(objects, image)
    for pairs in spec.get("labels", []):
        if set(pairs) - {"pairs"}:
            raise KustomizeError(f"{path}: labels support only 'pairs'")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs["pairs"])
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            _set_namespace(obj, namespace)
    return objects


def _generate(directory: Path, spec: Object) -> list[Object]:
    generators = spec.get("configMapGenerator", [])
    if generators and not spec.get("generatorOptions", {}).get("disableNameSuffixHash"):
        raise KustomizeError("configMapGenerator needs generatorOptions.disableNameSuffixHash here")
    out = []
    for gen in generators:
        if set(gen) - {"name", "files", "options"}:
            raise KustomizeError(f"configMapGenerator {gen.get('name')}: only name, files and options")
        data = {}
        for entry in gen["files"]:
            key, _, rel = entry.rpartition("=") if "=" in entry else ("", "", entry)
            file = directory / rel
            data[key or file.name] = file.read_text()
        metadata: Object = {"name": gen["name"]}
        labels = gen.get("options", {}).get("labels")
        if labels:
            metadata["labels"] = dict(labels)
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return out


def _patch(objects: list[Object], directory: Path, patch: Object) -> None:
    target = patch["target"]
    operations = yaml.safe_load((directory / patch["path"]).read_text())
    matches = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
    if len(matches) != 1:
        raise KustomizeError(f"patch {patch['path']}: {len(matches)} objects match {target}")
    for op in operations:
        _apply(matches[0], op)


def _apply(obj: Object, op: Object) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = obj
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) and last != "-" else last
    if op["op"] == "replace":
        if isinstance(node, dict) and key not in node:
            raise KustomizeError(f"replace of a missing path {op['path']}")
        node[key] = copy.deepcopy(op["value"])
    elif op["op"] == "add":
        if isinstance(node, list):
            node.insert(len(node) if key == "-" else key, copy.deepcopy(op["value"]))
        else:
            node[key] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del node[key]
    else:
        raise KustomizeError(f"unsupported patch operation {op['op']}")


def _containers(obj: Object) -> list[Object]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _set_image(objects: list[Object], image: Object) -> None:
    for obj in objects:
        for container in _containers(obj):
            name = container["image"].split("@")[0].rsplit(":", 1)[0]
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def _set_namespace(obj: Object, namespace: str) -> None:
    if obj["kind"] not in CLUSTER_SCOPED:
        obj["metadata"]["namespace"] = namespace
    if obj["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
        for subject in obj.get("subjects", []):
            if subject.get("kind") == "ServiceAccount":
                subject["namespace"] = namespace
