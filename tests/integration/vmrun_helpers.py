"""Drive `kubevisor vm run` as a user would: a subprocess, its run dir, its serial console."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from kubevisor import procs

LOGIN_PROMPT = re.compile(rb"[\w.-]+ login: ")
CLOUD_INIT_FINISHED = re.compile(rb"Cloud-init v\. \S+ finished at")
BOOT_TIMEOUT = 600  # TCG on a shared 2-core machine: generous, never asserted as a duration


def ensure_legacy_image() -> None:
    from kubevisor.images.containerdisk import ensure_legacy_image as ensure

    ensure()


def write_manifest(path: Path, vmi: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(vmi, sort_keys=False))
    return path


class VmRun:
    """One `kubevisor vm run` process with its own KUBEVISOR_RUN root."""

    def __init__(self, manifest: Path, run_root: Path, *args: str) -> None:
        vmi = yaml.safe_load(manifest.read_text())
        meta = vmi["metadata"]
        self.run_dir = run_root / "vms" / f"{meta.get('namespace', 'default')}_{meta['name']}"
        self.stdout_path = run_root.parent / f"{meta['name']}.{time.monotonic_ns()}.stdout"
        self.stderr_path = self.stdout_path.with_suffix(".stderr")
        env = {**os.environ, "KUBEVISOR_RUN": str(run_root)}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kubevisor.cli", "vm", "run", "-f", str(manifest), *args],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
            )
        self.qemu: procs.ProcessRecord | None = None

    @property
    def serial_log(self) -> Path:
        return self.run_dir / "serial0.log"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_qemu(self, timeout: float = 120) -> procs.ProcessRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = procs.read_record(self.run_dir / "qemu.json")
            if record is not None:
                self.qemu = record
                return record
            assert self.proc.poll() is None, f"vm run exited early: {self.stderr()}"
            time.sleep(0.1)
        raise AssertionError(f"no QEMU record after {timeout}s: {self.stderr()}")

    def wait_serial_log(self, pattern: re.Pattern[bytes], timeout: float = BOOT_TIMEOUT) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                m = pattern.search(self.serial_log.read_bytes())
                if m:
                    return m
            assert self.proc.poll() is None, f"vm run exited: {self.stderr()}"
            time.sleep(0.2)
        raise AssertionError(f"{pattern.pattern!r} not on the console after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 300) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Serial:
    """The guest's serial console over QEMU's unix socket (blocking, with timeouts)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def expect(self, pattern: re.Pattern[bytes] | bytes, timeout: float = 120) -> re.Match[bytes]:
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.buffer)
            if m:
                self.buffer = self.buffer[m.end():]
                return m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{regex.pattern!r} not seen; console tail: {self.buffer[-500:]!r}")
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if ready:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise AssertionError(f"console closed; tail: {self.buffer[-500:]!r}")
                self.buffer += chunk

    def login(self, user: str, password: str) -> None:
        self.buffer = b""
        self.send("\n")
        self.expect(LOGIN_PROMPT)
        self.send(f"{user}\n")
        self.expect(b"assword: ")
        self.send(f"{password}\n")
        # busybox ash ends its prompt with a cursor-position query (ESC[6n) on a serial line
        self.expect(re.compile(rb"[$#] (\x1b\[6n)?$"), timeout=60)

    def run(self, command: str, timeout: float = 60) -> str:
        """Run a shell command; its output, delimited by markers the echo of the command lacks."""
        self.buffer = b""
        self.send(f"echo KV-BEGIN-$((40+2)); {command}; echo KV-END-$((40+2))\n")
        m = self.expect(re.compile(rb"KV-BEGIN-42\r?\n(.*?)KV-END-42", re.S), timeout)
        return m.group(1).decode(errors="replace").replace("\r\n", "\n")


def assert_nothing_left(run: VmRun) -> None:
    assert not run.run_dir.exists(), sorted(p.name for p in run.run_dir.rglob("*"))
    if run.qemu is not None:
        assert not procs.is_alive(run.qemu), "QEMU still runs"
