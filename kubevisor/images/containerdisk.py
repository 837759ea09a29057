"""The legacy disk as a containerDisk (OCI archive, disk/legacy.qcow2) stored as kubevisor/legacy:latest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubevisor.images import assets, oci_archive
from kubevisor.images.legacy_disk import ASSET as LEGACY_DISK_ASSET
from kubevisor.images.legacy_disk import ensure_legacy_disk
from kubevisor.images.store import ImageRecord, ImageStore, StoreError

ASSET = "legacy-containerdisk"
ARCHIVE_NAME = "legacy-containerdisk.oci.tar"
LEGACY_IMAGE = "kubevisor/legacy:latest"


def _inputs() -> dict[str, Any]:
    return {"disk": assets.key(LEGACY_DISK_ASSET), "ref": LEGACY_IMAGE}


def _build(out: Path, log: assets.Log) -> None:
    disk = ensure_legacy_disk()
    log("writing the containerDisk layer")
    layer = oci_archive.containerdisk_layer(disk, out / ".layer.tar")
    log("writing the OCI archive")
    digest = oci_archive.write_oci_archive(
        out / ARCHIVE_NAME, [layer], LEGACY_IMAGE, labels={"io.kubevisor.containerdisk": "legacy"}
    )
    layer.unlink()
    meta = {"ref": LEGACY_IMAGE, "digest": digest}
    (out / "containerdisk.json").write_text(json.dumps(meta, indent=2) + "\n")


assets.register(
    ASSET,
    _build,
    description=f"OCI archive of the legacy disk as a containerDisk ({LEGACY_IMAGE})",
    inputs=_inputs,
)


def ensure_legacy_image(store: ImageStore | None = None, log: assets.Log | None = None) -> ImageRecord:
    """Make sure the store holds the current legacy containerDisk as kubevisor/legacy:latest."""
    store = store or ImageStore()
    directory = assets.ensure(ASSET, log)
    digest = json.loads((directory / "containerdisk.json").read_text())["digest"]
    try:
        record = store.lookup(LEGACY_IMAGE)
        if record.digest == digest:
            return record
    except StoreError:
        pass
    (record,) = store.import_archive(directory / ARCHIVE_NAME)
    return record
