"""Where a sandbox VM's kernel and initramfs come from (the guest kernel asset + our initramfs)."""

from __future__ import annotations

import os
from pathlib import Path


def sandbox_boot_files() -> tuple[Path, Path]:
    """(kernel, initrd). KUBEVISOR_SANDBOX_KERNEL + KUBEVISOR_SANDBOX_MODULES override the kernel asset."""
    from kubevisor.images.agent_initramfs import ensure_agent_initramfs

    kernel_env = os.environ.get("KUBEVISOR_SANDBOX_KERNEL")
    modules_env = os.environ.get("KUBEVISOR_SANDBOX_MODULES")
    if kernel_env and modules_env:
        modules = Path(modules_env)
        initrd = ensure_agent_initramfs(modules, modules.name)
        return Path(kernel_env), initrd.path
    from kubevisor.images.kernel import ensure_kernel  # type: ignore[import-not-found,unused-ignore]

    kernel = ensure_kernel()
    initrd = ensure_agent_initramfs(kernel.modules_dir, kernel.version)
    return Path(kernel.vmlinux), initrd.path
