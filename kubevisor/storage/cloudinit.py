"""cloud-init seed ISOs: NoCloud (`cidata`) and OpenStack ConfigDrive (`config-2`).

`resolve_cloud_init()` turns a `cloudInitNoCloud`/`cloudInitConfigDrive` volume source into
bytes (inline, base64, or from Secrets through a resolver the control plane supplies);
`write_nocloud_iso()` / `write_configdrive_iso()` write the ISO9660 image with Rock Ridge and
Joliet names, so the guest sees `user-data`, `openstack/latest/meta_data.json` and so on.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycdlib

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


def nocloud_meta_data(*, instance_id: str, hostname: str) -> bytes:
    # YAML by hand: two scalar keys; values are validated DNS names / uuids, but quote anyway.
    return f"instance-id: {json.dumps(instance_id)}\nlocal-hostname: {json.dumps(hostname)}\n".encode()


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
    _write_iso(dest, NOCLOUD_LABEL, files)


def write_configdrive_iso(dest: Path, data: CloudInitData, *, uuid: str, hostname: str, name: str) -> None:
    """An OpenStack ConfigDrive seed: label `config-2`, files under openstack/latest/."""
    files: list[tuple[str, bytes]] = [
        ("openstack/latest/meta_data.json", configdrive_meta_data(uuid=uuid, hostname=hostname, name=name)),
    ]
    if data.user_data is not None:
        files.append(("openstack/latest/user_data", data.user_data))
    if data.network_data is not None:
        files.append(("openstack/latest/network_data.json", data.network_data))
    _write_iso(dest, CONFIGDRIVE_LABEL, files)


def _write_iso(dest: Path, label: str, files: list[tuple[str, bytes]]) -> None:
    """Write an ISO9660 image (Rock Ridge + Joliet) atomically: a partial file never stays."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label, joliet=3, rock_ridge="1.09")
    short_names: dict[str, str] = {"": ""}  # long directory path -> ISO9660 path
    try:
        for long_path, payload in files:
            parts = long_path.split("/")
            for depth in range(1, len(parts)):
                long_dir = "/".join(parts[:depth])
                if long_dir not in short_names:
                    parent = short_names["/".join(parts[: depth - 1])]
                    short = f"{parent}/{_iso_name(parts[depth - 1], directory=True)}"
                    iso.add_directory(short, rr_name=parts[depth - 1], joliet_path=f"/{long_dir}")
                    short_names[long_dir] = short
            parent = short_names["/".join(parts[:-1])]
            iso.add_fp(
                io.BytesIO(payload),
                len(payload),
                f"{parent}/{_iso_name(parts[-1], directory=False)};1",
                rr_name=parts[-1],
                joliet_path=f"/{long_path}",
            )
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            iso.write(str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        iso.close()


def _iso_name(name: str, *, directory: bool) -> str:
    """An ISO9660 level-1-style 8.3 name (d-characters); the real name lives in RR/Joliet."""
    stem, _, ext = name.partition(".") if not directory else (name, "", "")
    clean = "".join(c if c.isalnum() else "_" for c in stem.upper())[:8] or "_"
    if directory:
        return clean
    ext_clean = "".join(c if c.isalnum() else "_" for c in ext.upper())[:3]
    return f"{clean}.{ext_clean}"
