"""Sandbox: one VM (guest kernel + agent initramfs) that runs one or more containers.

State lives in `<state_dir>/sandbox.json`; the VM's sockets and shared directory live in a short
run directory (unix socket paths are limited to 108 bytes and callers pick long state roots).
The monitor process (kubevisor.sandbox.monitor) owns QEMU and virtiofsd; the sandbox records the
monitor, and the monitor records QEMU and virtiofsd, all as pid + start time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubevisor.paths import run_dir
from kubevisor.sandbox import mounts
from kubevisor.sandbox.agent_client import AgentClient, AgentGone
from kubevisor.sandbox.pidrec import ProcRecord
from kubevisor.sandbox.vmconfig import VMConfig, VMPaths

READY_TIMEOUT = 240.0


class SandboxError(RuntimeError):
    pass


def vm_dir_for(state_dir: Path) -> Path:
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]
    return run_dir() / "sb" / digest


@dataclass
class Sandbox:
    id: str
    state_dir: Path  # holds sandbox.json
    vm_dir: Path
    vm: VMConfig
    monitor: ProcRecord | None = None
    containers: list[str] = field(default_factory=list)

    # ---- persistence -----------------------------------------------------------------------

    @property
    def paths(self) -> VMPaths:
        return VMPaths(self.vm_dir)

    def save(self) -> None:
        data = {
            "id": self.id,
            "vm_dir": str(self.vm_dir),
            "vm": self.vm.to_json(),
            "monitor": self.monitor.to_json() if self.monitor else None,
            "containers": self.containers,
        }
        tmp = self.state_dir / "sandbox.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.state_dir / "sandbox.json")

    @classmethod
    def load(cls, state_dir: Path) -> Sandbox:
        try:
            data = json.loads((state_dir / "sandbox.json").read_text())
        except FileNotFoundError:
            raise SandboxError(f"sandbox state {state_dir} does not exist") from None
        return cls(
            id=data["id"],
            state_dir=state_dir,
            vm_dir=Path(data["vm_dir"]),
            vm=VMConfig.from_json(data["vm"]),
            monitor=ProcRecord.from_json(data.get("monitor")),
            containers=list(data.get("containers", [])),
        )

    # ---- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(cls, sandbox_id: str, state_dir: Path, vm: VMConfig, log_file: Path | None = None) -> Sandbox:
        """Boot the VM and wait until its agent answers. On failure nothing is left running."""
        state_dir.mkdir(parents=True, exist_ok=True)
        vm_dir = vm_dir_for(state_dir)
        if vm_dir.exists():
            shutil.rmtree(vm_dir, ignore_errors=True)
        vm_dir.mkdir(parents=True)
        sb = cls(sandbox_id, state_dir, vm_dir, vm)
        (vm_dir / "vm.json").write_text(json.dumps(vm.to_json()))
        sb.save()
        try:
            sb.start_monitor(log_file)
            sb.wait_ready()
            with sb.agent() as agent:
                agent.call("create_sandbox", hostname=sandbox_id[:12], sandbox_id=sandbox_id)
        except BaseException:
            sb.destroy()
            raise
        return sb

    def start_monitor(self, log_file: Path | None) -> None:
        # A new session and no inherited stdio: the monitor must not hold the caller's pipes.
        with open(log_file or (self.vm_dir / "monitor.log"), "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kubevisor.sandbox.monitor", str(self.vm_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        self.monitor = ProcRecord.of(proc.pid)
        self.save()
        # Forget the Popen: the monitor outlives us and is reaped by whoever inherits it.
        proc.returncode = 0

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.paths.agent_socket.exists():
            if self.monitor is None or not self.monitor.alive():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.monitor.pid if self.monitor else -1, os.WNOHANG)
                raise SandboxError(f"sandbox VM failed to start: {self.failure()}")
            if time.monotonic() > deadline:
                raise SandboxError(f"sandbox VM not ready after {timeout:.0f}s: {self.failure()}")
            time.sleep(0.02)

    def failure(self) -> str:
        err = self.vm_dir / "error"
        msg = err.read_text().strip() if err.exists() else "monitor exited"
        console = self.paths.console_log
        if console.exists():
            tail = console.read_text(errors="replace").strip().splitlines()[-5:]
            if tail:
                msg += " | console: " + " / ".join(tail)
        return msg

    def agent(self, timeout: float = 5.0) -> AgentClient:
        if not self.alive():
            raise AgentGone(f"sandbox {self.id} is not running")
        return AgentClient.connect(self.paths.agent_socket, timeout)

    def vm_procs(self) -> dict[str, ProcRecord]:
        try:
            data = json.loads((self.vm_dir / "procs.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return {k: r for k, v in data.items() if (r := ProcRecord.from_json(v)) is not None}

    def alive(self) -> bool:
        qemu = self.vm_procs().get("qemu")
        return bool(self.monitor and self.monitor.alive() and qemu and qemu.alive())

    def destroy(self) -> None:
        """Stop the VM and its helpers, unmount the share, remove every file. Idempotent."""
        if self.monitor is not None and self.monitor.alive():
            with contextlib.suppress(AgentGone, OSError, TimeoutError), self.agent(1.0) as agent:
                agent.call("destroy_sandbox", timeout=20)
            self.monitor.kill_and_wait(timeout=10)
        for rec in self.vm_procs().values():
            rec.kill_and_wait(timeout=5, first=signal.SIGKILL)
        for point in mounts.mounted_under(self.paths.shared):
            mounts.unmount(point)
        shutil.rmtree(self.vm_dir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "sandbox.json").unlink()

    # ---- the share -------------------------------------------------------------------------

    def share(self, source: Path, rel: str) -> Path:
        target = self.paths.shared / rel
        if not source.exists():
            raise SandboxError(f"{source}: does not exist")
        mounts.bind(source, target)
        return target

    def unshare_container(self, container_id: str) -> None:
        base = self.paths.shared / container_id
        for point in mounts.mounted_under(base):
            mounts.unmount(point)
        shutil.rmtree(base, ignore_errors=True)


def default_vm_config(**overrides: Any) -> VMConfig:
    """Kernel + agent initramfs from the asset cache (built on first use); KVM where the host's
    probe says it works (the verdict is cached per boot), else TCG, as `accel: auto` decides.
    Said nowhere: an OCI runtime's stderr is for its one-line errors."""
    from kubevisor.hypervisor.accel import kvm_verdict
    from kubevisor.sandbox.assets import sandbox_boot_files

    kernel, initrd = sandbox_boot_files()
    if "accel" not in overrides:
        overrides["accel"] = "kvm" if kvm_verdict().kvm else "tcg"
    return VMConfig(kernel=str(kernel), initrd=str(initrd), **overrides)
