"""Initramfs building blocks: a staging directory → a compressed newc cpio archive.

Reusable by every component that boots the guest kernel with its own userspace:

    root = Path(tmp) / "root"
    stage_busybox(root)
    order = stage_modules(root, kernel, ["virtio_pci", "virtio_console"])
    write_module_load_list(root, order)
    (root / "init").write_text(MY_INIT); (root / "init").chmod(0o755)
    write_initramfs(root, out_path)

The archive is written in Python (newc format) so that every entry is owned by root and device
nodes (/dev/console, /dev/null) exist without the builder needing mknod.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kubevisor.images import debs
from kubevisor.images.kernel import KernelAsset

MODULE_LOAD_LIST = "etc/kubevisor/modules.load"  # relative paths of modules, dependencies first


class InitramfsError(RuntimeError):
    """Staging or writing an initramfs failed (missing module, bad path...)."""


# ---------------------------------------------------------------- modules.dep (pure)


def module_name(path: str) -> str:
    """'kernel/drivers/block/virtio_blk.ko' -> 'virtio_blk' (dashes normalised like the kernel does)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """modules.dep: 'path: dep1 dep2' per line -> {path: (deps...)} ."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        path, sep, rest = line.partition(":")
        if not sep:
            raise InitramfsError(f"malformed modules.dep line: {line!r}")
        deps[path.strip()] = tuple(rest.split())
    return deps


def parse_modules_builtin(text: str) -> set[str]:
    return {module_name(line.strip()) for line in text.splitlines() if line.strip()}


def resolve_modules(
    names: Iterable[str], dep_map: dict[str, tuple[str, ...]], builtin: set[str] | None = None
) -> list[str]:
    """Module paths needed to load `names`, each after its dependencies, no duplicates.

    A name that is built into the kernel is skipped; an unknown name is an error.
    """
    by_name = {module_name(p): p for p in dep_map}
    builtin = builtin or set()
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str, chain: tuple[str, ...]) -> None:
        if path in seen:
            return
        if path in chain:
            raise InitramfsError(f"dependency cycle: {' -> '.join((*chain, path))}")
        # modules.dep lists the full transitive closure, in load order reversed; visiting each
        # dependency recursively gives a correct order whatever the file's own ordering is.
        for dep in dep_map.get(path, ()):
            visit(dep, (*chain, path))
        seen.add(path)
        order.append(path)

    for name in names:
        key = name.replace("-", "_")
        if key in by_name:
            visit(by_name[key], ())
        elif key not in builtin:
            raise InitramfsError(f"kernel module {name!r} not found in modules.dep")
    return order


# ---------------------------------------------------------------- staging


def stage_busybox(root: Path) -> None:
    """busybox (static, from Debian's busybox-static) in /bin with a symlink per applet."""
    unpack = root.parent / ".busybox-deb"
    pkg = debs.info("busybox-static")
    debs.extract(debs.download(pkg), unpack)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    busybox = root / "bin" / "busybox"
    shutil.copy2(unpack / "bin" / "busybox", busybox)
    shutil.rmtree(unpack)
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        link = root / applet
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(busybox, link.parent))


def kernel_dep_map(kernel: KernelAsset) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    deps = parse_modules_dep((kernel.modules_dir / "modules.dep").read_text())
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = parse_modules_builtin(builtin_file.read_text()) if builtin_file.exists() else set()
    return deps, builtin


def stage_modules(root: Path, kernel: KernelAsset, names: Iterable[str]) -> list[str]:
    """Copy `names` and their dependencies to root/lib/modules/<ver>, run depmod there.

    Returns the module paths (relative to lib/modules/<ver>) in load order.
    """
    deps, builtin = kernel_dep_map(kernel)
    order = resolve_modules(names, deps, builtin)
    target = root / "lib" / "modules" / kernel.version
    for rel in order:
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(kernel.modules_dir / rel, dest)
    target.mkdir(parents=True, exist_ok=True)
    for meta in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
        if (kernel.modules_dir / meta).exists():
            shutil.copy2(kernel.modules_dir / meta, target / meta)
    subprocess.run(["depmod", "-b", str(root), kernel.version], check=True, capture_output=True)
    return order


