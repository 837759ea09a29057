"""configMap / secret / serviceAccount / downwardAPI volumes as ISO disks, as KubeVirt attaches them.

Every key of the object becomes a file at the root of an ISO labelled `volumeLabel` (KubeVirt's
default `cfgdata`); the guest mounts it to read the data. Looking the objects up is the control
plane's job: it passes resolvers (name -> {key: bytes}).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_LABEL = "cfgdata"
# Kubernetes ConfigMap/Secret keys: [-._a-zA-Z0-9]+ (and never "." or "..").
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_LABEL_REF = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")

DataResolver = Callable[[str], Mapping[str, bytes]]


class ConfigDiskError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def key_files(data: Mapping[str, bytes], field: str) -> list[tuple[str, bytes]]:
    """The files of a ConfigMap/Secret: one per key, sorted for reproducible images."""
    files = []
    for key in sorted(data):
        if not _KEY.match(key) or key in (".", ".."):
            raise ConfigDiskError(field, f"{field}: key {key!r} is not a valid file name")
        files.append((key, bytes(data[key])))
    return files


def resolve_keyed(
    kind: str, name: object, optional: bool, field: str, resolver: DataResolver | None
) -> list[tuple[str, bytes]]:
    """Files for a configMap or secret volume; a missing optional object gives an empty disk."""
    if not name or not isinstance(name, str):
        raise ConfigDiskError(field, f"{field} is a required field")
    if resolver is None:
        raise ConfigDiskError(field, f"{field}: {kind} {name!r} cannot be resolved without an apiserver")
    try:
        data = resolver(name)
    except KeyError:
        if optional:
            return []
        raise ConfigDiskError(field, f"{field}: {kind} {name!r} not found") from None
    return key_files(data, field)


def downward_api_files(fields: object, metadata: Mapping[str, Any], field: str) -> list[tuple[str, bytes]]:
    """downwardAPI volume files from the VMI's own metadata (fieldRef only)."""
    if not isinstance(fields, list):
        raise ConfigDiskError(field, f"{field}.fields must be a list")
    files = []
    for idx, item in enumerate(fields):
        here = f"{field}.fields[{idx}]"
        if not isinstance(item, Mapping):
            raise ConfigDiskError(here, f"{here} must be an object")
        path = item.get("path")
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
            raise ConfigDiskError(f"{here}.path", f"{here}.path must be a relative path without '..'")
        ref = item.get("fieldRef")
        if not isinstance(ref, Mapping) or not isinstance(ref.get("fieldPath"), str):
            raise ConfigDiskError(
                f"{here}.fieldRef",
                f"{here}.fieldRef.fieldPath is required (resourceFieldRef is not supported)",
            )
        files.append((path, _field_value(ref["fieldPath"], metadata, f"{here}.fieldRef.fieldPath")))
    return files


def _field_value(path: str, metadata: Mapping[str, Any], field: str) -> bytes:
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(metadata.get(path.split(".", 1)[1]) or "").encode()
    if path in ("metadata.labels", "metadata.annotations"):
        values = metadata.get(path.split(".", 1)[1]) or {}
        # The kubelet's format: key="value" lines, sorted, values JSON-quoted.
        return "\n".join(f"{k}={json.dumps(str(v))}" for k, v in sorted(values.items())).encode()
    m = _LABEL_REF.match(path)
    if m:
        return str((metadata.get(m.group(1)) or {}).get(m.group(2), "")).encode()
    raise ConfigDiskError(field, f"{field}: unsupported fieldPath {path!r}")
