"""The guest kernel: Debian's cloud kernel, its modules (with modules.dep) and an uncompressed vmlinux.

The cloud kernel's bzImage carries an LZ4 payload; decompressing it on the host once gives an ELF
`vmlinux` with a PVH entry that QEMU boots directly with `-kernel`, skipping in-guest decompression
(which is slow under TCG).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubevisor.images import assets, debs

ASSET = "kernel"
METAPACKAGE = "linux-image-cloud-amd64"

# Legacy-format LZ4 frame magic (what the kernel's build uses for bzImage payloads).
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class KernelAsset:
    vmlinux: Path  # uncompressed ELF, boot with `-kernel` (PVH entry)
    bzimage: Path  # the package's vmlinuz, for bootloaders (syslinux) and as a fallback
    modules_dir: Path  # .../lib/modules/<version>, with modules.dep
    version: str  # uname -r, e.g. 6.1.0-57-cloud-amd64
    config: Path  # the kernel's .config

    @property
    def modules_root(self) -> Path:
        """The directory that holds lib/modules/<version> (what `depmod -b` and `modprobe -d` take)."""
        return self.modules_dir.parent.parent.parent


def find_lz4_payload(bzimage: bytes) -> int:
    """Offset of the LZ4 payload inside a bzImage, or -1."""
    return bzimage.find(_LZ4_LEGACY_MAGIC)


def extract_vmlinux(bzimage: Path, out: Path) -> bool:
    """Write the decompressed ELF kernel of `bzimage` to `out`. False if the payload is not LZ4."""
    data = bzimage.read_bytes()
    offset = find_lz4_payload(data)
    if offset < 0:
        return False
    # lz4 stops at the end of the frame and complains about the trailing bytes of the bzImage:
    # its exit status is not meaningful here, the ELF header of the result is.
    with out.open("wb") as f:
        subprocess.run(["lz4", "-dc"], input=data[offset:], stdout=f, stderr=subprocess.DEVNULL, check=False)
    with out.open("rb") as f:
        ok = f.read(4) == _ELF_MAGIC
    if not ok:
        out.unlink()
    return ok


def _inputs() -> dict[str, Any]:
    pkg = debs.resolve_metapackage(METAPACKAGE, "linux-image-")
    return {"package": pkg.package, "version": pkg.version, "sha256": pkg.sha256}


def _build(out: Path, log: assets.Log) -> None:
    pkg = debs.resolve_metapackage(METAPACKAGE, "linux-image-")
    log(f"downloading {pkg.package} {pkg.version}")
    deb = debs.download(pkg)
    log("extracting kernel package")
    staging = out / ".deb"
    debs.extract(deb, staging)
    vmlinuz = sorted((staging / "boot").glob("vmlinuz-*"))
    if len(vmlinuz) != 1:
        raise assets.AssetError(f"{pkg.package}: expected one /boot/vmlinuz-*, found {len(vmlinuz)}")
    version = vmlinuz[0].name.removeprefix("vmlinuz-")
    shutil.move(str(vmlinuz[0]), out / "bzImage")
    shutil.move(str(staging / "boot" / f"config-{version}"), out / "config")
    modules_parent = out / "root" / "lib" / "modules"
    modules_parent.mkdir(parents=True)
    src_modules = staging / "lib" / "modules" / version
    if not src_modules.is_dir():
        src_modules = staging / "usr" / "lib" / "modules" / version
    shutil.move(str(src_modules), modules_parent / version)
    shutil.rmtree(staging)
    log("running depmod")
    subprocess.run(["depmod", "-b", str(out / "root"), version], check=True, capture_output=True)
    log("decompressing vmlinux")
    has_vmlinux = extract_vmlinux(out / "bzImage", out / "vmlinux")
    (out / "kernel.json").write_text(
        json.dumps(
            {
                "version": version,
                "package": pkg.package,
                "package_version": pkg.version,
                "vmlinux": has_vmlinux,
            },
            indent=2,
        )
        + "\n"
    )


assets.register(
    ASSET,
    _build,
    description=f"guest kernel from {METAPACKAGE}: vmlinux, bzImage, modules",
    inputs=_inputs,
)


def load(directory: Path) -> KernelAsset:
    meta = json.loads((directory / "kernel.json").read_text())
    version = str(meta["version"])
    bzimage = directory / "bzImage"
    return KernelAsset(
        vmlinux=directory / "vmlinux" if meta["vmlinux"] else bzimage,
        bzimage=bzimage,
        modules_dir=directory / "root" / "lib" / "modules" / version,
        version=version,
        config=directory / "config",
    )


def ensure_kernel(log: assets.Log | None = None) -> KernelAsset:
    """The guest kernel, built (downloaded, unpacked, depmod'ed) on first use and cached."""
    return load(assets.ensure(ASSET, log))