def write_module_load_list(root: Path, order: list[str], kernel: KernelAsset) -> Path:
    """A file listing absolute in-guest module paths in load order: `insmod` each line."""
    listing = root / MODULE_LOAD_LIST
    listing.parent.mkdir(parents=True, exist_ok=True)
    base = f"/lib/modules/{kernel.version}"
    existing = listing.read_text().split() if listing.exists() else []
    lines = existing + [f"{base}/{rel}" for rel in order if f"{base}/{rel}" not in existing]
    listing.write_text("".join(f"{line}\n" for line in lines))
    return listing


def stage_file(root: Path, guest_path: str, content: bytes | str | Path, mode: int = 0o644) -> Path:
    """Place one file at an absolute in-guest path."""
    if not guest_path.startswith("/") or ".." in guest_path.split("/"):
        raise InitramfsError(f"guest path must be absolute without '..': {guest_path!r}")
    dest = root / guest_path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, Path):
        shutil.copy2(content, dest)
    else:
        dest.write_bytes(content.encode() if isinstance(content, str) else content)
    dest.chmod(mode)
    return dest


# ---------------------------------------------------------------- newc writer


@dataclass(frozen=True)
class DeviceNode:
    path: str  # relative, e.g. "dev/console"
    mode: int  # including S_IFCHR / S_IFBLK
    major: int
    minor: int


DEFAULT_DEVICES = (
    DeviceNode("dev/console", stat.S_IFCHR | 0o600, 5, 1),
    DeviceNode("dev/null", stat.S_IFCHR | 0o666, 1, 3),
)


def _newc_header(
    ino: int, mode: int, nlink: int, size: int, name: bytes, rdev: tuple[int, int] = (0, 0)
) -> bytes:
    fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
    header = b"070701" + b"".join(b"%08X" % v for v in fields)
    data = header + name + b"\0"
    return data + b"\0" * (-len(data) % 4)


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            yield base / name


def write_newc(root: Path, out: BinaryIO, devices: Iterable[DeviceNode] = DEFAULT_DEVICES) -> None:
    """Write `root` as a newc cpio archive: owner root, mtime 0 (reproducible), sorted."""
    ino = 1
    present: set[str] = set()
    for path in _walk(root):
        rel = path.relative_to(root).as_posix()
        present.add(rel)
        st = path.lstat()
        name = rel.encode()
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path).encode()
            out.write(_newc_header(ino, st.st_mode, 1, len(target), name))
            out.write(target + b"\0" * (-len(target) % 4))
        elif stat.S_ISDIR(st.st_mode):
            out.write(_newc_header(ino, st.st_mode, 2, 0, name))
        elif stat.S_ISREG(st.st_mode):
            out.write(_newc_header(ino, st.st_mode, 1, st.st_size, name))
            with path.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
            out.write(b"\0" * (-st.st_size % 4))
        else:
            raise InitramfsError(f"unsupported file type in staging dir: {rel}")
        ino += 1
    for dev in devices:
        if dev.path in present:
            continue
        parent = dev.path.rsplit("/", 1)[0]
        if "/" in dev.path and parent not in present:
            out.write(_newc_header(ino, stat.S_IFDIR | 0o755, 2, 0, parent.encode()))
            present.add(parent)
            ino += 1
        out.write(_newc_header(ino, dev.mode, 1, 0, dev.path.encode(), (dev.major, dev.minor)))
        ino += 1
    out.write(_newc_header(0, 0, 1, 0, b"TRAILER!!!"))


def write_initramfs(root: Path, out: Path, compression: str = "gzip", level: int = 6) -> Path:
    """Archive `root` into `out` (gzip, zstd or none). The kernel needs an executable /init."""
    if not (root / "init").exists():
        raise InitramfsError(f"{root}: no /init")
    tmp = out.with_name(f".{out.name}.tmp")
    if compression == "gzip":
        with tmp.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz:
            write_newc(root, gz)  # type: ignore[arg-type]
    elif compression == "none":
        with tmp.open("wb") as raw:
            write_newc(root, raw)
    elif compression == "zstd":
        with tmp.open("wb") as dst:
            proc = subprocess.Popen(["zstd", "-q", f"-{level}", "-c"], stdin=subprocess.PIPE, stdout=dst)
            assert proc.stdin is not None
            write_newc(root, proc.stdin)  # type: ignore[arg-type]
            proc.stdin.close()
            if proc.wait() != 0:
                raise InitramfsError("zstd failed")
    else:
        raise InitramfsError(f"unknown compression {compression!r}: use gzip, zstd or none")
    os.replace(tmp, out)
    return out
