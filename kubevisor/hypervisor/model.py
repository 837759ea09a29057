"""What the hypervisor layer needs besides the VMI spec: host-side facts resolved by others.

The VMI (a `kubevirt.io/v1` VirtualMachineInstance as a plain dict, already defaulted and
validated by `kubevisor.api`) says *what* the guest looks like; a `LaunchEnv` says *where*
things are on this host (files prepared by `kubevisor.storage`, sockets, accelerator).
`kubevisor.hypervisor.argv.build_argv(vmi, env)` turns both into a QEMU argv, purely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Accel = Literal["kvm", "tcg"]
ImageFormat = Literal["raw", "qcow2"]


@dataclass(frozen=True)
class VolumeSource:
    """A volume of the VMI resolved to a file on this host (see kubevisor.storage)."""

    path: Path
    format: ImageFormat
    readonly: bool = False


@dataclass(frozen=True)
class PortForward:
    """A host port forwarded to a guest port (user-mode networking, masquerade binding)."""

    protocol: Literal["tcp", "udp"]
    host_addr: str
    host_port: int
    guest_port: int


@dataclass(frozen=True)
class LaunchEnv:
    accel: Accel
    run_dir: Path  # per-VMI directory for QMP, serial, VNC sockets and the pidfile
    volumes: dict[str, VolumeSource] = field(default_factory=dict)  # volume name -> file
    port_forwards: tuple[PortForward, ...] = ()
    qemu_binary: str = "qemu-system-x86_64"
    ovmf_code: Path = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
    ovmf_vars: Path | None = None  # per-VMI writable copy of OVMF_VARS when EFI is used
    kernel: Path | None = None  # firmware.kernelBoot: kernel/initrd resolved to host files
    initrd: Path | None = None
    start_paused: bool = True  # -S: the owner attaches QMP and console, then `cont`
    extra_args: tuple[str, ...] = ()

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / "qmp.sock"

    @property
    def access_qmp_socket(self) -> Path:
        """A second QMP monitor for the node's access server (pause, reset, screendump, forwards):
        the owner holds qmp.sock, and a QMP socket serves one client at a time."""
        return self.run_dir / "qmp-access.sock"

    @property
    def serial_socket(self) -> Path:
        return self.run_dir / "serial0.sock"

    @property
    def serial_log(self) -> Path:
        return self.run_dir / "serial0.log"

    @property
    def vnc_socket(self) -> Path:
        return self.run_dir / "vnc.sock"

    @property
    def guest_agent_socket(self) -> Path:
        return self.run_dir / "qga.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "qemu.pid"
