"""Which accelerator runs guests here: KVM only when a probe guest proves it, else TCG.

`/dev/kvm` opening is not enough: under nested virtualization KVM can be unusably slow (a
kernel that boots in ~3 s under TCG had not reached init after minutes). So the probe boots
the real guest kernel with a tiny initramfs whose /init prints a marker, under KVM, and
KVM wins only if the marker arrives within a short deadline. The verdict is cached keyed
by the host's boot id: a reboot (new kernel, new KVM module state) re-probes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from kubevisor import paths, procs
from kubevisor.hypervisor.model import Accel

log = logging.getLogger(__name__)

AccelRequest = Literal["auto", "kvm", "tcg"]
PROBE_MARKER = b"KUBEVISOR-KVM-PROBE-OK"
PROBE_DEADLINE = 6.0  # seconds from QEMU start to the marker; a healthy KVM host needs < 1 s
KVM_DEVICE = Path("/dev/kvm")
_announced = False


class AccelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Verdict:
    kvm: bool
    reason: str
    boot_id: str
    probe_seconds: float | None  # time to the marker under KVM, None if it never came


def verdict_path() -> Path:
    return paths.cache_dir() / "accel" / "kvm-verdict.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One prober at a time; the others wait and read its verdict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_cached(path: Path, boot_id: str) -> Verdict | None:
    try:
        data = json.loads(path.read_text())
        cached = Verdict(**data)
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return cached if cached.boot_id == boot_id else None


def kvm_verdict(refresh: bool = False, deadline: float = PROBE_DEADLINE) -> Verdict:
    """Can KVM run guests here? Probed once per host boot, then read from the cache."""
    path = verdict_path()
    boot_id = procs.boot_id()
    with _locked(path):
        cached = None if refresh else _read_cached(path, boot_id)
        if cached is not None:
            return cached
        verdict = probe_kvm(deadline)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(verdict), indent=1) + "\n")
        os.replace(tmp, path)
        return verdict


def resolve(requested: AccelRequest) -> Accel:
    """The accelerator to use for a request; announces software emulation once per process."""
    global _announced
    if requested == "tcg":
        return "tcg"
    verdict = kvm_verdict()
    if verdict.kvm:
        return "kvm"
    if requested == "kvm":
        raise AccelError(
            f"accel kvm: KVM cannot run guests on this host ({verdict.reason}); use --accel tcg or auto"
        )
    if not _announced:
        log.warning(
            "KVM is not usable here (%s): guests run under TCG software emulation (slower)", verdict.reason
        )
        _announced = True
    return "tcg"


def _kvm_openable() -> str | None:
    """None if /dev/kvm can be opened read-write, else why not."""
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"{KVM_DEVICE}: {e.strerror}"
    os.close(fd)
    return None


def _probe_initramfs(dest: Path) -> Path:
    """A newc initramfs with static busybox and an /init that prints the marker and powers off."""
    from kubevisor.images import initramfs

    root = dest / "root"
    initramfs.stage_file(root, "/bin/busybox", Path(shutil.which("busybox") or "/bin/busybox"), 0o755)
    initramfs.stage_file(
        root,
        "/init",
        (f"#!/bin/busybox sh\n/bin/busybox echo {PROBE_MARKER.decode()}\n/bin/busybox poweroff -f\n"),
        0o755,
    )
    return initramfs.write_initramfs(root, dest / "probe.img", compression="none")


def probe_kvm(deadline: float = PROBE_DEADLINE) -> Verdict:
    """Boot the guest kernel under KVM; KVM is usable if /init's marker arrives within deadline."""
    boot_id = procs.boot_id()
    why_not = _kvm_openable()
    if why_not is not None:
        return Verdict(False, why_not, boot_id, None)
    seconds, error = boot_probe_guest("kvm", deadline)
    if seconds is not None:
        return Verdict(True, f"probe guest reached init in {seconds:.2f}s under KVM", boot_id, seconds)
    if error:
        return Verdict(False, f"QEMU failed under KVM: {error}", boot_id, None)
    return Verdict(
        False,
        f"probe guest did not reach init within {deadline:g}s under KVM (nested virtualization?)",
        boot_id,
        None,
    )


def boot_probe_guest(accel: Accel, deadline: float) -> tuple[float | None, str]:
    """(seconds from QEMU start to the probe's marker or None, QEMU's error if it failed)."""
    from kubevisor.images.kernel import ensure_kernel

    kernel = ensure_kernel().vmlinux
    with tempfile.TemporaryDirectory(prefix="kubevisor-probe-") as tmp:
        initrd = _probe_initramfs(Path(tmp))
        argv = [
            "qemu-system-x86_64", "-no-user-config", "-nodefaults", "-display", "none",
            "-machine", "q35", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
            "-m", "128M", "-smp", "1",
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", "console=ttyS0 quiet panic=-1",
            "-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0", "-no-reboot",
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            seconds = _wait_for_marker(proc, started, deadline)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
    error = ""
    if seconds is None and proc.returncode not in (0, -9) and err.strip():
        error = err.decode(errors="replace").strip().splitlines()[-1]
    return seconds, error


def _wait_for_marker(proc: subprocess.Popen[bytes], started: float, deadline: float) -> float | None:
    assert proc.stdout is not None
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = started + deadline - time.monotonic()
            if remaining <= 0:
                return None
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return None  # QEMU exited without the marker
            seen += chunk
            if PROBE_MARKER in seen:
                return time.monotonic() - started
