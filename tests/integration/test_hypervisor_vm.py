"""The VirtualMachine object against real QEMU (TCG): a direct-kernel guest (the boot initramfs
stops at a shell on the console; it has no ACPI power-button handler, so it ignores power-down).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from kubevisor import procs
from kubevisor.hypervisor.argv import build_argv
from kubevisor.hypervisor.console import Console
from kubevisor.hypervisor.model import LaunchEnv, VolumeSource
from kubevisor.hypervisor.vm import VirtualMachine, VMError, VMState, qemu_record_path

pytestmark = pytest.mark.vm

SHELL_PROMPT = b"starting a shell"


def kernel_vmi(name: str, **devices: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "domain": {
                "memory": {"guest": "256Mi"},
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0 quiet panic=-1",
                                            "container": {"image": "kubevisor/kernel"}}},
                "devices": {"autoattachGraphicsDevice": False, **devices},
            },
        },
    }


@pytest.fixture(scope="module")
def guest_boot_files() -> tuple[Path, Path]:
    from kubevisor.images.boot_initramfs import ensure_boot_initramfs
    from kubevisor.images.kernel import ensure_kernel

    return ensure_kernel().vmlinux, ensure_boot_initramfs()


def make_vm(vmi: dict[str, Any], run_dir: Path, boot: tuple[Path, Path],
            volumes: dict[str, VolumeSource] | None = None) -> VirtualMachine:
    env = LaunchEnv(accel="tcg", run_dir=run_dir, kernel=boot[0], initrd=boot[1], volumes=volumes or {})
    return VirtualMachine(vmi["metadata"]["name"], build_argv(vmi, env), env)


def qemu_running(record: procs.ProcessRecord | None) -> bool:
    return record is not None and procs.is_alive(record)


async def test_lifecycle_events_and_guest_poweroff(
    tmp_path: Path, guest_boot_files: tuple[Path, Path]
) -> None:
    vm = make_vm(kernel_vmi("life"), tmp_path, guest_boot_files)
    events: list[str] = []
    vm.add_listener(lambda state, event, data: events.append(event))
    await vm.start()
    try:
        assert vm.state is VMState.PRELAUNCH
        assert procs.read_record(qemu_record_path(tmp_path)) == vm.record
        assert qemu_running(vm.record)
        console = await Console.connect(vm.env.serial_socket)
        await vm.resume()
        assert vm.state is VMState.RUNNING
        await console.expect(SHELL_PROMPT, timeout=120)

        await vm.pause()
        assert await vm.wait_state(VMState.PAUSED, timeout=10) is VMState.PAUSED
        assert (await vm.status())["status"] == "paused"
        await vm.resume()
        assert await vm.wait_state(VMState.RUNNING, timeout=10) is VMState.RUNNING

        mark = console.mark()
        await vm.reset()
        await console.expect(SHELL_PROMPT, timeout=120, start=mark)  # booted again
        assert "RESET" in events

        await console.send(b"\npoweroff -f\n")  # the guest shuts itself down
        assert await vm.wait(60)
        assert vm.state is VMState.STOPPED
        assert vm.shutdown_reason == "guest-shutdown"
        assert "SHUTDOWN" in events
        await console.close()
    finally:
        await vm.kill()
    assert not qemu_running(vm.record)
    assert not qemu_record_path(tmp_path).exists()
    assert not vm.env.pidfile.exists()


async def test_powerdown_of_guest_ignoring_acpi_kills_after_grace(
    tmp_path: Path, guest_boot_files: tuple[Path, Path]
) -> None:
    vm = make_vm(kernel_vmi("deaf"), tmp_path, guest_boot_files)
    await vm.start()
    try:
        console = await Console.connect(vm.env.serial_socket)
        await vm.resume()
        await console.expect(SHELL_PROMPT, timeout=120)
        went_down_by_itself = await vm.powerdown(grace=3)
        assert went_down_by_itself is False
        assert vm.state is VMState.STOPPED
        assert vm.exit_code == -9
        await console.close()
    finally:
        await vm.kill()
    assert not qemu_running(vm.record)
    assert not qemu_record_path(tmp_path).exists()


async def test_qemu_start_failure_is_reported_and_leaves_nothing(
    tmp_path: Path, guest_boot_files: tuple[Path, Path]
) -> None:
    vmi = kernel_vmi("broken", disks=[{"name": "gone", "disk": {"bus": "virtio"}}])
    vm = make_vm(vmi, tmp_path, guest_boot_files,
                 volumes={"gone": VolumeSource(tmp_path / "missing.qcow2", "qcow2")})
    with pytest.raises(VMError, match=r"missing\.qcow2"):
        await vm.start()
    assert vm.state is VMState.STOPPED
    assert not qemu_running(vm.record)
    assert not qemu_record_path(tmp_path).exists()


async def test_stale_qemu_from_dead_owner_is_found_and_killed(
    tmp_path: Path, guest_boot_files: tuple[Path, Path]
) -> None:
    from kubevisor.hypervisor.vm import clean_stale_qemu

    vm = make_vm(kernel_vmi("orphan"), tmp_path, guest_boot_files)
    await vm.start()
    record = vm.record
    assert record is not None
    # A new owner only has the record on disk.
    found = await asyncio.to_thread(clean_stale_qemu, tmp_path, 2.0)
    assert found == record
    assert await vm.wait(30)
    assert not procs.is_alive(record)
    assert not qemu_record_path(tmp_path).exists()
