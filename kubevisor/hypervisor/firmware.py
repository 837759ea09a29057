"""Firmware files on this host (Debian's ovmf package) and the per-VMI EFI variable store."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE = OVMF_DIR / "OVMF_CODE_4M.fd"
OVMF_CODE_SECBOOT = OVMF_DIR / "OVMF_CODE_4M.secboot.fd"
OVMF_VARS = OVMF_DIR / "OVMF_VARS_4M.fd"
OVMF_VARS_SECBOOT = OVMF_DIR / "OVMF_VARS_4M.ms.fd"  # Microsoft keys enrolled, as KubeVirt ships


def efi_of(vmi: dict[str, Any]) -> dict[str, Any] | None:
    """The VMI's `firmware.bootloader.efi` (None for BIOS)."""
    efi: dict[str, Any] | None = vmi["spec"]["domain"].get("firmware", {}).get("bootloader", {}).get("efi")
    return efi


def secure_boot(efi: dict[str, Any]) -> bool:
    return bool(efi.get("secureBoot", True))  # KubeVirt's default


def ovmf_code_for(efi: dict[str, Any]) -> Path:
    return OVMF_CODE_SECBOOT if secure_boot(efi) else OVMF_CODE


def ovmf_vars_template_for(efi: dict[str, Any]) -> Path:
    return OVMF_VARS_SECBOOT if secure_boot(efi) else OVMF_VARS


def prepare_ovmf_vars(vmi: dict[str, Any], run_dir: Path) -> tuple[Path, Path] | None:
    """(code, writable vars copy in run_dir) for an EFI VMI; None for BIOS."""
    efi = efi_of(vmi)
    if efi is None:
        return None
    vars_copy = run_dir / "OVMF_VARS.fd"
    shutil.copyfile(ovmf_vars_template_for(efi), vars_copy)
    return ovmf_code_for(efi), vars_copy
