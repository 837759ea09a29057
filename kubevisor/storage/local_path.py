"""Local-path volumes: the pure part of the `local-path` provisioner (objects and directory names).

Modelled on Rancher's local-path-provisioner, the default StorageClass of k3s and kind: a claim of
the class gets a PersistentVolume `pvc-<claim uid>` whose data is the directory
`<base>/pvc-<claim uid>_<namespace>_<claim>` on one node (hostPath, type DirectoryOrCreate,
with a required node affinity to that node). Reclaim policy Delete (the class default) removes
the directory and the PV once the claim is gone. A VM disk in such a claim is its `disk.img`
(kubevisor.storage.pvc).

Directory names come from validated object names and a UID; a directory is removed only when it
is exactly where this module would have put it, directly under the base.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

CLASS_NAME = "local-path"
PROVISIONER = "kubevisor.io/local-path"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
HOSTNAME_LABEL = "kubernetes.io/hostname"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_UID = re.compile(r"^[A-Za-z0-9-]{1,64}$")


class LocalPathError(ValueError):
    """A claim or volume that the provisioner cannot (or must not) act on."""


def storage_class() -> Obj:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS_NAME, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def is_default_class(sc: Obj) -> bool:
    annotations = (sc.get("metadata") or {}).get("annotations") or {}
    return "true" in (
        annotations.get(DEFAULT_CLASS_ANNOTATION),
        annotations.get(BETA_DEFAULT_CLASS_ANNOTATION),
    )


def default_class(classes: list[Obj]) -> Obj | None:
    """The default StorageClass; with several, the newest (then by name), as Kubernetes picks."""
    defaults = [sc for sc in classes if is_default_class(sc)]
    if not defaults:
        return None
    defaults.sort(key=lambda sc: (str(sc["metadata"].get("creationTimestamp") or ""), sc["metadata"]["name"]))
    return defaults[-1]


def pv_name(claim: Obj) -> str:
    uid = str((claim.get("metadata") or {}).get("uid") or "")
    if not _UID.match(uid):
        raise LocalPathError(f"metadata.uid: {uid!r} cannot name a volume")
    return f"pvc-{uid}"


def volume_dir(base: Path, claim: Obj) -> Path:
    """`<base>/pvc-<uid>_<namespace>_<name>`, from validated parts only."""
    meta = claim.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    if not _DNS_LABEL.match(namespace) or len(namespace) > 63:
        raise LocalPathError(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        raise LocalPathError(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    return base / f"{pv_name(claim)}_{namespace}_{name}"


def requested_storage(claim: Obj) -> str:
    storage = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
    if not storage:
        raise LocalPathError("spec.resources.requests.storage: Required value")
    return str(storage)


def persistent_volume(claim: Obj, sc: Obj, node: str, path: Path) -> Obj:
    """The PV bound to `claim` (claimRef with uid), on `node`, with data at `path`."""
    meta = claim["metadata"]
    spec = claim.get("spec") or {}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name(claim),
            "annotations": {PROVISIONED_BY: PROVISIONER},
            "labels": {"kubevisor.io/local-path-node": node},
        },
        "spec": {
            "capacity": {"storage": requested_storage(claim)},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": str(sc.get("reclaimPolicy") or "Delete"),
            "storageClassName": sc["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}
                    ]
                }
            },
        },
    }


def volume_path(pv: Obj) -> Path | None:
    spec = pv.get("spec") or {}
    source = spec.get("hostPath") or spec.get("local") or {}
    path = source.get("path")
    return Path(path) if isinstance(path, str) and path.startswith("/") else None


def is_ours(pv: Obj) -> bool:
    return ((pv.get("metadata") or {}).get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER


def remove_volume_dir(base: Path, pv: Obj) -> bool:
    """Remove the PV's directory if it is one of ours directly under `base`; True if removed or gone.

    A PV names its own path, and anyone allowed to create PVs could write one: only a directory
    named `<pv name>_...` right under the base is ever removed, never a symlink.
    """
    path = volume_path(pv)
    name = str((pv.get("metadata") or {}).get("name") or "")
    if path is None or not name.startswith("pvc-"):
        raise LocalPathError(f"PersistentVolume {name!r}: no local-path directory")
    if path.parent != base or not path.name.startswith(f"{name}_") or ".." in path.parts:
        raise LocalPathError(f"PersistentVolume {name!r}: {path} is not a local-path directory under {base}")
    if path.is_symlink():
        raise LocalPathError(f"PersistentVolume {name!r}: {path} is a symlink")
    if not path.exists():
        return True
    shutil.rmtree(path)
    return True


def claim_is_gone(pv: Obj, claims: dict[str, Obj]) -> bool:
    """The PV's claim no longer exists (or a same-named successor with another uid took its name)."""
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    if not ref.get("name"):
        return False
    claim = claims.get(f"{ref.get('namespace')}/{ref['name']}")
    if claim is None:
        return True
    return bool(ref.get("uid")) and claim["metadata"].get("uid") != ref["uid"]


def bound_claim_status(claim: Obj, pv: Obj) -> Obj:
    status = dict(claim.get("status") or {})
    status["phase"] = "Bound"
    status["accessModes"] = list((pv.get("spec") or {}).get("accessModes") or [])
    status["capacity"] = dict((pv.get("spec") or {}).get("capacity") or {})
    return status
