"""Mounting a launcher pod's PersistentVolumeClaims, as the kubelet does, for embedded mode.

For each `persistentVolumeClaim` volume of the pod: the claim must be Bound; its PersistentVolume
must be a directory on this host (hostPath or local); the directory is created for hostPath type
DirectoryOrCreate, the claim's `disk.img` is created in it (KubeVirt's rules, see
kubevisor.storage.pvc) and `<pod dir>/claims/<claimName>` becomes a symlink to it. The launcher
finds the disk of claim X at `claims/X/disk.img` next to its VMI file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kubevisor.controller.kube import PVCS, PVS, ApiError, Kube, Obj
from kubevisor.controller.quantity import to_bytes
from kubevisor.storage.local_path import volume_path
from kubevisor.storage.pvc import ensure_disk_image

CLAIMS_DIR = "claims"
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class NotReady(Exception):
    """A claim cannot be mounted yet (missing, Pending) or at all (`permanent`)."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def pod_claims(pod: Obj) -> list[str]:
    names: list[str] = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        source = vol.get("persistentVolumeClaim")
        if isinstance(source, dict) and source.get("claimName"):
            names.append(str(source["claimName"]))
    return names


def claim_directory(kube: Kube, namespace: str, claim_name: str) -> tuple[Path, int]:
    """The bound claim's directory on this host and its capacity in bytes (NotReady otherwise)."""
    if not _CLAIM_NAME.match(claim_name) or len(claim_name) > 253:
        raise NotReady(f"persistentVolumeClaim {claim_name!r} is not a valid claim name", permanent=True)
    try:
        claim = kube.get(PVCS, namespace, claim_name)
    except ApiError as exc:
        if exc.not_found:
            raise NotReady(f"PersistentVolumeClaim {namespace}/{claim_name} not found") from None
        raise
    status = claim.get("status") or {}
    volume_name = (claim.get("spec") or {}).get("volumeName")
    if status.get("phase") != "Bound" or not volume_name:
        raise NotReady(f"PersistentVolumeClaim {namespace}/{claim_name} is not bound yet")
    try:
        pv = kube.get(PVS, None, str(volume_name))
    except ApiError as exc:
        if exc.not_found:
            raise NotReady(f"PersistentVolume {volume_name} of claim {claim_name} not found") from None
        raise
    path = volume_path(pv)
    if path is None:
        raise NotReady(f"PersistentVolume {volume_name} is not a directory on this host", permanent=True)
    pv_capacity = ((pv.get("spec") or {}).get("capacity") or {}).get("storage")
    capacity = (status.get("capacity") or {}).get("storage") or pv_capacity
    if not capacity:
        raise NotReady(f"PersistentVolume {volume_name} has no capacity", permanent=True)
    return path, to_bytes(str(capacity))


def mount_claims(kube: Kube, pod: Obj, pod_dir: Path) -> list[str]:
    """Link each claim's directory into `<pod_dir>/claims`, creating its disk.img; the claim names."""
    namespace = str(pod["metadata"]["namespace"])
    names = pod_claims(pod)
    if not names:
        return []
    links = pod_dir / CLAIMS_DIR
    links.mkdir(parents=True, exist_ok=True)
    for name in names:
        directory, capacity = claim_directory(kube, namespace, name)
        directory.mkdir(parents=True, exist_ok=True)  # hostPath DirectoryOrCreate
        try:
            ensure_disk_image(directory, capacity)
        except OSError as exc:
            raise NotReady(f"PersistentVolumeClaim {namespace}/{name}: {exc}", permanent=True) from None
        link = links / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(directory, link)
    return names
