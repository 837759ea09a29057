"""A sandbox VM's accelerator follows the host's KVM verdict, and its QEMU argv follows the accelerator."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubevisor.hypervisor import accel
from kubevisor.sandbox import assets, sandbox
from kubevisor.sandbox.vmconfig import VMConfig, VMPaths, qemu_argv


@pytest.mark.parametrize(("kvm", "want"), [(True, "kvm"), (False, "tcg")])
def test_default_config_takes_the_kvm_verdict(monkeypatch: pytest.MonkeyPatch, kvm: bool, want: str) -> None:
    monkeypatch.setattr(assets, "sandbox_boot_files", lambda: (Path("/k"), Path("/i")))
    monkeypatch.setattr(accel, "kvm_verdict", lambda: accel.Verdict(kvm, "test", "boot", None))
    assert sandbox.default_vm_config().accel == want
    assert sandbox.default_vm_config(accel="tcg").accel == "tcg"  # an explicit choice stands


def test_argv_uses_the_host_cpu_only_under_kvm(tmp_path: Path) -> None:
    paths = VMPaths(tmp_path)
    kvm = qemu_argv(VMConfig(kernel="/k", initrd="/i", accel="kvm"), paths)
    tcg = qemu_argv(VMConfig(kernel="/k", initrd="/i", accel="tcg"), paths)
    assert kvm[kvm.index("-machine") + 1] == "q35,accel=kvm" and kvm[kvm.index("-cpu") + 1] == "host"
    assert tcg[tcg.index("-machine") + 1] == "q35,accel=tcg" and tcg[tcg.index("-cpu") + 1] == "max"
