"""Secret and ConfigMap volumes of a launcher pod, projected as the kubelet does, for embedded mode.

For each `secret` / `configMap` volume of the pod, every key of the object becomes a file
`<pod dir>/secrets/<secretName>/<key>` or `<pod dir>/configmaps/<name>/<key>` (mode 0600). The
launcher reads them there (next to its VMI file) for configMap/secret disks and cloud-init's
`secretRef` / `networkDataSecretRef`. A missing object that is not `optional` makes the pod wait,
as the kubelet's mount does; a missing optional one is left out.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
from pathlib import Path

from kubevisor.controller.kube import CONFIGMAPS, SECRETS, ApiError, Kube, Obj, Resource
from kubevisor.node.claims import NotReady

SECRETS_DIR = "secrets"
CONFIGMAPS_DIR = "configmaps"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")


def _decode(values: object, field: str, ref: str) -> dict[str, bytes]:
    if not isinstance(values, dict):
        return {}
    out: dict[str, bytes] = {}
    for key, value in values.items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise NotReady(f"{ref}: {field}.{key} is not valid base64", permanent=True) from None
    return out


def object_data(obj: Obj, kind: str, ref: str) -> dict[str, bytes]:
    """The keys of a Secret (data, base64) or a ConfigMap (data as text, binaryData base64)."""
    if kind == SECRETS.kind:
        return _decode(obj.get("data"), "data", ref)
    data = {str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()}
    data.update(_decode(obj.get("binaryData"), "binaryData", ref))
    return data


def pod_objects(pod: Obj) -> list[tuple[Resource, str, bool]]:
    """(resource, object name, optional) of each secret/configMap volume of the pod."""
    out: list[tuple[Resource, str, bool]] = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        secret, config_map = vol.get("secret"), vol.get("configMap")
        if isinstance(secret, dict) and secret.get("secretName"):
            out.append((SECRETS, str(secret["secretName"]), bool(secret.get("optional"))))
        elif isinstance(config_map, dict) and config_map.get("name"):
            out.append((CONFIGMAPS, str(config_map["name"]), bool(config_map.get("optional"))))
    return out


def mount_objects(kube: Kube, pod: Obj, pod_dir: Path) -> list[str]:
    """Write the pod's Secrets and ConfigMaps under pod_dir; `Kind/name` of each one written."""
    namespace = str(pod["metadata"]["namespace"])
    mounted: list[str] = []
    for resource, name, optional in pod_objects(pod):
        ref = f"{resource.kind} {namespace}/{name}"
        if not _NAME.match(name) or len(name) > 253:
            raise NotReady(f"{ref}: not a valid object name", permanent=True)
        try:
            obj = kube.get(resource, namespace, name)
        except ApiError as exc:
            if not exc.not_found:
                raise
            if optional:
                continue
            raise NotReady(f"{ref} not found") from None
        data = object_data(obj, resource.kind, ref)
        bad = [key for key in data if not _KEY.match(key) or key in (".", "..")]
        if bad:
            raise NotReady(f"{ref}: key {bad[0]!r} is not a valid file name", permanent=True)
        directory = pod_dir / (SECRETS_DIR if resource.kind == SECRETS.kind else CONFIGMAPS_DIR) / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, mode=0o700)
        for key, value in data.items():
            fd = os.open(directory / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(value)
        mounted.append(f"{resource.kind}/{name}")
    return mounted
