"""The legacy BIOS disk: a small qcow2 that boots like a classic OS image and honours cloud-init seeds.

Layout (MBR): p1 FAT16 `KVBOOT` with syslinux, the cloud kernel's bzImage and the boot initramfs;
p2 ext4 `kvroot` with busybox init, getty on ttyS0 and tty1, DHCP, Debian's python3 running the
NoCloud/ConfigDrive datasource and a QEMU guest agent responder, dropbear, busybox httpd on :80 and
acpid (power button → poweroff). Built without loop mounts: sfdisk, mkfs.fat --offset, syslinux
--install --offset, mcopy, mkfs.ext4 -d, dd, qemu-img convert.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from kubevisor.images import assets, debs, guest_userland, initramfs
from kubevisor.images.boot_initramfs import ASSET as INITRAMFS_ASSET
from kubevisor.images.boot_initramfs import BOOT_MODULES, ensure_boot_initramfs
from kubevisor.images.kernel import ASSET as KERNEL_ASSET
from kubevisor.images.kernel import ensure_kernel

ASSET = "legacy-disk"
DISK_NAME = "legacy.qcow2"
GUEST_DIR = Path(__file__).parent / "guest" / "legacy"
ROOT_LABEL = "kvroot"
BOOT_LABEL = "KVBOOT"
SECTOR = 512
BOOT_START = 2048  # sectors
BOOT_SECTORS = 131072  # 64 MiB FAT16
ROOT_START = BOOT_START + BOOT_SECTORS
ROOT_MIB = 512
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")

# Modules available in the root fs for `modprobe` after boot (the initramfs loads BOOT_MODULES).
ROOTFS_MODULES = (
    *BOOT_MODULES,
    "virtio_input",
    "loop",
    "overlay",
    "squashfs",
    "fuse",
    "tun",
    "af_packet",
    "nls_utf8",
)

# cryptomgr.notests: the kernel's crypto self-tests cost ~0.3 s of a TCG boot (bench/boot).
SYSLINUX_CFG = f"""\
SERIAL 0 115200
DEFAULT kubevisor
PROMPT 0
TIMEOUT 0
LABEL kubevisor
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND root=LABEL={ROOT_LABEL} rw console=tty1 console=ttyS0,115200 quiet cryptomgr.notests
"""

ROOT_DIRS = (
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "mnt",
    "media",
    "home",
    "srv",
    "var/log",
    "var/lib/cloud",
    "var/tmp",
    "opt",
)
MODES = {"etc/shadow": 0o600, "root": 0o700, "tmp": 0o1777, "var/tmp": 0o1777, "etc/dropbear": 0o700}


def _inputs() -> dict[str, Any]:
    packages = [*guest_userland.PYTHON_PACKAGES, *guest_userland.DROPBEAR_PACKAGES, "busybox-static"]
    return {
        "kernel": assets.key(KERNEL_ASSET),
        "initramfs": assets.key(INITRAMFS_ASSET),
        "packages": guest_userland.package_versions(packages),
        "modules": list(ROOTFS_MODULES),
        "root_mib": ROOT_MIB,
        "syslinux": debs.info("syslinux").version,
        "userland": assets.file_digest(Path(guest_userland.__file__)),
    }


def _run(argv: list[str], **kwargs: Any) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise assets.AssetError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def stage_rootfs(root: Path, log: assets.Log) -> None:
    kernel = ensure_kernel()
    log("staging busybox")
    initramfs.stage_busybox(root)
    for d in ROOT_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copytree(GUEST_DIR / "rootfs", root, symlinks=True, dirs_exist_ok=True)
    for keep in root.rglob(".keep"):
        keep.unlink()
    log("staging python3")
    guest_userland.stage_python(root, extra_modules=sorted((GUEST_DIR / "python").glob("*.py")))
    log("staging dropbear")
    guest_userland.stage_dropbear(root)
    log("staging kernel modules")
    initramfs.stage_modules(root, kernel, ROOTFS_MODULES)
    for rel, mode in MODES.items():
        (root / rel).mkdir(exist_ok=True) if not (root / rel).exists() else None
        os.chmod(root / rel, mode)


def build_disk(out_qcow2: Path, root: Path, kernel_bzimage: Path, initrd: Path, work: Path) -> None:
    """Assemble the raw MBR disk from a root tree and boot files, then convert it to qcow2."""
    raw = work / "disk.img"
    root_img = work / "root.ext4"
    total = (ROOT_START + ROOT_MIB * 2048) * SECTOR
    with raw.open("wb") as f:
        f.truncate(total)
    table = (
        "label: dos\n"
        f"start={BOOT_START}, size={BOOT_SECTORS}, type=6, bootable\n"
        f"start={ROOT_START}, type=83\n"
    )
    _run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(raw)], input=table)
    _run(
        [
            "mkfs.fat",
            "-F",
            "16",
            "-n",
            BOOT_LABEL,
            "--offset",
            str(BOOT_START),
            "-h",
            str(BOOT_START),
            str(raw),
            str(BOOT_SECTORS // 2),
        ]
    )
    _run(["syslinux", "--install", "--offset", str(BOOT_START * SECTOR), str(raw)])
    (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
    shutil.copy2(kernel_bzimage, work / "vmlinuz")
    shutil.copy2(initrd, work / "initrd.img")
    image_spec = f"{raw}@@{BOOT_START * SECTOR}"
    _run(
        [
            "mcopy",
            "-i",
            image_spec,
            str(work / "syslinux.cfg"),
            str(work / "vmlinuz"),
            str(work / "initrd.img"),
            "::",
        ],
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    _run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(root), str(root_img), f"{ROOT_MIB}M"])
    _run(
        [
            "dd",
            f"if={root_img}",
            f"of={raw}",
            "bs=1M",
            f"seek={ROOT_START * SECTOR}",
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        ]
    )
    _run(["dd", f"if={MBR_BIN}", f"of={raw}", "bs=440", "count=1", "conv=notrunc", "status=none"])
    _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out_qcow2)])


def _build(out: Path, log: assets.Log) -> None:
    kernel = ensure_kernel()
    initrd = ensure_boot_initramfs()
    work = out / ".work"
    root = work / "root"
    root.mkdir(parents=True)
    stage_rootfs(root, log)
    log("assembling disk (sfdisk, mkfs.fat, syslinux, mkfs.ext4 -d, qemu-img)")
    build_disk(out / DISK_NAME, root, kernel.bzimage, initrd, work)
    shutil.rmtree(work)
    (out / "legacy.json").write_text(
        json.dumps(
            {
                "disk": DISK_NAME,
                "kernel_version": kernel.version,
                "root_label": ROOT_LABEL,
                "qcow2_bytes": (out / DISK_NAME).stat().st_size,
                "virtual_bytes": (ROOT_START + ROOT_MIB * 2048) * SECTOR,
                "default_user": "kubevisor",
            },
            indent=2,
        )
        + "\n"
    )


assets.register(
    ASSET,
    _build,
    description="legacy BIOS disk (qcow2): syslinux, busybox init, cloud-init NoCloud/ConfigDrive, dropbear",
    inputs=_inputs,
    files=(GUEST_DIR,),
)


def ensure_legacy_disk(log: assets.Log | None = None) -> Path:
    """Path of the cached legacy.qcow2 (treat as read-only; boot it through an overlay)."""
    return assets.ensure(ASSET, log) / DISK_NAME
