"""Turn a VMI's `spec.volumes` into files QEMU can open (`VolumeSource` per volume name).

- containerDisk: the image's disk (read-only base from the local image store) + a per-VMI qcow2
  overlay in `workdir`: writes are ephemeral, the next boot starts from a clean disk.
- emptyDisk: a sparse qcow2 of `capacity` in `workdir`.
- ephemeral: a qcow2 overlay in `workdir` over a PVC's `disk.img` (raw, never written).
- persistentVolumeClaim: the claim's `disk.img`, raw, used in place.
- hostDisk: `Disk` must exist; `DiskOrCreate` creates a sparse raw file of `capacity` (the user's
  data: it stays after the VMI, it is never deleted by us).
- cloudInitNoCloud / cloudInitConfigDrive: a seed ISO in `workdir`.

Everything created (except hostDisk files) is under `workdir`, so `cleanup_volumes(workdir)`
is one directory removal. On any error nothing created by the call is left behind, and the error
is a `ValidationError` naming the field (`spec.volumes[0].containerDisk.image`).
Formats of user-controlled files (hostDisk, PVC) are never probed: they are raw, so a guest that
writes a qcow2 header into its disk cannot make the host open a backing file of its choice.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from kubevisor.api.errors import FIELD_VALUE_INVALID, FIELD_VALUE_NOT_SUPPORTED, Cause, ValidationError
from kubevisor.api.quantity import QuantityError, to_quantity
from kubevisor.api.vmi import firmware_uuid
from kubevisor.hypervisor.model import ImageFormat, VolumeSource
from kubevisor.storage.cloudinit import (
    CloudInitError,
    SecretResolver,
    resolve_cloud_init,
    write_configdrive_iso,
    write_nocloud_iso,
)
from kubevisor.storage.configdisks import (
    DEFAULT_LABEL,
    ConfigDiskError,
    DataResolver,
    downward_api_files,
    resolve_keyed,
)
from kubevisor.storage.iso import write_iso

# containerDisk image reference -> the disk file inside the (locally stored) image.
ImageResolver = Callable[[str], Path]
# persistentVolumeClaim claimName -> the claim's disk image file (`disk.img` in a Filesystem claim).
ClaimResolver = Callable[[str], Path]

QEMU_IMG = "qemu-img"
QEMU_IMG_TIMEOUT = 120
_VOLUME_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MARKER = ".kubevisor-volumes"


class VolumeError(Exception):
    """One volume could not be prepared (internal; surfaces as ValidationError)."""

    def __init__(self, field: str, message: str, cause_type: str = FIELD_VALUE_INVALID) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.cause_type = cause_type


def prepare_volumes(
    vmi: Mapping[str, Any],
    workdir: Path,
    *,
    image_resolver: ImageResolver | None = None,
    secret_resolver: SecretResolver | None = None,
    claim_resolver: ClaimResolver | None = None,
    configmap_resolver: DataResolver | None = None,
    serviceaccount_resolver: DataResolver | None = None,
) -> dict[str, VolumeSource]:
    """Create the files for every volume of `vmi` (ideally already defaulted and validated).

    Resolvers (supplied by the control plane; without them those volume types are an error):
    `image_resolver(ref)` -> base disk file (default: the local ImageStore),
    `secret_resolver(name)` / `configmap_resolver(name)` -> {key: bytes} (KeyError when absent),
    `serviceaccount_resolver(name)` -> {"token", "ca.crt", "namespace"},
    `claim_resolver(claimName)` -> the claim's disk image.

    Returns volume name -> VolumeSource. Raises ValidationError (one cause, naming the volume's
    field) and removes what it created when a volume cannot be prepared.
    """
    workdir = Path(workdir)
    raw_meta, raw_spec = vmi.get("metadata"), vmi.get("spec")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, Mapping) else {}
    name = str(meta.get("name") or "vmi")
    namespace = str(meta.get("namespace") or "default")
    kind = str(vmi.get("kind") or "VirtualMachineInstance")
    created_workdir = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / _MARKER).touch()
    created: list[Path] = []
    result: dict[str, VolumeSource] = {}
    try:
        volumes = spec.get("volumes") or []
        if not isinstance(volumes, list):
            raise VolumeError("spec.volumes", "spec.volumes must be a list")
        for idx, volume in enumerate(volumes):
            here = f"spec.volumes[{idx}]"
            vol_name = volume.get("name") if isinstance(volume, Mapping) else None
            if not isinstance(vol_name, str) or not _VOLUME_NAME.match(vol_name) or len(vol_name) > 63:
                raise VolumeError(f"{here}.name", f"{here}.name {vol_name!r} is not a valid DNS-1123 label")
            result[vol_name] = _prepare_one(
                volume,
                here,
                workdir,
                created,
                vmi_name=name,
                namespace=namespace,
                spec=spec,
                image_resolver=image_resolver,
                secret_resolver=secret_resolver,
                claim_resolver=claim_resolver,
                configmap_resolver=configmap_resolver,
                serviceaccount_resolver=serviceaccount_resolver,
                metadata=meta,
            )
    except VolumeError as exc:
        _rollback(created, workdir if created_workdir else None)
        raise ValidationError([Cause(exc.field, exc.message, exc.cause_type)], kind=kind, name=name) from None
    except BaseException:
        _rollback(created, workdir if created_workdir else None)
        raise
    return result


def cleanup_volumes(workdir: Path) -> None:
    """Remove everything `prepare_volumes` created in `workdir` (hostDisk files are elsewhere)."""
    workdir = Path(workdir)
    if not workdir.exists():
        return
    if not (workdir / _MARKER).exists():
        raise ValueError(f"{workdir} was not prepared by kubevisor.storage; refusing to delete it")
    shutil.rmtree(workdir)


def _rollback(created: list[Path], workdir: Path | None) -> None:
    for path in reversed(created):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def _prepare_one(
    volume: Mapping[str, Any],
    here: str,
    workdir: Path,
    created: list[Path],
    *,
    vmi_name: str,
    namespace: str,
    spec: Mapping[str, Any],
    image_resolver: ImageResolver | None,
    secret_resolver: SecretResolver | None,
    claim_resolver: ClaimResolver | None,
    configmap_resolver: DataResolver | None,
    serviceaccount_resolver: DataResolver | None,
    metadata: Mapping[str, Any],
) -> VolumeSource:
    vol_name = str(volume["name"])
    sources = [k for k in volume if k != "name"]
    if len(sources) != 1:
        raise VolumeError(here, f"{here} must have exactly one source type set")
    source = sources[0]
    body = volume[source] if volume[source] is not None else {}
    field = f"{here}.{source}"
    if not isinstance(body, Mapping):
        raise VolumeError(field, f"{field} must be an object")

    if source == "containerDisk":
        image = body.get("image")
        if not image:
            raise VolumeError(f"{field}.image", f"{field}.image is a required field")
        base = _resolve_image(str(image), f"{field}.image", image_resolver)
        base_format = detect_format(base, f"{field}.image")
        overlay = workdir / f"{vol_name}.qcow2"
        _track(created, overlay)
        create_overlay(overlay, base, base_format, f"{field}.image")
        return VolumeSource(path=overlay, format="qcow2")

    if source == "emptyDisk":
        size = _capacity(body.get("capacity"), f"{field}.capacity")
        disk = workdir / f"{vol_name}.qcow2"
        _track(created, disk)
        _qemu_img(["create", "-q", "-f", "qcow2", str(disk), str(size)], f"{field}.capacity")
        return VolumeSource(path=disk, format="qcow2")

    if source == "ephemeral":
        pvc = body.get("persistentVolumeClaim")
        claim = pvc.get("claimName") if isinstance(pvc, Mapping) else None
        base = _resolve_claim(claim, f"{field}.persistentVolumeClaim.claimName", claim_resolver)
        overlay = workdir / f"{vol_name}.qcow2"
        _track(created, overlay)
        create_overlay(overlay, base, "raw", f"{field}.persistentVolumeClaim.claimName")
        return VolumeSource(path=overlay, format="qcow2")

    if source == "persistentVolumeClaim":
        path = _resolve_claim(body.get("claimName"), f"{field}.claimName", claim_resolver)
        return VolumeSource(path=path, format="raw", readonly=bool(body.get("readOnly")))

    if source == "hostDisk":
        return _host_disk(body, field, created)

    if source in ("cloudInitNoCloud", "cloudInitConfigDrive"):
        try:
            data = resolve_cloud_init(body, field, secret_resolver=secret_resolver)
        except CloudInitError as exc:
            raise VolumeError(exc.field, str(exc)) from None
        seed = workdir / f"{vol_name}.iso"
        _track(created, seed)
        hostname = str(spec.get("hostname") or vmi_name)
        if source == "cloudInitNoCloud":
            write_nocloud_iso(seed, data, instance_id=f"{vmi_name}.{namespace}", hostname=hostname)
        else:
            domain = spec.get("domain")
            firmware = domain.get("firmware") if isinstance(domain, Mapping) else None
            fw = (firmware.get("uuid") if isinstance(firmware, Mapping) else None) or firmware_uuid(vmi_name)
            write_configdrive_iso(seed, data, uuid=str(fw), hostname=hostname, name=vmi_name)
        return VolumeSource(path=seed, format="raw", readonly=True)

    if source in ("configMap", "secret", "serviceAccount", "downwardAPI"):
        try:
            if source == "configMap":
                name, optional = body.get("name"), bool(body.get("optional"))
                files = resolve_keyed("ConfigMap", name, optional, f"{field}.name", configmap_resolver)
            elif source == "secret":
                name, optional = body.get("secretName"), bool(body.get("optional"))
                files = resolve_keyed("Secret", name, optional, f"{field}.secretName", secret_resolver)
            elif source == "serviceAccount":
                name = body.get("serviceAccountName")
                files = resolve_keyed(
                    "ServiceAccount", name, False, f"{field}.serviceAccountName", serviceaccount_resolver
                )
            else:
                files = downward_api_files(body.get("fields"), metadata, field)
        except ConfigDiskError as exc:
            raise VolumeError(exc.field, str(exc)) from None
        disk = workdir / f"{vol_name}.iso"
        _track(created, disk)
        write_iso(disk, str(body.get("volumeLabel") or DEFAULT_LABEL), files)
        return VolumeSource(path=disk, format="raw", readonly=True)

    raise VolumeError(
        field,
        f"{field}: volume source {source!r} is not supported by Kubevisor yet",
        FIELD_VALUE_NOT_SUPPORTED,
    )


def _track(created: list[Path], path: Path) -> None:
    if path.exists():
        raise VolumeError(
            "spec.volumes", f"{path} already exists: the volume names of the VMI must be unique"
        )
    created.append(path)


def _capacity(raw: object, field: str) -> int:
    if raw is None:
        raise VolumeError(field, f"{field} is a required field")
    try:
        size = to_quantity(raw).ceil()
    except QuantityError as exc:
        raise VolumeError(field, f"{field}: Invalid value: {raw!r}: {exc}") from None
    if size <= 0:
        raise VolumeError(field, f"{field} must be greater than 0")
    return size


def _resolve_image(image: str, field: str, resolver: ImageResolver | None) -> Path:
    resolve = resolver or _image_store_resolver()
    try:
        base = Path(resolve(image))
    except VolumeError:
        raise
    except Exception as exc:  # the resolver is a plug-in boundary: any failure means "no such image"
        detail = str(exc) or type(exc).__name__
        raise VolumeError(field, f"{field}: image {image!r} cannot be resolved: {detail}") from None
    if not base.is_file():
        raise VolumeError(field, f"{field}: disk of image {image!r} not found at {base}")
    return base.resolve()


def _image_store_resolver() -> ImageResolver:
    try:
        store_module = importlib.import_module("kubevisor.images.store")
    except ImportError as exc:
        raise VolumeError("spec.volumes", f"containerDisk needs the local image store: {exc}") from None
    store = store_module.ImageStore()
    return cast(ImageResolver, store.resolve_disk)


def _resolve_claim(claim: object, field: str, resolver: ClaimResolver | None) -> Path:
    if not claim:
        raise VolumeError(field, f"{field} is a required field")
    if resolver is None:
        raise VolumeError(
            field, f"{field}: PersistentVolumeClaim {claim!r} cannot be resolved without an apiserver"
        )
    try:
        path = Path(resolver(str(claim)))
    except (KeyError, LookupError, FileNotFoundError) as exc:
        raise VolumeError(field, f"{field}: PersistentVolumeClaim {claim!r} not found ({exc})") from None
    if not path.is_file() and not path.is_block_device():
        raise VolumeError(field, f"{field}: disk of PersistentVolumeClaim {claim!r} not found at {path}")
    return path


def _host_disk(body: Mapping[str, Any], field: str, created: list[Path]) -> VolumeSource:
    raw_path = body.get("path")
    path_field = f"{field}.path"
    if not raw_path or not isinstance(raw_path, str):
        raise VolumeError(path_field, f"{path_field} is required for hostDisk volume")
    parts = raw_path.split("/")
    if (
        raw_path == "/"
        or not raw_path.startswith("/")
        or any(p in (".", "..") for p in parts[1:])
        or "\x00" in raw_path
    ):
        raise VolumeError(
            path_field, f"{path_field} must be an absolute path to a file without relative components"
        )
    path = Path(raw_path)
    dtype = body.get("type")
    if dtype == "Disk":
        if not path.is_file() and not path.is_block_device():
            raise VolumeError(path_field, f"{path_field}: hostDisk {raw_path} does not exist (type Disk)")
    elif dtype == "DiskOrCreate":
        size = _capacity(body.get("capacity"), f"{field}.capacity")
        if path.exists():
            if not path.is_file():
                raise VolumeError(path_field, f"{path_field}: {raw_path} exists and is not a regular file")
        else:
            missing = [p for p in [path.parent, *path.parent.parents] if not p.exists()]
            try:
                for directory in reversed(missing):
                    directory.mkdir()
                    created.append(directory)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
                created.append(path)  # a partial create is rolled back; a finished one is user data
                try:
                    os.ftruncate(fd, size)  # sparse
                finally:
                    os.close(fd)
            except OSError as exc:
                raise VolumeError(
                    path_field, f"{path_field}: cannot create {raw_path}: {exc.strerror}"
                ) from None
    else:
        raise VolumeError(
            f"{field}.type",
            f"{field}.type has invalid value '{dtype or ''}', allowed are 'Disk' or 'DiskOrCreate'",
        )
    return VolumeSource(path=path, format="raw")


def detect_format(path: Path, field: str) -> ImageFormat:
    """The format of a trusted base image, from `qemu-img info`."""
    out = _qemu_img(["info", "-U", "--output=json", str(path)], field)
    try:
        fmt = json.loads(out).get("format")
    except json.JSONDecodeError:
        fmt = None
    if fmt not in ("raw", "qcow2"):
        raise VolumeError(
            field, f"{field}: {path} has unsupported image format {fmt!r} (raw or qcow2 expected)"
        )
    return cast(ImageFormat, fmt)


def create_overlay(overlay: Path, base: Path, base_format: ImageFormat, field: str) -> None:
    """A qcow2 overlay whose backing file is `base` (opened read-only by QEMU)."""
    _qemu_img(
        ["create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base.resolve()), str(overlay)], field
    )


def _qemu_img(args: list[str], field: str) -> str:
    try:
        proc = subprocess.run(
            [QEMU_IMG, *args], capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise VolumeError(
            field, f"{field}: {QEMU_IMG} is not installed (Debian package qemu-utils)"
        ) from None
    except subprocess.TimeoutExpired:
        raise VolumeError(field, f"{field}: {QEMU_IMG} {args[0]} timed out") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise VolumeError(field, f"{field}: {QEMU_IMG} {args[0]} failed: {detail}")
    return proc.stdout
