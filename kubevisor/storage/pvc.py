"""PersistentVolumeClaims in Filesystem mode: the claim's `disk.img`, as KubeVirt uses it.

A Filesystem-mode claim holds the VM disk as a raw sparse file `disk.img` at its root. When it
is missing, it is created with the claim's capacity; when the volume has less free space, up to
`LESS_PVC_SPACE_TOLERATION` percent less is accepted (KubeVirt's defaults: 10 %, keeping a
128 KiB reserve), otherwise it is an error. The image is never probed for a format: it is raw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DISK_IMAGE = "disk.img"
LESS_PVC_SPACE_TOLERATION = 10  # percent
MINIMUM_PVC_RESERVE_BYTES = 128 * 1024


class ClaimSpaceError(OSError):
    """Not enough space in the claim for its disk image."""


@dataclass(frozen=True)
class DiskImage:
    path: Path
    size: int
    created: bool
    shrunk: bool  # created smaller than requested, within the toleration


def bytes_available(directory: Path, reserve: int = MINIMUM_PVC_RESERVE_BYTES) -> int:
    st = os.statvfs(directory)
    return max(0, st.f_bavail * st.f_frsize - reserve)


def ensure_disk_image(
    claim_dir: Path,
    requested: int,
    *,
    toleration: int = LESS_PVC_SPACE_TOLERATION,
    available: int | None = None,
) -> DiskImage:
    """The claim's disk image, created sparse with `requested` bytes (or a little less) if absent."""
    path = claim_dir / DISK_IMAGE
    if path.exists():
        if not path.is_file():
            raise IsADirectoryError(f"{path} exists and is not a regular file")
        return DiskImage(path, path.stat().st_size, created=False, shrunk=False)
    if requested <= 0:
        raise ValueError(f"requested size must be positive, got {requested}")
    free = bytes_available(claim_dir) if available is None else available
    size, shrunk = requested, False
    if requested > free:
        tolerated = requested * (100 - toleration) // 100
        if tolerated > free:
            raise ClaimSpaceError(
                f"unable to create {path}, not enough space: demanded size {requested} B is bigger than "
                f"available space {free} B, also after taking {toleration} % toleration into account"
            )
        size, shrunk = free, True
    size -= size % 512  # a whole number of sectors
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return DiskImage(path, size, created=True, shrunk=shrunk)
