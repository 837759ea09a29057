"""Small ISO9660 images (Rock Ridge + Joliet) from in-memory files, written atomically with pycdlib.

Used for cloud-init seeds and for configMap/secret/downwardAPI disks (as KubeVirt does with xorrisofs).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pycdlib

JOLIET_MAX = 64  # Joliet names are at most 64 UCS-2 characters; Rock Ridge keeps the full name


def write_iso(dest: Path, label: str, files: list[tuple[str, bytes]]) -> None:
    """Write `files` ([(relative path, content)]) as an ISO labelled `label`, atomically.

    Paths may contain directories; names are kept by Rock Ridge (and Joliet, up to 64
    characters); the ISO9660 names are unique 8.3 stand-ins. A partial file never stays behind.
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label, joliet=3, rock_ridge="1.09")
    dirs: dict[str, tuple[str, str]] = {"": ("", "")}  # long dir -> (ISO9660 path, Joliet path)
    used: dict[str, set[str]] = {"": set()}  # ISO9660 dir path -> short names taken in it
    try:
        for long_path, payload in files:
            parts = long_path.split("/")
            for depth in range(1, len(parts)):
                long_dir = "/".join(parts[:depth])
                if long_dir not in dirs:
                    parent_iso, parent_joliet = dirs["/".join(parts[: depth - 1])]
                    short = _unique(_iso_name(parts[depth - 1], directory=True), used[parent_iso])
                    iso_dir = f"{parent_iso}/{short}"
                    joliet_dir = f"{parent_joliet}/{parts[depth - 1][:JOLIET_MAX]}"
                    iso.add_directory(iso_dir, rr_name=parts[depth - 1], joliet_path=joliet_dir)
                    dirs[long_dir] = (iso_dir, joliet_dir)
                    used[iso_dir] = set()
            parent_iso, parent_joliet = dirs["/".join(parts[:-1])]
            short = _unique(_iso_name(parts[-1], directory=False), used[parent_iso])
            iso.add_fp(
                io.BytesIO(payload),
                len(payload),
                f"{parent_iso}/{short};1",
                rr_name=parts[-1],
                joliet_path=f"{parent_joliet}/{parts[-1][:JOLIET_MAX]}",
            )
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            iso.write(str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        iso.close()


def _unique(name: str, taken: set[str]) -> str:
    stem, dot, ext = name.partition(".")
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        suffix = str(n)
        candidate = f"{stem[: 8 - len(suffix)]}{suffix}{dot}{ext}"
    taken.add(candidate)
    return candidate


_D_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _iso_name(name: str, *, directory: bool) -> str:
    """An ISO9660 level-1-style 8.3 name (d-characters); the real name lives in RR/Joliet."""
    stem, _, ext = name.rpartition(".") if "." in name and not directory else (name, "", "")
    clean = "".join(c if c in _D_CHARS else "_" for c in stem.upper())[:8] or "_"
    if directory:
        return clean
    ext_clean = "".join(c if c in _D_CHARS else "_" for c in ext.upper())[:3]
    return f"{clean}.{ext_clean}"
