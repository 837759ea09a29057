"""The boot initramfs: busybox, the virtio/block/filesystem modules, an /init that mounts `root=`.

Used by the legacy disk (syslinux loads it with the bzImage) and usable with `-kernel vmlinux
-initrd initramfs.img` for direct boots; without `root=` it stops at a shell on the console.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kubevisor.images import assets, debs, initramfs
from kubevisor.images.kernel import ASSET as KERNEL_ASSET
from kubevisor.images.kernel import ensure_kernel

ASSET = "initramfs"
GUEST_DIR = Path(__file__).parent / "guest" / "initramfs"

# Everything a guest needs to find its disks, NIC, serial ports and seed: virtio over PCI,
# IDE (pc machine), SCSI, and the filesystems of root disks and cloud-init seeds.
BOOT_MODULES: tuple[str, ...] = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "virtio_console",
    "virtio_rng",
    "virtio_balloon",
    "ata_piix",
    "ata_generic",
    "sd_mod",
    "sr_mod",
    "ext4",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "virtiofs",
    "button",
    "evdev",
)


def _inputs() -> dict[str, Any]:
    return {
        "kernel": assets.key(KERNEL_ASSET),
        "busybox": debs.info("busybox-static").sha256,
        "modules": list(BOOT_MODULES),
    }


def _build(out: Path, log: assets.Log) -> None:
    kernel = ensure_kernel()
    root = out / ".root"
    log("staging busybox")
    initramfs.stage_busybox(root)
    for d in ("proc", "sys", "dev", "newroot", "tmp", "run"):
        (root / d).mkdir(exist_ok=True)
    log("staging kernel modules")
    order = initramfs.stage_modules(root, kernel, BOOT_MODULES)
    initramfs.write_module_load_list(root, order, kernel)
    initramfs.stage_file(root, "/init", GUEST_DIR / "init", 0o755)
    log("writing initramfs.img")
    initramfs.write_initramfs(root, out / "initramfs.img")
    shutil.rmtree(root)


assets.register(
    ASSET,
    _build,
    description="boot initramfs: busybox + virtio/block/fs modules, mounts root=",
    inputs=_inputs,
    files=(GUEST_DIR,),
)


def ensure_boot_initramfs(log: assets.Log | None = None) -> Path:
    """Path of initramfs.img (gzip newc)."""
    return assets.ensure(ASSET, log) / "initramfs.img"
