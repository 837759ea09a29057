"""The sandbox guest's initramfs: busybox, Debian's python3 and crun, virtio modules, and the agent.

Everything comes from Debian packages (``apt-get download`` + ``dpkg-deb -x``, nothing installed on
the host); shared libraries are the host's copies of the files ``ldd`` names (this host is the same
Debian release). The stdlib is precompiled (unchecked-hash .pyc) with the guest's own interpreter
because importing without .pyc is ~3x slower under TCG. Cached under
``cache_dir()/agent-initramfs/<hash of inputs>/``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kubevisor.paths import cache_dir

BUILDER_VERSION = "3"
PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "crun", "busybox-static")
# Modules the guest needs, in load order; dependencies are resolved with modinfo.
MODULES = ("virtio_pci", "virtio_console", "virtiofs", "virtio_rng")
# Extension modules the agent never imports and whose libraries would only grow the image.
DROP_DYNLOAD_PREFIXES = (
    "_tkinter",
    "_curses",
    "_sqlite3",
    "_dbm",
    "_gdbm",
    "_ssl",
    "_hashlib",
    "_test",
    "_codecs_",
    "readline",
    "_lzma",
    "_bz2",
    "_ctypes_test",
    "xxlimited",
    "_xxtest",
)
DROP_STDLIB_DIRS = (
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "unittest",
    "distutils",
    "sqlite3",
    "venv",
)
AGENT_SOURCE = Path(__file__).resolve().parent.parent / "agent"

INIT_SCRIPT = """#!/bin/sh
# kubevisor sandbox guest init: mount the basics, load virtio drivers, hand over to the agent.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts -o gid=5,mode=620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=755 run /run
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
while read -r m; do insmod "/lib/modules/$m"; done < /etc/kv-modules
mkdir -p /run/kv/shared
mount -t virtiofs kvshared /run/kv/shared || echo "kubevisor: virtio-fs mount failed" >&2
echo "+cpu +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
ip link set lo up 2>/dev/null
hostname sandbox
export PYTHONPATH=/opt/kvagent PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -S -m kvagent
"""


@dataclass(frozen=True)
class AgentInitramfs:
    path: Path
    key: str


def _run(argv: list[str], **kw: object) -> str:
    proc = subprocess.run(argv, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    out: str = proc.stdout
    return out


def _apt_stamp() -> str:
    stamps = []
    for path in (Path("/var/lib/apt/lists"), Path("/var/cache/apt/pkgcache.bin")):
        with contextlib.suppress(OSError):
            stamps.append(str(path.stat().st_mtime_ns))
    return ":".join(stamps)


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Candidate versions; memoized on disk against the apt lists' mtime (apt-cache takes 0.5 s and
    this runs on every sandbox start)."""
    memo = cache_dir() / "agent-initramfs" / "versions.json"
    stamp = _apt_stamp() + "|" + ",".join(packages)
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(memo.read_text())
        if data.get("stamp") == stamp:
            return dict(data["versions"])
    out = _run(["apt-cache", "policy", *packages])
    versions: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif line.strip().startswith("Candidate:") and current:
            versions[current] = line.split(":", 1)[1].strip()
    for pkg in packages:
        if versions.get(pkg) in (None, "(none)"):
            raise RuntimeError(f"Debian package {pkg!r} is not available (apt-get update?)")
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "versions": versions}))
    os.replace(tmp, memo)
    return versions


def download_debs(packages: tuple[str, ...], dest: Path) -> list[Path]:
    """Fetch the .deb files into dest (kept as a cache; apt-get download names them by version)."""
    dest.mkdir(parents=True, exist_ok=True)
    versions = package_versions(packages)
    wanted = [f"{pkg}={ver}" for pkg, ver in versions.items()]
    have = {p.name.split("_")[0]: p for p in dest.glob("*.deb")}
    missing = [
        w
        for w in wanted
        if w.split("=")[0] not in have or _deb_version(have[w.split("=")[0]]) != w.split("=", 1)[1]
    ]
    if missing:
        _run(["apt-get", "download", *missing], cwd=dest)
    debs = []
    for pkg, ver in versions.items():
        matches = [p for p in dest.glob(f"{pkg}_*.deb") if _deb_version(p) == ver]
        if not matches:
            raise RuntimeError(f"apt-get download did not produce {pkg} {ver}")
        debs.append(matches[0])
    return debs


def _deb_version(path: Path) -> str:
    return _run(["dpkg-deb", "-f", str(path), "Version"]).strip()


