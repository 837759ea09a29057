"""Userland pieces for guest root filesystems and initramfs: Debian's python3, dropbear, shared libraries.

Binaries come from Debian packages (unpacked, never installed). The shared libraries they need are
the ones `ldd` names on this (Debian 12) host, copied into the guest's multiarch directory, with an
ld.so.cache made by `ldconfig -r`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from kubevisor.images import debs

PYTHON_VERSION = "3.11"
PYTHON_PACKAGES = (
    f"python{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-minimal",
    f"libpython{PYTHON_VERSION}-stdlib",
)
DROPBEAR_PACKAGES = ("dropbear-bin",)
MULTIARCH = "usr/lib/x86_64-linux-gnu"
LOADER = "lib64/ld-linux-x86-64.so.2"

# Parts of the stdlib a headless guest never uses (tests, GUI, docs, build tooling).
PYTHON_PRUNE = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "turtle.py",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "venv",
    "config-3.11-x86_64-linux-gnu",
)
PYTHON_DYNLOAD_PRUNE = re.compile(r"^(_test|_xx|xxlimited|_ctypes_test|ossaudiodev|audioop|nis|_curses)")


class UserlandError(RuntimeError):
    """A binary's libraries cannot be resolved, or a package lacks an expected file."""


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """package -> sha256 of the candidate .deb (cache-key input)."""
    return {p: debs.info(p).sha256 for p in packages}


def ldd_libraries(binary: Path) -> list[Path]:
    """Host paths of the shared libraries `binary` needs (empty for static binaries)."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return []
        raise UserlandError(f"ldd {binary}: {proc.stderr.strip()}")
    return parse_ldd(proc.stdout, str(binary))


def parse_ldd(output: str, what: str = "binary") -> list[Path]:
    libs: list[Path] = []
    for line in output.splitlines():
        line = line.strip()
        if "=> not found" in line:
            raise UserlandError(f"{what}: library {line.split()[0]} not found on this host")
        if "=>" in line:
            target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
            if target:
                libs.append(Path(target))
        elif line.startswith("/"):
            libs.append(Path(line.split(" (")[0]))
    return libs


def _ensure_layout(root: Path) -> None:
    (root / MULTIARCH).mkdir(parents=True, exist_ok=True)
    lib = root / "lib"
    lib.mkdir(exist_ok=True)
    link = lib / "x86_64-linux-gnu"
    if not link.exists() and not link.is_symlink():
        link.symlink_to("../usr/lib/x86_64-linux-gnu")
    (root / "lib64").mkdir(exist_ok=True)


def stage_libraries(root: Path, binaries: Iterable[Path]) -> None:
    """Copy the shared libraries of `binaries` (host ldd) into root and refresh ld.so.cache."""
    _ensure_layout(root)
    for binary in binaries:
        for lib in ldd_libraries(binary):
            real = lib.resolve()
            if lib.name.startswith("ld-linux"):
                dest = root / LOADER
                if not dest.exists():
                    shutil.copy2(real, root / MULTIARCH / lib.name)
                    dest.symlink_to(f"../{MULTIARCH}/{lib.name}")
                continue
            dest = root / MULTIARCH / lib.name
            if not dest.exists():
                shutil.copy2(real, dest)
    conf = root / "etc" / "ld.so.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"/{MULTIARCH}\n")
    subprocess.run(["ldconfig", "-r", str(root)], check=True, capture_output=True)


def _elf_files(directory: Path) -> list[Path]:
    found = []
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def stage_python(root: Path, *, compile_pyc: bool = True, extra_modules: Iterable[Path] = ()) -> None:
    """Debian's python3 (python3.11-minimal + stdlib), pruned, with unchecked-hash .pyc compiled.

    `extra_modules`: .py files placed next to the stdlib (importable with `python3 -I -S -m`).
    """
    unpack = root.parent / ".python-debs"
    debs.fetch_and_extract(list(PYTHON_PACKAGES), unpack)
    src_lib = unpack / "usr" / "lib" / f"python{PYTHON_VERSION}"
    if not src_lib.is_dir():
        raise UserlandError(f"python packages did not provide /usr/lib/python{PYTHON_VERSION}")
    for name in PYTHON_PRUNE:
        victim = src_lib / name
        if victim.is_dir():
            shutil.rmtree(victim)
        elif victim.exists():
            victim.unlink()
    for so in (src_lib / "lib-dynload").iterdir():
        if PYTHON_DYNLOAD_PRUNE.match(so.name):
            so.unlink()
    for cache in src_lib.rglob("__pycache__"):
        shutil.rmtree(cache)
    dest_lib = root / "usr" / "lib" / f"python{PYTHON_VERSION}"
    dest_lib.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src_lib, dest_lib, symlinks=True, dirs_exist_ok=True)
    for module in extra_modules:
        shutil.copy2(module, dest_lib / module.name)
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    python = bindir / f"python{PYTHON_VERSION}"
    shutil.copy2(unpack / "usr" / "bin" / f"python{PYTHON_VERSION}", python)
    for alias in ("python3", "python"):
        link = bindir / alias
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(f"python{PYTHON_VERSION}")
    shutil.rmtree(unpack)
    stage_libraries(root, [python, *_elf_files(dest_lib / "lib-dynload")])
    if compile_pyc:
        compile_python_tree(root, dest_lib)


def compile_python_tree(root: Path, directory: Path) -> None:
    """Compile .pyc with the guest's own interpreter (same magic), recorded with guest paths."""
    python = root / "usr" / "bin" / f"python{PYTHON_VERSION}"
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(root / MULTIARCH), "PYTHONHOME": str(root / "usr")}
    proc = subprocess.run(
        [
            str(python),
            "-I",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(root),
            "-p",
            "/",
            str(directory),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise UserlandError(f"compileall failed: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")


def stage_dropbear(root: Path) -> None:
    """dropbear (SSH server) and dropbearkey; host keys are generated at first boot (`dropbear -R`)."""
    unpack = root.parent / ".dropbear-debs"
    debs.fetch_and_extract(list(DROPBEAR_PACKAGES), unpack)
    sbin = root / "usr" / "sbin"
    sbin.mkdir(parents=True, exist_ok=True)
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for rel, dest in (("usr/sbin/dropbear", sbin), ("usr/bin/dropbearkey", bindir)):
        target = dest / Path(rel).name
        if target.exists() or target.is_symlink():
            target.unlink()  # busybox may have left an applet symlink with that name
        shutil.copy2(unpack / rel, target)
    shutil.rmtree(unpack)
    stage_libraries(root, [sbin / "dropbear", bindir / "dropbearkey"])
    (root / "etc" / "dropbear").mkdir(parents=True, exist_ok=True)
    os.chmod(root / "etc" / "dropbear", 0o700)
