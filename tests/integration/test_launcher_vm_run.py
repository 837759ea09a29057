"""`kubevisor vm run` end to end on the legacy containerDisk under TCG (two boots of one VMI).

Boot 1 (NoCloud): login with the cloud-init password, hostname/write_files/runcmd, the emptyDisk's
size; the user dirties the disk; ACPI power-down ends guest and QEMU within the grace period and
nothing is left. Boot 2 (the same seed as ConfigDrive): cloud-init again, and a clean disk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vmrun_helpers import (
    CLOUD_INIT_FINISHED,
    LOGIN_PROMPT,
    Serial,
    VmRun,
    assert_nothing_left,
    ensure_legacy_image,
    write_manifest,
)

from kubevisor import procs

pytestmark = pytest.mark.vm

USER_DATA = """#cloud-config
hostname: kv-guest
users:
  - name: alice
    plain_text_passwd: s3cret-pw
    lock_passwd: false
    shell: /bin/sh
write_files:
  - path: /etc/kv-written.txt
    content: |
      written by cloud-init
runcmd:
  - echo "runcmd says $((6*7)) on $(hostname)" > /dev/console
  - echo boot >> /var/kv-boots
"""

EMPTY_DISK_BYTES = 64 * 1024 * 1024


def vmi(seed: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": "itest", "namespace": "default"},
        "spec": {
            "terminationGracePeriodSeconds": 120,
            "domain": {
                "resources": {"requests": {"memory": "384Mi"}},
                "devices": {
                    "disks": [
                        {"name": "containerdisk", "disk": {"bus": "virtio"}},
                        {"name": "seed", "disk": {"bus": "virtio"}},
                        {"name": "scratch", "serial": "scratch01", "disk": {"bus": "virtio"}},
                    ],
                },
            },
            "volumes": [
                {"name": "containerdisk", "containerDisk": {"image": "kubevisor/legacy:latest"}},
                {"name": "seed", seed: {"userData": USER_DATA}},
                {"name": "scratch", "emptyDisk": {"capacity": "64Mi"}},
            ],
        },
    }


class Booted:
    def __init__(self, run: VmRun, serial: Serial) -> None:
        self.run = run
        self.serial = serial


def boot(tmp: Path, seed: str) -> Booted:
    manifest = write_manifest(tmp / f"{seed}.yaml", vmi(seed))
    run = VmRun(manifest, tmp / "run")
    run.wait_qemu()
    run.wait_serial_log(LOGIN_PROMPT)
    run.wait_serial_log(CLOUD_INIT_FINISHED)
    serial = Serial(run.run_dir / "serial0.sock")
    serial.login("alice", "s3cret-pw")
    return Booted(run, serial)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_legacy_image()
    return tmp_path_factory.mktemp("vmrun")


@pytest.fixture(scope="module")
def nocloud(tmp: Path) -> Iterator[Booted]:
    booted = boot(tmp, "cloudInitNoCloud")
    yield booted
    booted.serial.close()
    booted.run.kill()


def test_login_with_cloud_init_password(nocloud: Booted) -> None:
    assert nocloud.serial.run("id -un").strip() == "alice"


def test_cloud_init_hostname_files_and_runcmd(nocloud: Booted) -> None:
    assert nocloud.serial.run("hostname").strip() == "kv-guest"
    assert nocloud.serial.run("cat /etc/kv-written.txt").strip() == "written by cloud-init"
    assert b"runcmd says 42 on kv-guest" in nocloud.run.serial_log.read_bytes()


def test_empty_disk_is_a_block_device_of_the_requested_size(nocloud: Booted) -> None:
    out = nocloud.serial.run('for d in /sys/block/vd*; do echo "$(cat $d/serial) $(cat $d/size)"; done')
    sizes = dict(line.split() for line in out.splitlines() if len(line.split()) == 2)
    assert int(sizes["scratch01"]) * 512 == EMPTY_DISK_BYTES


def test_acpi_power_down_ends_guest_and_qemu_within_grace(nocloud: Booted) -> None:
    nocloud.serial.run("echo dirty > $HOME/dirty && sync")
    assert nocloud.serial.run("wc -l < /var/kv-boots").strip() == "1"
    qemu = nocloud.run.qemu
    assert qemu is not None and procs.is_alive(qemu)
    assert nocloud.run.stop() == 0
    assert "guest powered off after" in nocloud.run.stderr()
    assert_nothing_left(nocloud.run)


def test_configdrive_seed_and_clean_second_boot(tmp: Path, nocloud: Booted) -> None:
    assert nocloud.run.proc.poll() is not None  # the first boot is over
    booted = boot(tmp, "cloudInitConfigDrive")
    try:
        assert booted.serial.run("hostname").strip() == "kv-guest"
        assert booted.serial.run("cat /etc/kv-written.txt").strip() == "written by cloud-init"
        # The first boot's writes are gone: the containerDisk overlay was per run.
        assert booted.serial.run("test -e $HOME/dirty && echo PRESENT || echo ABSENT").strip() == "ABSENT"
        assert booted.serial.run("wc -l < /var/kv-boots").strip() == "1"
        assert re.search(rb"runcmd says 42 on kv-guest", booted.run.serial_log.read_bytes())
        assert b"ConfigDrive" in booted.run.serial_log.read_bytes()
        assert booted.run.stop() == 0
        assert_nothing_left(booted.run)
    finally:
        booted.serial.close()
        booted.run.kill()
