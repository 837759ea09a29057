"""cloud-init seed ISOs: NoCloud (`cidata`) and OpenStack ConfigDrive (`config-2`).

`resolve_cloud_init()` turns a `cloudInitNoCloud`/`cloudInitConfigDrive` volume source into
bytes (inline, base64, or from Secrets through a resolver the control plane supplies);
`write_nocloud_iso()` / `write_configdrive_iso()` write the ISO9660 image with Rock Ridge and
Joliet names, so the guest sees `user-data`, `openstack/latest/meta_data.json` and so on.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevisor.storage.iso import write_iso

NOCLOUD_LABEL = "cidata"
CONFIGDRIVE_LABEL = "config-2"

# Secret name -> its data (values decoded). Supplied by the control plane; None in `vm run`.
SecretResolver = Callable[[str], Mapping[str, bytes]]

# KubeVirt reads these keys from a cloud-init Secret (either spelling).
USER_DATA_KEYS = ("userdata", "userData")
NETWORK_DATA_KEYS = ("networkdata", "networkData")


class CloudInitError(ValueError):
    """A cloud-init source that cannot be turned into a seed; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CloudInitData:
    user_data: bytes | None
    network_data: bytes | None


def resolve_cloud_init(
    source: Mapping[str, Any], field: str, *, secret_resolver: SecretResolver | None = None
) -> CloudInitData:
    """The user-data and network-data of a cloud-init volume source at `field`."""
    user = _one_of(source, field, "userData", "userDataBase64", "secretRef", USER_DATA_KEYS, secret_resolver)
    network = _one_of(
        source,
        field,
        "networkData",
        "networkDataBase64",
        "networkDataSecretRef",
        NETWORK_DATA_KEYS,
        secret_resolver,
    )
    return CloudInitData(user_data=user, network_data=network)


def _one_of(
    source: Mapping[str, Any],
    field: str,
    plain_key: str,
    b64_key: str,
    secret_key: str,
    secret_data_keys: tuple[str, ...],
    secret_resolver: SecretResolver | None,
) -> bytes | None:
    if source.get(plain_key):
        return str(source[plain_key]).encode()
    if source.get(b64_key):
        try:
            return base64.b64decode(str(source[b64_key]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CloudInitError(
                f"{field}.{b64_key}", f"{field}.{b64_key} is not a valid base64 value."
            ) from exc
    ref = source.get(secret_key)
    if isinstance(ref, Mapping) and ref.get("name"):
        secret_field = f"{field}.{secret_key}.name"
        if secret_resolver is None:
            raise CloudInitError(
                secret_field,
                f"{secret_field}: Secret {ref['name']!r} cannot be resolved without an apiserver; "
                f"use {plain_key} or {b64_key} with `kubevisor vm run`",
            )
        try:
            data = secret_resolver(str(ref["name"]))
        except KeyError as exc:
            raise CloudInitError(secret_field, f"{secret_field}: Secret {ref['name']!r} not found") from exc
        for key in secret_data_keys:
            if key in data:
                return bytes(data[key])
        raise CloudInitError(
            secret_field,
            f"{secret_field}: Secret {ref['name']!r} has none of the keys {', '.join(secret_data_keys)}",
        )
    return None


_PLAIN_SCALAR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


_YAML_SPECIAL = frozenset({"true", "false", "yes", "no", "y", "n", "on", "off", "null", "~"})
_NUMBER_LIKE = re.compile(r"^[-+]?(\d[\d_]*(\.\d*)?([eE][-+]?\d+)?|0[xob][0-9a-fA-F_]+|\.\d+)$")


def _yaml_scalar(value: str) -> str:
    # Plain like KubeVirt writes it (DNS names); anything YAML would read as another type, or that
    # needs escaping, double-quoted (JSON strings are valid YAML).
    if _PLAIN_SCALAR.match(value) and value.lower() not in _YAML_SPECIAL and not _NUMBER_LIKE.match(value):
        return value
    return json.dumps(value)


def nocloud_meta_data(*, instance_id: str, hostname: str) -> bytes:
    return f"instance-id: {_yaml_scalar(instance_id)}\nlocal-hostname: {_yaml_scalar(hostname)}\n".encode()


def configdrive_meta_data(*, uuid: str, hostname: str, name: str) -> bytes:
    return json.dumps({"uuid": uuid, "hostname": hostname, "name": name}, sort_keys=True).encode()


def write_nocloud_iso(dest: Path, data: CloudInitData, *, instance_id: str, hostname: str) -> None:
    """A NoCloud seed: volume label `cidata`, files user-data, meta-data, network-config."""
    files: list[tuple[str, bytes]] = [
        ("user-data", data.user_data or b""),
        ("meta-data", nocloud_meta_data(instance_id=instance_id, hostname=hostname)),
    ]
    if data.network_data is not None:
        files.append(("network-config", data.network_data))
    write_iso(dest, NOCLOUD_LABEL, files)


def write_configdrive_iso(dest: Path, data: CloudInitData, *, uuid: str, hostname: str, name: str) -> None:
    """An OpenStack ConfigDrive seed: label `config-2`, files under openstack/latest/."""
    files: list[tuple[str, bytes]] = [
        ("openstack/latest/meta_data.json", configdrive_meta_data(uuid=uuid, hostname=hostname, name=name)),
    ]
    if data.user_data is not None:
        files.append(("openstack/latest/user_data", data.user_data))
    if data.network_data is not None:
        files.append(("openstack/latest/network_data.json", data.network_data))
    write_iso(dest, CONFIGDRIVE_LABEL, files)
