"""`kubevisor vm run` when things go wrong: a guest that ignores ACPI power-down is killed after
the grace period; `kill -9` of `vm run` leaves only what the next run detects and cleans.

The guest ignores the power button because a cloud-init bootcmd stops its acpid.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from vmrun_helpers import (
    CLOUD_INIT_FINISHED,
    LOGIN_PROMPT,
    VmRun,
    assert_nothing_left,
    ensure_legacy_image,
    write_manifest,
)

from kubevisor import procs

pytestmark = pytest.mark.vm

GRACE = "5"

USER_DATA = "#cloud-config\nbootcmd:\n  - killall acpid\n"

DEAF_VMI = {
    "apiVersion": "kubevirt.io/v1",
    "kind": "VirtualMachineInstance",
    "metadata": {"name": "deaf", "namespace": "default"},
    "spec": {
        "terminationGracePeriodSeconds": 5,
        "domain": {
            "resources": {"requests": {"memory": "256Mi"}},
            "devices": {"disks": [{"name": "containerdisk", "disk": {}}, {"name": "seed", "disk": {}}]},
        },
        "volumes": [
            {"name": "containerdisk", "containerDisk": {"image": "kubevisor/legacy:latest"}},
            {"name": "seed", "cloudInitNoCloud": {"userData": USER_DATA}},
        ],
    },
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    ensure_legacy_image()
    tmp = tmp_path_factory.mktemp("deaf")
    yield write_manifest(tmp / "deaf.yaml", DEAF_VMI)


def test_guest_ignoring_acpi_is_killed_after_grace(manifest: Path) -> None:
    run = VmRun(manifest, manifest.parent / "run")
    try:
        run.wait_qemu()
        run.wait_serial_log(CLOUD_INIT_FINISHED)  # bootcmd (killall acpid) has run
        assert run.stop(signal.SIGTERM) == 0
        err = run.stderr()
        assert f"grace period {GRACE}s" in err
        assert f"did not power off within {GRACE}s: QEMU killed" in err
        assert_nothing_left(run)
    finally:
        run.kill()


def test_kill_9_of_vm_run_is_cleaned_by_the_next_run(manifest: Path) -> None:
    first = VmRun(manifest, manifest.parent / "run")
    try:
        orphan = first.wait_qemu()
        first.wait_serial_log(LOGIN_PROMPT)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
        # What kill -9 leaves: a running QEMU (its record names it) and the run dir.
        assert procs.is_alive(orphan)
        assert (first.run_dir / "qemu.json").exists() and (first.run_dir / "launcher.json").exists()
    finally:
        first.kill()

    second = VmRun(manifest, manifest.parent / "run", "--demo")
    try:
        assert second.proc.wait(600) == 0, second.stderr()
        err = second.stderr()
        assert f"did not finish: killed its QEMU (pid {orphan.pid})" in err
        assert not procs.is_alive(orphan)
        assert "login prompt after" in err and "cloud-init after" in err
        assert_nothing_left(second)
        second.qemu = orphan
        assert_nothing_left(second)
    finally:
        second.kill()
        if procs.is_alive(orphan):
            procs.signal_process(orphan, signal.SIGKILL)
