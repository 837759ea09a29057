"""The legacy disk boots through the BIOS under TCG and applies a real NoCloud / ConfigDrive seed.

Two boots in all (module-scoped): a NoCloud boot checked over the serial console, the guest agent
channel, SSH (dropbear) and HTTP, ended by an ACPI power-down; and a ConfigDrive boot of the
containerDisk from the image store whose user-data is a `#!` script.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from kubevisor.images.containerdisk import LEGACY_IMAGE, ensure_legacy_image
from kubevisor.images.legacy_disk import ensure_legacy_disk
from kubevisor.images.store import ImageStore

pytestmark = pytest.mark.vm

BOOT_TIMEOUT = 240.0
FINISHED = re.compile(rb"Cloud-init v\. \S+ finished at .*Datasource DataSource(\w+) \[")


def make_seed_iso(out: Path, label: str, files: dict[str, bytes]) -> Path:
    """A minimal ISO9660 seed (Rock Ridge + Joliet names) — the storage component owns the real one."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", joliet=3, vol_ident=label)
    dirs: set[str] = set()
    for n, (path, data) in enumerate(sorted(files.items())):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            sub = "/".join(parts[:depth])
            if sub not in dirs:
                dirs.add(sub)
                iso_dir = "/" + "/".join(f"D{abs(hash(p)) % 10**6}" for p in parts[:depth])
                iso.add_directory(iso_dir, rr_name=parts[depth - 1], joliet_path="/" + sub)
        parent = "/".join(f"D{abs(hash(p)) % 10**6}" for p in parts[:-1])
        iso_path = (f"/{parent}" if parent else "") + f"/F{n}.;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=parts[-1], joliet_path="/" + path)
    iso.write(str(out))
    iso.close()
    return out


