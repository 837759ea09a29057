"""Bind mounts into a sandbox's shared directory (libc mount(2) via ctypes; no shell)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc: ctypes.CDLL | None = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def bind(source: Path, target: Path, recursive: bool = True) -> None:
    """Bind source onto target, creating target as an empty file or directory like source."""
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    flags = MS_BIND | (MS_REC if recursive else 0)
    if _c().mount(str(source).encode(), str(target).encode(), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bind mount {source} -> {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Lazily detach whatever is mounted on target (repeat for stacked mounts); missing is fine."""
    for _ in range(16):
        if _c().umount2(str(target).encode(), MNT_DETACH) != 0:
            return


def mounted_under(prefix: Path) -> list[Path]:
    """Mount points at or below prefix, deepest first (from /proc/self/mountinfo)."""
    found = []
    text = Path("/proc/self/mountinfo").read_text()
    pre = str(prefix).rstrip("/")
    for line in text.splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == pre or point.startswith(pre + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)
