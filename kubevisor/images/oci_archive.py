"""Writing OCI archives (a tar of an OCI image layout), e.g. a containerDisk with its disk under /disk/.

Archives are reproducible: fixed mtimes and owners, sorted entries.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from kubevisor.images import reference
from kubevisor.images.store import MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_LAYER, MT_OCI_MANIFEST, REF_ANNOTATION

# KubeVirt's containerDisks own the disk as the qemu user (107) and mark it read-only.
DISK_UID = 107
DISK_MODE = 0o440


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def containerdisk_layer(disk: Path, out: Path, name: str | None = None) -> Path:
    """An uncompressed layer tar holding `disk/` and `disk/<name>` (default: the file's own name)."""
    name = name or disk.name
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"invalid disk file name {name!r}")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("disk")
        d.type = tarfile.DIRTYPE
        d.mode = 0o555
        d.uid = d.gid = DISK_UID
        tar.addfile(d)
        info = tarfile.TarInfo(f"disk/{name}")
        info.size = disk.stat().st_size
        info.mode = DISK_MODE
        info.uid = info.gid = DISK_UID
        with disk.open("rb") as f:
            tar.addfile(info, f)
    return out


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def write_oci_archive(out: Path, layers: list[Path], ref: str, labels: dict[str, str] | None = None) -> str:
    """Write an OCI archive of one linux/amd64 image of uncompressed `layers`; returns its manifest digest."""
    tagged = reference.parse(ref).tagged
    layer_digests = [_file_sha256(layer) for layer in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    }
    config_raw = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config_raw).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest, "size": len(config_raw)},
        "layers": [
            {"mediaType": MT_OCI_LAYER, "digest": d, "size": layer.stat().st_size}
            for d, layer in zip(layer_digests, layers, strict=True)
        ],
    }
    manifest_raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest_raw).hexdigest()
    index = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX,
        "manifests": [
            {
                "mediaType": MT_OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest_raw),
                "annotations": {REF_ANNOTATION: tagged},
            }
        ],
    }
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tar, "index.json", json.dumps(index, indent=2).encode())
        _add_bytes(tar, f"blobs/sha256/{config_digest[7:]}", config_raw)
        _add_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_raw)
        for digest, layer in zip(layer_digests, layers, strict=True):
            info = tarfile.TarInfo(f"blobs/sha256/{digest[7:]}")
            info.size = layer.stat().st_size
            info.mode = 0o644
            with layer.open("rb") as f:
                tar.addfile(info, f)
    return manifest_digest
