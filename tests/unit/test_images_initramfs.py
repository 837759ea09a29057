"""modules.dep resolution and the newc writer (pure parts of kubevisor.images.initramfs)."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from kubevisor.images import initramfs

DEP = """\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko \
kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/fs/isofs/isofs.ko:
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_common.ko
kernel/drivers/scsi/scsi_common.ko:
"""


def test_module_name_normalises_suffix_and_dashes() -> None:
    assert initramfs.module_name("kernel/drivers/char/hw_random/virtio-rng.ko") == "virtio_rng"
    assert initramfs.module_name("a/b/ext4.ko.xz") == "ext4"


def test_resolve_puts_dependencies_first_without_duplicates() -> None:
    deps = initramfs.parse_modules_dep(DEP)
    order = initramfs.resolve_modules(["virtio_blk", "virtio_pci", "sd_mod"], deps)
    names = [initramfs.module_name(p) for p in order]
    assert len(names) == len(set(names))
    assert names.index("virtio") < names.index("virtio_blk")
    assert names.index("virtio_ring") < names.index("virtio_blk")
    assert names.index("virtio_pci_modern_dev") < names.index("virtio_pci")
    assert names.index("scsi_common") < names.index("sd_mod")
    assert "isofs" not in names


def test_builtin_module_is_skipped_and_unknown_is_an_error() -> None:
    deps = initramfs.parse_modules_dep(DEP)
    assert initramfs.resolve_modules(["ext4"], deps, builtin={"ext4"}) == []
    with pytest.raises(initramfs.InitramfsError, match="nosuchmod"):
        initramfs.resolve_modules(["nosuchmod"], deps)


def test_cycle_is_reported() -> None:
    deps = {"a.ko": ("b.ko",), "b.ko": ("a.ko",)}
    with pytest.raises(initramfs.InitramfsError, match="cycle"):
        initramfs.resolve_modules(["a"], deps)


def test_newc_archive_is_readable_by_cpio(tmp_path: Path) -> None:
    root = tmp_path / "root"
    initramfs.stage_file(root, "/init", "#!/bin/sh\necho hi\n", 0o755)
    initramfs.stage_file(root, "/etc/odd-size", b"x" * 5)
    (root / "bin").mkdir()
    (root / "bin" / "sh").symlink_to("busybox")
    buf = io.BytesIO()
    initramfs.write_newc(root, buf)
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=buf.getvalue(), capture_output=True, check=True
    ).stdout.decode()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.splitlines()]
    assert {"init", "etc", "etc/odd-size", "bin", "bin/sh", "dev", "dev/console", "dev/null"} <= set(names)
    assert "root" in listing  # owner
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=buf.getvalue(), cwd=out, check=False)
    assert (out / "init").read_text() == "#!/bin/sh\necho hi\n"
    assert (out / "etc" / "odd-size").read_bytes() == b"xxxxx"
    assert (out / "bin" / "sh").is_symlink()


def test_stage_file_rejects_relative_and_dotdot(tmp_path: Path) -> None:
    with pytest.raises(initramfs.InitramfsError):
        initramfs.stage_file(tmp_path, "etc/x", "")
    with pytest.raises(initramfs.InitramfsError):
        initramfs.stage_file(tmp_path, "/etc/../../x", "")


def test_write_initramfs_requires_init(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with pytest.raises(initramfs.InitramfsError, match="init"):
        initramfs.write_initramfs(tmp_path / "root", tmp_path / "out.img")