def _agent_digest() -> str:
    h = hashlib.sha256()
    for f in sorted(AGENT_SOURCE.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def module_order(modules_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Module files (relative to modules_dir) in an order where dependencies load first."""
    index = {p.name.removesuffix(".ko").replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        path = index.get(key)
        if path is None:
            return  # built into the kernel
        deps = _run(["modinfo", "-F", "depends", str(path)]).strip()
        for dep in filter(None, deps.split(",")):
            visit(dep)
        order.append(path.relative_to(modules_dir))

    for name in names:
        visit(name)
    return order


def _elf_deps(files: list[Path]) -> set[Path]:
    libs: set[Path] = set()
    for f in files:
        out = subprocess.run(["ldd", str(f)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts:
                target = parts[parts.index("=>") + 1]
                if target.startswith("/"):
                    libs.add(Path(target))
            elif parts and parts[0].startswith("/"):
                libs.add(Path(parts[0]))
    return libs


def _copy_lib(root: Path, lib: Path) -> None:
    dest = root / str(lib).lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(lib.resolve(), dest)


def populate(root: Path, debs: list[Path], modules_dir: Path) -> None:
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    for junk in ("usr/share", "usr/lib/x86_64-linux-gnu/libcrun.a", "usr/lib/binfmt.d"):
        target = root / junk
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    stdlib = root / "usr/lib/python3.11"
    for name in DROP_STDLIB_DIRS:
        shutil.rmtree(stdlib / name, ignore_errors=True)
    for so in (stdlib / "lib-dynload").glob("*.so"):
        if so.name.startswith(DROP_DYNLOAD_PREFIXES):
            so.unlink()
    (root / "usr/bin/python3").unlink(missing_ok=True)
    (root / "usr/bin/python3").symlink_to("python3.11")
    # busybox: every applet as a symlink; Debian's static build lives in /bin.
    busybox = root / "bin/busybox"
    for applet in _run([str(busybox), "--list-full"]).split():
        link = root / applet
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    elfs = [root / "usr/bin/python3.11", root / "usr/bin/crun", *(stdlib / "lib-dynload").glob("*.so")]
    for lib in _elf_deps(elfs):
        _copy_lib(root, lib)
    # The dynamic loader is also named by its canonical /lib64 path.
    ld = root / "lib64/ld-linux-x86-64.so.2"
    if not ld.exists():
        _copy_lib(root, Path("/lib64/ld-linux-x86-64.so.2"))
    # Kernel modules.
    order = module_order(modules_dir, MODULES)
    for rel in order:
        dest = root / "lib/modules" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(modules_dir / rel, dest)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/kv-modules").write_text("".join(f"{rel}\n" for rel in order))
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\ntty:x:5:\n")
    for d in ("proc", "sys", "dev", "run", "tmp", "root", "sys/fs/cgroup"):
        (root / d).mkdir(parents=True, exist_ok=True)
    agent_pkg = root / "opt/kvagent/kvagent"
    agent_pkg.mkdir(parents=True)
    for f in AGENT_SOURCE.glob("*.py"):
        shutil.copy2(f, agent_pkg / f.name)
    init = root / "init"
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    # Precompile with the guest interpreter itself (same magic number, same paths).
    env = {"PYTHONHOME": str(root / "usr"), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [
            str(root / "usr/bin/python3.11"),
            "-S",
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
            str(stdlib),
            str(root / "opt/kvagent"),
        ],
        check=True,
        env=env,
        capture_output=True,
    )


def write_cpio_gz(root: Path, dest: Path) -> None:
    """newc cpio of root, gzip -1 (fast to unpack under TCG; xz is 2x slower to boot)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join([".", *names]) + "\n"
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
        proc = subprocess.Popen(
            ["cpio", "-o", "-H", "newc", "--quiet", "--reproducible"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(listing.encode())
        proc.stdin.close()
        shutil.copyfileobj(proc.stdout, gz)
        if proc.wait() != 0:
            raise RuntimeError("cpio failed")
    os.replace(tmp, dest)


def build_key(kernel_version: str) -> str:
    h = hashlib.sha256()
    h.update(BUILDER_VERSION.encode())
    h.update(kernel_version.encode())
    h.update(repr(sorted(package_versions().items())).encode())
    h.update(INIT_SCRIPT.encode())
    h.update(_agent_digest().encode())
    return h.hexdigest()[:16]


def ensure_agent_initramfs(modules_dir: Path, kernel_version: str) -> AgentInitramfs:
    """Build (or reuse) the agent initramfs for the given kernel's modules."""
    key = build_key(kernel_version)
    out_dir = cache_dir() / "agent-initramfs" / key
    image = out_dir / "initrd.img"
    if image.exists():
        return AgentInitramfs(image, key)
    out_dir.mkdir(parents=True, exist_ok=True)
    debs = download_debs(PACKAGES, cache_dir() / "debs")
    with tempfile.TemporaryDirectory(prefix="kv-agent-initramfs-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        populate(root, debs, modules_dir)
        write_cpio_gz(root, image)
    return AgentInitramfs(image, key)
