"""Where a sandbox VM's kernel and initramfs come from (the guest kernel asset + our initramfs).

Resolving the assets properly (content hashes, apt versions) takes over a second, and
`kubevisor-runtime create` needs them on every call: the answer is memoized in a small file,
invalidated when the agent's source or the apt lists change, or when a file disappears.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


def _memo_path() -> Path:
    from kubevisor.paths import cache_dir

    return cache_dir() / "agent-initramfs" / "boot-files.json"


def _stamp() -> str:
    from kubevisor.images.agent_initramfs import _agent_digest, _apt_stamp

    return f"{_apt_stamp()}|{_agent_digest()}|{os.environ.get('KUBEVISOR_SANDBOX_KERNEL', '')}"


def sandbox_boot_files() -> tuple[Path, Path]:
    """(kernel, initrd). KUBEVISOR_SANDBOX_KERNEL + KUBEVISOR_SANDBOX_MODULES override the kernel asset."""
    memo = _memo_path()
    stamp = _stamp()
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(memo.read_text())
        kernel, initrd = Path(data["kernel"]), Path(data["initrd"])
        if data["stamp"] == stamp and kernel.exists() and initrd.exists():
            return kernel, initrd
    kernel, initrd = _resolve()
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "kernel": str(kernel), "initrd": str(initrd)}))
    os.replace(tmp, memo)
    return kernel, initrd


def _resolve() -> tuple[Path, Path]:
    from kubevisor.images.agent_initramfs import ensure_agent_initramfs

    kernel_env = os.environ.get("KUBEVISOR_SANDBOX_KERNEL")
    modules_env = os.environ.get("KUBEVISOR_SANDBOX_MODULES")
    if kernel_env and modules_env:
        modules = Path(modules_env)
        return Path(kernel_env), ensure_agent_initramfs(modules, modules.name).path
    from kubevisor.images.kernel import ensure_kernel

    kernel = ensure_kernel()
    return Path(kernel.vmlinux), ensure_agent_initramfs(kernel.modules_dir, kernel.version).path
