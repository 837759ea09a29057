"""A sandbox VM's shape and the QEMU / virtiofsd argv for it (pure: no I/O).

A sandbox VM has no disks: guest kernel + agent initramfs, one virtio-serial port for the agent,
one virtio-fs share for container root filesystems. Memory is a shared memfd (vhost-user needs it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubevisor.agent.protocol import AGENT_PORT_NAME, SHARED_TAG


@dataclass(frozen=True)
class VMConfig:
    kernel: str
    initrd: str
    memory_mib: int = 256
    vcpus: int = 1
    accel: str = "tcg"
    machine: str = "q35"
    qemu: str = "qemu-system-x86_64"
    virtiofsd: str = "/usr/lib/qemu/virtiofsd"
    kernel_args: tuple[str, ...] = field(default_factory=tuple)
    incoming: str | None = None  # a migration URI to restore from (VM templating), else cold boot

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kernel_args"] = list(self.kernel_args)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VMConfig:
        data = dict(data)
        data["kernel_args"] = tuple(data.get("kernel_args", ()))
        return cls(**data)


@dataclass(frozen=True)
class VMPaths:
    """Files of one running sandbox VM (all inside its run directory)."""

    dir: Path

    @property
    def agent_serial(self) -> Path:
        return self.dir / "agent-serial.sock"

    @property
    def agent_socket(self) -> Path:
        return self.dir / "agent.sock"

    @property
    def qmp(self) -> Path:
        return self.dir / "qmp.sock"

    @property
    def virtiofsd_socket(self) -> Path:
        return self.dir / "virtiofsd.sock"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def shared(self) -> Path:
        return self.dir / "shared"


def kernel_cmdline(cfg: VMConfig) -> str:
    args = ["console=ttyS0", "quiet", "panic=-1", "reboot=t", "rdinit=/init", "8250.nr_uarts=1"]
    return " ".join([*args, *cfg.kernel_args])


def qemu_argv(cfg: VMConfig, paths: VMPaths) -> list[str]:
    mem = f"{cfg.memory_mib}M"
    argv = [
        cfg.qemu,
        "-name",
        "kubevisor-sandbox",
        "-machine",
        f"{cfg.machine},accel={cfg.accel}",
        "-cpu",
        "max" if cfg.accel == "tcg" else "host",
        "-smp",
        str(cfg.vcpus),
        "-m",
        mem,
        "-object",
        f"memory-backend-memfd,id=mem,size={mem},share=on",
        "-numa",
        "node,memdev=mem",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-kernel",
        cfg.kernel,
        "-initrd",
        cfg.initrd,
        "-append",
        kernel_cmdline(cfg),
        "-chardev",
        f"file,id=console,path={paths.console_log}",
        "-serial",
        "chardev:console",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-chardev",
        f"socket,id=agent,path={paths.agent_serial},server=on,wait=off",
        "-device",
        f"virtserialport,bus=vser0.0,chardev=agent,name={AGENT_PORT_NAME}",
        "-chardev",
        f"socket,id=vfs,path={paths.virtiofsd_socket}",
        "-device",
        f"vhost-user-fs-pci,chardev=vfs,tag={SHARED_TAG}",
        "-device",
        "virtio-rng-pci",
        "-qmp",
        f"unix:{paths.qmp},server=on,wait=off",
    ]
    if cfg.incoming:
        argv += ["-incoming", cfg.incoming]
    return argv


def virtiofsd_argv(cfg: VMConfig, paths: VMPaths) -> list[str]:
    # sandbox=chroot: virtiofsd stays in our mount namespace, so container rootfs bind mounts made
    # after it started are visible to the guest (the host's / is not a shared mount here).
    return [
        cfg.virtiofsd,
        f"--socket-path={paths.virtiofsd_socket}",
        "-o",
        f"source={paths.shared}",
        "-o",
        "cache=none",
        "-o",
        "sandbox=chroot",
        "-o",
        "xattr",
    ]
