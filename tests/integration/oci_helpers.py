"""Shared helpers for the kubevisor-runtime integration tests (real VMs under TCG)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PR_SET_CHILD_SUBREAPER = 36


def runtime_wrapper(dest: Path, env: dict[str, str] | None = None, root: Path | None = None) -> Path:
    """An executable that runs the kubevisor-runtime under test (this checkout, this interpreter).

    Callers such as conmon or containerd's shim do not pass our environment through, so the
    wrapper fixes PYTHONPATH (also for the monitor it starts) and any KUBEVISOR_* settings. With
    `root`, `--root root` comes first on every call (a caller's own --root, later, still wins):
    podman passes none, and the default root is shared by everything on the host.
    """
    settings = {"PYTHONPATH": str(REPO), **(env or {})}
    dest.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"os.environ.update({settings!r})\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from kubevisor.oci.main import main\n"
        + (f"sys.argv[1:1] = ['--root', {str(root)!r}]\n" if root else "")
        + "sys.exit(main())\n"
    )
    dest.chmod(0o755)
    return dest


class Podman:
    """Debian's podman (+ conmon) with its own storage, run and tmp directories, so the host's
    podman state is not touched. `runtime` is passed as --runtime: a path or a runtime's name."""

    def __init__(self, tmp: Path, runtime: Path | str) -> None:
        self.tmp = tmp
        self.runtime = runtime
        self.base = [
            "podman",
            "--root", str(tmp / "storage"),
            "--runroot", str(tmp / "runroot"),
            "--tmpdir", str(tmp / "ptmp"),
            "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs",
            "--events-backend", "file",
            "--runtime", str(runtime),
        ]  # fmt: skip

    def argv(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc

    def remove_containers(self) -> None:
        self("rm", "--all", "--force", "--time", "0", check=False)

    def remove_images_and_storage(self) -> None:
        self("rmi", "--all", "--force", check=False)
        subprocess.run(
            ["umount", "--recursive", "--lazy", str(self.tmp / "storage")], capture_output=True, check=False
        )  # podman's own storage mounts, if any


def become_subreaper() -> None:
    """Like conmon and containerd's shim: orphaned shims become our children, so we can wait on them."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


class Runtime:
    """kubevisor-runtime (through its wrapper) with one --root."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root

    def argv(self, *args: str) -> list[str]:
        return [str(self.path), "--root", str(self.root), *args]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubevisor-runtime {' '.join(args)} failed ({proc.returncode}): {proc.stderr}"
            )
        return proc

    def state(self, cid: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("state", cid).stdout)
        return result

    def wait_status(self, cid: str, want: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if st["status"] == want or time.monotonic() > deadline:
                return st
            time.sleep(0.1)

    def create(self, bundle: Path, cid: str, pid_file: Path, out: Path) -> int:
        """`create` hands its stdio to the container (through the shim): give it a file, not a pipe
        that would stay open. Returns the pid-file's pid."""
        with out.open("w") as f:
            subprocess.run(
                self.argv("create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid),
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=True,
                timeout=300,
            )
        return int(pid_file.read_text())


def wait_child(pid: int, timeout: float = 120) -> int:
    """Exit status of a child (a shim reparented to us), shell convention."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        time.sleep(0.05)
    raise TimeoutError(f"process {pid} still running after {timeout}s")


def sandbox_leftovers(run_dir: Path, *markers: Path) -> list[str]:
    """What sandboxes left behind: VM run directories under run_dir/sb, mounts, sockets and live
    processes whose command line names run_dir or a marker (a state root, a wrapper's path)."""
    found: list[str] = []
    sb = run_dir / "sb"
    if sb.exists():
        found += [f"dir {p}" for p in sb.iterdir()]
    names = [str(run_dir), *(str(m) for m in markers)]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if any(n in point for n in names):
            found.append(f"mount {point}")
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and any(n in fields[7] for n in names):
            found.append(f"socket {fields[7]}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if any(n in cmdline for n in names) and stat[stat.rindex(")") + 2] != "Z":
            found.append(f"process {proc.name}: {cmdline[:160]}")
    return found


def state_left(root: Path) -> list[str]:
    """Container records and sandbox records left under a runtime's --root (lock files may stay)."""
    if not root.exists():
        return []
    found = [f"container {p.name}" for p in root.iterdir() if not p.name.startswith(".")]
    sandboxes = root / ".sandboxes"
    if sandboxes.exists():
        found += [f"sandbox {p.name}" for p in sandboxes.iterdir()]
    return found


def base_config(rootfs: Path, args: list[str], **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/",
        },
        "root": {"path": str(rootfs)},
        "hostname": "kv",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]},
    }
    config.update(extra)
    return config


def write_bundle(path: Path, config: dict[str, Any]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def settled_leftovers(run_dir: Path, *markers: Path, timeout: float = 60) -> list[str]:
    """sandbox_leftovers once processes that exit asynchronously (conmon running podman's exit
    command, a shim being reaped) have had time to go; the list that remains at the timeout."""
    deadline = time.monotonic() + timeout
    while (found := sandbox_leftovers(run_dir, *markers)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found