class Guest:
    """QEMU on the legacy disk (overlay), serial console on a pipe, QMP and the QGA port on sockets."""

    def __init__(self, base: Path, seed: Path, workdir: Path, forward: bool = False) -> None:
        self.workdir = workdir
        self.overlay = workdir / "overlay.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(self.overlay)],
            check=True,
        )
        self.qmp_path = workdir / "qmp.sock"
        self.qga_path = workdir / "qga.sock"
        self.ssh_port = self.http_port = 0
        netdev = "user,id=n0"
        if forward:
            self.ssh_port, self.http_port = _free_port(), _free_port()
            netdev += f",hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,hostfwd=tcp:127.0.0.1:{self.http_port}-:80"
        argv = [
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "384", "-smp", "1",
            "-display", "none", "-no-reboot", "-serial", "stdio",
            "-drive", f"file={self.overlay},if=virtio,format=qcow2",
            "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=qga,path={self.qga_path},server=on,wait=off",
            "-device", "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
            "-qmp", f"unix:{self.qmp_path},server=on,wait=off",
        ]  # fmt: skip
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.output = bytearray()
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            with self.cond:
                self.output += chunk
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def expect(
        self, pattern: bytes | re.Pattern[bytes], since: int = 0, timeout: float = BOOT_TIMEOUT
    ) -> re.Match[bytes]:
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                match = regex.search(bytes(self.output), since)
                if match:
                    return match
                if self.proc.poll() is not None and not self.reader.is_alive():
                    raise AssertionError(
                        f"QEMU exited; console:\n{self.output.decode(errors='replace')[-3000:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = self.output.decode(errors="replace")[-3000:]
                    raise AssertionError(f"timeout waiting for {regex.pattern!r}; console:\n{tail}")
                self.cond.wait(min(remaining, 1.0))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def mark(self) -> int:
        with self.cond:
            return len(self.output)

    def qmp(self, command: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(str(self.qmp_path))
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while True:
                    reply: dict[str, Any] = json.loads(f.readline())
                    if "return" in reply or "error" in reply:
                        break
            return reply

    def qga(self, request: dict[str, Any], timeout: float = 60) -> Any:
        """One guest-agent command (after a guest-sync-delimited handshake)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(self.qga_path))
            s.sendall(
                b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": 4711}}).encode()
            )
            buf = b""
            while b"4711" not in buf:
                buf += s.recv(4096)
            s.sendall(json.dumps(request).encode())
            buf = b""
            while not buf.endswith(b"\n"):
                buf += s.recv(65536)
            return json.loads(buf)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


USER_DATA = """#cloud-config
hostname: testvm
users:
  - name: alice
    plain_text_passwd: s3cret-Pass
    lock_passwd: false
    shell: /bin/sh
    ssh_authorized_keys:
      - {pubkey}
write_files:
  - path: /etc/kubevisor-test/greeting.txt
    content: |
      hello from write_files
    permissions: '0640'
  - path: /opt/b64.bin
    encoding: b64
    content: aGVsbG8gYmFzZTY0Cg==
bootcmd:
  - echo BOOTCMD-RAN-$(cat /proc/sys/kernel/hostname)
runcmd:
  - echo "RUNCMD-OUTPUT host=$(hostname) file=$(cat /etc/kubevisor-test/greeting.txt)"
  - [sh, -c, "echo LIST-FORM-RAN > /var/tmp/list-form"]
"""


@pytest.fixture(scope="module")
def nocloud_guest(tmp_path_factory: pytest.TempPathFactory, ssh_key: Path) -> Iterator[Guest]:
    work = tmp_path_factory.mktemp("nocloud")
    pubkey = ssh_key.with_suffix(".pub").read_text().strip()
    seed = make_seed_iso(
        work / "seed.iso",
        "cidata",
        {
            "user-data": USER_DATA.format(pubkey=pubkey).encode(),
            "meta-data": b"instance-id: iid-test-nocloud\nlocal-hostname: from-meta-data\n",
        },
    )
    guest = Guest(ensure_legacy_disk(), seed, work, forward=True)
    try:
        yield guest
    finally:
        guest.close()


def test_boots_to_login_prompt_with_cloud_init_applied(nocloud_guest: Guest) -> None:
    g = nocloud_guest
    g.expect(b"SYSLINUX")  # booted through the BIOS and the bootloader on the disk
    boot = g.expect(b"BOOTCMD-RAN-")
    run = g.expect(b"RUNCMD-OUTPUT host=testvm file=hello from write_files")
    finished = g.expect(FINISHED)
    assert finished.group(1) == b"NoCloud"
    assert boot.start() < run.start() < finished.start()
    g.expect(b"testvm login:")


def test_cloud_init_user_logs_in_with_password_on_the_serial_console(nocloud_guest: Guest) -> None:
    g = nocloud_guest
    g.expect(FINISHED)
    g.expect(b"testvm login:")
    time.sleep(1)
    mark = g.mark()
    g.send("alice\n")
    g.expect(b"Password:", since=mark, timeout=60)
    g.send("s3cret-Pass\n")
    g.expect(b"$ ", since=mark, timeout=60)
    mark = g.mark()
    g.send(
        "echo WHO=$(id -un) HOST=$(hostname); stat -c 'PERM=%a' /etc/kubevisor-test/greeting.txt; "
        "cat /opt/b64.bin; cat /var/tmp/list-form; ls /var/lib/cloud/instance/boot-finished\n"
    )
    g.expect(b"WHO=alice HOST=testvm", since=mark, timeout=60)
    g.expect(b"PERM=640", since=mark, timeout=30)
    g.expect(b"hello base64", since=mark, timeout=30)
    g.expect(b"LIST-FORM-RAN", since=mark, timeout=30)
    g.expect(b"/var/lib/cloud/instance/boot-finished\r\n", since=mark, timeout=30)
    g.send("exit\n")


def test_root_cannot_log_in(nocloud_guest: Guest) -> None:
    g = nocloud_guest
    g.expect(FINISHED)
    g.expect(b"login:", since=g.mark() - 200 if g.mark() > 200 else 0)
    time.sleep(1)
    mark = g.mark()
    g.send("root\n")
    g.expect(b"Password:", since=mark, timeout=60)
    g.send("root\n")
    g.expect(b"Login incorrect", since=mark, timeout=60)


def test_guest_agent_answers_on_virtio_serial(nocloud_guest: Guest) -> None:
    g = nocloud_guest
    g.expect(FINISHED)
    assert g.qga({"execute": "guest-ping"}) == {"return": {}}
    assert g.qga({"execute": "guest-get-host-name"}) == {"return": {"host-name": "testvm"}}
    osinfo = g.qga({"execute": "guest-get-osinfo"})["return"]
    assert osinfo["id"] == "kubevisor" and osinfo["kernel-release"].endswith("cloud-amd64")
    interfaces = g.qga({"execute": "guest-network-get-interfaces"})["return"]
    eth0 = next(i for i in interfaces if i["name"] == "eth0")
    assert {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24} in eth0["ip-addresses"]


def test_ssh_with_cloud_init_key_and_http(nocloud_guest: Guest, ssh_key: Path) -> None:
    g = nocloud_guest
    g.expect(FINISHED)
    argv = [
        "ssh", "-i", str(ssh_key), "-p", str(g.ssh_port), "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=60",
        "alice@127.0.0.1", "echo SSH-OK $(id -un)@$(hostname)",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    assert "SSH-OK alice@testvm" in result.stdout, result.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{g.http_port}/", timeout=60) as response:
        assert b"Kubevisor legacy guest" in response.read()


def test_acpi_power_down_ends_the_guest(nocloud_guest: Guest) -> None:
    g = nocloud_guest
    g.expect(FINISHED)
    mark = g.mark()
    assert "return" in g.qmp("system_powerdown")
    g.expect(b"power button pressed", since=mark, timeout=60)
    assert g.proc.wait(timeout=120) == 0


def test_configdrive_seed_on_the_containerdisk_runs_a_user_script(tmp_path: Path) -> None:
    store = ImageStore()
    ensure_legacy_image(store)
    base = store.resolve_disk(LEGACY_IMAGE)
    meta = {"uuid": "c0ffee00-0000-4000-8000-000000000001", "hostname": "cfgdrive-vm", "public_keys": {}}
    seed = make_seed_iso(
        tmp_path / "config-2.iso",
        "config-2",
        {
            "openstack/latest/meta_data.json": json.dumps(meta).encode(),
            "openstack/latest/user_data": b"#!/bin/sh\necho USER-SCRIPT-RAN on $(hostname)\n",
        },
    )
    guest = Guest(base, seed, tmp_path)
    try:
        guest.expect(b"USER-SCRIPT-RAN on cfgdrive-vm")
        assert guest.expect(FINISHED).group(1) == b"ConfigDrive"
        guest.expect(b"cfgdrive-vm login:")
    finally:
        guest.close()
