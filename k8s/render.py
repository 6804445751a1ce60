"""A small kustomize renderer for the subset of kustomize that k8s/ uses, for machines without
kubectl. `kubectl kustomize k8s/overlays/prod` is the real tool and gives the same objects.

Supported kustomization fields: resources (files and directories), namespace, labels (pairs,
includeSelectors false, includeTemplates), patches (path to a strategic-merge patch naming its
target by apiVersion/kind/metadata.name, `$patch: delete` included), images, replicas.

    python k8s/render.py k8s/overlays/prod > prod.yaml
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

# Keys by which strategic merge matches list items (the Kubernetes patchMergeKey of each field).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}
_CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"}
_KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "patches", "images", "replicas"}


def _load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def merge(base: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge of `patch` into `base`; None deletes a key, as in kubectl."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in _MERGE_KEYS:
        # Like kustomize: the patch's items first (merged), then the base's untouched items.
        mk = _MERGE_KEYS[field]
        by_key = {item.get(mk): item for item in base}
        patched = {item.get(mk) for item in patch}
        merged = [
            merge(by_key[item.get(mk)], item, field)
            if item.get(mk) in by_key
            else copy.deepcopy(item)
            for item in patch
            if item.get("$patch") != "delete"
        ]
        return merged + [copy.deepcopy(b) for b in base if b.get(mk) not in patched]
    return copy.deepcopy(patch)


def _pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []


def _templates(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    return [spec["template"]] if "template" in spec else []


def _image_name(image: str) -> str:
    head, _, tail = image.split("@")[0].rpartition("/")
    tail = tail.split(":")[0]  # a tag; a registry's port sits in `head`, before the last "/"
    return f"{head}/{tail}" if head else tail


def _set_image(obj: Obj, rule: Obj) -> None:
    for pod in _pod_specs(obj):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            name = _image_name(c["image"])
            if name == rule["name"]:
                c["image"] = f"{rule.get('newName', name)}:{rule['newTag']}"


def build(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize directory` would print (order aside)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - _KNOWN
    if unknown:
        raise ValueError(f"{directory}: kustomization fields not supported here: {unknown}")
    objs: list[Obj] = []
    for res in kust.get("resources", []):
        path = directory / res
        objs += build(path) if path.is_dir() else _load_all(path)
    for patch_ref in kust.get("patches", []):
        for patch in _load_all(directory / patch_ref["path"]):
            idx = next(i for i, o in enumerate(objs) if _key(o) == _key(patch))
            if patch.get("$patch") == "delete":
                del objs[idx]
            else:
                objs[idx] = merge(objs[idx], patch)
    for obj in objs:
        if "namespace" in kust and obj["kind"] not in _CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kust["namespace"]
        for label in kust.get("labels", []):
            if label.get("includeSelectors"):
                raise ValueError("labels.includeSelectors is not supported here")
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates"):
                for tpl in _templates(obj):
                    tpl.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
        for rule in kust.get("images", []):
            _set_image(obj, rule)
        for rule in kust.get("replicas", []):
            if (
                obj["kind"] in {"Deployment", "StatefulSet"}
                and obj["metadata"]["name"] == rule["name"]
            ):
                obj["spec"]["replicas"] = rule["count"]
    return objs


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python k8s/render.py KUSTOMIZATION_DIR", file=sys.stderr)
        return 2
    objs = build(Path(argv[0]))
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))
    print(f"# {len(objs)} objects rendered from {argv[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
