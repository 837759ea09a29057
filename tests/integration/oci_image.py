"""Build a tiny OCI image (busybox-static) as files, for podman and containerd: no registry needed."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")


def busybox_rootfs(dest: Path) -> Path:
    """A root filesystem with busybox-static and its applets as symlinks."""
    import subprocess

    (dest / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, dest / "bin/busybox")
    listing = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    applets = listing.stdout.split()
    for applet in applets:
        link = dest / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    for d in ("etc", "tmp", "proc", "sys", "dev", "root", "data"):
        (dest / d).mkdir(exist_ok=True)
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (dest / "etc/group").write_text("root:x:0:\nnobody:x:65534:\n")
    return dest


def rootfs_tar(rootfs: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(rootfs.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    return buf.getvalue()


def busybox_image_tar(work: Path) -> Path:
    """work/rootfs.tar: the busybox root filesystem as one tar, what `podman import` reads."""
    tar = work / "rootfs.tar"
    tar.write_bytes(rootfs_tar(busybox_rootfs(work / "rootfs")))
    return tar


def _blob(layout: tarfile.TarFile, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest.split(':')[1]}")
    info.size = len(data)
    layout.addfile(info, io.BytesIO(data))
    return digest


def oci_archive(rootfs: Path, dest: Path, name: str) -> Path:
    """An OCI image layout tarball (what `ctr images import` and `podman load` read)."""
    layer = rootfs_tar(rootfs)
    with tarfile.open(dest, "w") as out:
        layer_digest = _blob(out, layer)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            }
        ).encode()
        config_digest = _blob(out, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        manifest_digest = _blob(out, manifest)
        index = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": manifest_digest,
                        "size": len(manifest),
                        "annotations": {
                            "io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1],
                        },
                    }
                ],
            }
        ).encode()
        for fname, data in (("index.json", index), ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')):
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dest
