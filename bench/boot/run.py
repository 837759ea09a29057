"""Benchmark: cold boot of a VM and what an idle VM costs in memory.

1. The legacy VMI (`examples/vmi-legacy.yaml`) through `kubevisor vm run` (launcher +
   hypervisor layer, a fresh run dir each time): seconds from the command's start, and from
   QEMU's start, to the serial console's login prompt and to cloud-init's finished marker,
   median of --runs. After --idle seconds of an idle booted guest: PSS of QEMU
   (/proc/PID/smaps_rollup), split into guest RAM (the RAM block's mapping) and QEMU's own
   overhead, and PSS of the `kubevisor vm run` process that owns it.
2. For comparison, the bare guest kernel + an initramfs booted directly (`-kernel`) to /init:
   the uncompressed vmlinux and the bzImage with a tiny initramfs whose /init prints a marker,
   and the vmlinux with the real boot initramfs (module loading) to its shell.

Under TCG always; under KVM too when the accelerator probe says KVM works here (its verdict
is reported either way). Prints one JSON document.

    python bench/boot/run.py [--runs 5] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import big_mappings_pss_kib, loadavg, machine, smaps_rollup_kib  # noqa: E402
from kubevisor import procs  # noqa: E402
from kubevisor.hypervisor import accel as accel_mod  # noqa: E402
from kubevisor.images import initramfs  # noqa: E402
from kubevisor.images.boot_initramfs import ensure_boot_initramfs  # noqa: E402
from kubevisor.images.containerdisk import ensure_legacy_image  # noqa: E402
from kubevisor.images.kernel import ensure_kernel  # noqa: E402

MANIFEST = REPO / "examples" / "vmi-legacy.yaml"
LOGIN_PROMPT = re.compile(rb"[\w.-]+ login: ")
CLOUD_INIT_FINISHED = re.compile(rb"Cloud-init v\. \S+ finished at [^\r\n]*Up ([0-9.]+) seconds")
CLOUD_INIT_INIT = re.compile(rb"Cloud-init v\. \S+ running 'init' at [^\r\n]*Up ([0-9.]+) seconds")
SYSLINUX = re.compile(rb"SYSLINUX \d")
INIT_MARKER = b"KUBEVISOR-BENCH-INIT"
INITRAMFS_SHELL = b"kubevisor-initramfs: no root="
TICK = os.sysconf("SC_CLK_TCK")
POLL = 0.02
BOOT_TIMEOUT = 600.0


def now() -> float:
    """CLOCK_BOOTTIME: the clock of /proc/PID/stat start times (in ticks)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- memory ---------------------------------------------------------------------------------------
def memory(qemu_pid: int, launcher_pid: int, guest_mib: int) -> dict[str, float]:
    qemu = smaps_rollup_kib(qemu_pid)
    big = big_mappings_pss_kib(qemu_pid, guest_mib * 1024)
    launcher = smaps_rollup_kib(launcher_pid)
    own = qemu["Pss"] - big["guest_ram"] - big["tcg_code_buffer"]
    mib = 1024.0
    return {
        "qemu_pss_mib": round(qemu["Pss"] / mib, 1),
        "qemu_rss_mib": round(qemu["Rss"] / mib, 1),
        "qemu_guest_ram_pss_mib": round(big["guest_ram"] / mib, 1),
        "qemu_tcg_code_buffer_pss_mib": round(big["tcg_code_buffer"] / mib, 1),
        "qemu_other_pss_mib": round(own / mib, 1),
        "launcher_pss_mib": round(launcher["Pss"] / mib, 1),
        "overhead_pss_mib": round((qemu["Pss"] - big["guest_ram"] + launcher["Pss"]) / mib, 1),
    }


# -- the legacy VMI through `kubevisor vm run` ------------------------------------------------------
def boot_legacy(accel: str, work: Path, idle: float, guest_mib: int) -> dict[str, Any]:
    run_root = work / "run"
    run_dir = run_root / "vms" / "default_legacy"
    serial_log = run_dir / "serial0.log"
    env = {**os.environ, "KUBEVISOR_RUN": str(run_root), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "kubevisor.cli", "vm", "run", "-f", str(MANIFEST), "--accel", accel]
    stderr = work / "vmrun.stderr"
    t0 = now()
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
    qemu: procs.ProcessRecord | None = None
    seen: dict[str, float] = {}
    uptime: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        deadline = t0 + BOOT_TIMEOUT
        while len(seen) < 4:
            if now() > deadline or proc.poll() is not None:
                raise RuntimeError(f"boot did not finish: {stderr.read_text(errors='replace')[-800:]}")
            if qemu is None:
                qemu = procs.read_record(run_dir / "qemu.json")
            try:
                text = serial_log.read_bytes()
            except FileNotFoundError:
                text = b""
            t = now()
            for label, pattern in (
                ("syslinux", SYSLINUX),
                ("cloud_init_init", CLOUD_INIT_INIT),
                ("login_prompt", LOGIN_PROMPT),
                ("cloud_init_finished", CLOUD_INIT_FINISHED),
            ):
                m = pattern.search(text)
                if m and label not in seen:
                    seen[label] = t
                    if qemu is not None:
                        cpu[label] = cpu_seconds(qemu.pid)
                    if m.groups():
                        uptime[label] = float(m.group(1))
            time.sleep(POLL)
        assert qemu is not None
        qemu_start = qemu.start_time / TICK
        result: dict[str, Any] = {
            "qemu_started_s": round(qemu_start - t0, 2),
            **{f"{k}_s": round(v - t0, 2) for k, v in seen.items()},
            **{f"{k}_from_qemu_s": round(v - qemu_start, 2) for k, v in seen.items()},
            **{f"{k}_guest_uptime_s": v for k, v in uptime.items()},
            **{f"{k}_qemu_cpu_s": round(v, 2) for k, v in cpu.items()},
        }
        time.sleep(idle)
        result["memory_after_idle"] = memory(qemu.pid, proc.pid, guest_mib)
        t_stop = now()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(300)
        result["powerdown_s"] = round(now() - t_stop, 2)
        if rc != 0:
            raise RuntimeError(f"vm run exited {rc}: {stderr.read_text(errors='replace')[-800:]}")
        return result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if qemu is not None and procs.is_alive(qemu):
            procs.signal_process(qemu, signal.SIGKILL)


# -- bare kernel + initramfs ----------------------------------------------------------------------
def marker_initramfs(dest: Path) -> Path:
    """Static busybox and an /init that prints a marker and powers off (uncompressed newc)."""
    root = dest / "root"
    initramfs.stage_file(root, "/bin/busybox", Path(shutil.which("busybox") or "/bin/busybox"), 0o755)
    initramfs.stage_file(
        root,
        "/init",
        f"#!/bin/busybox sh\n/bin/busybox echo {INIT_MARKER.decode()}\n/bin/busybox poweroff -f\n",
        0o755,
    )
    return initramfs.write_initramfs(root, dest / "marker.img", compression="none")


def boot_bare(
    accel: str, kernel: Path, initrd: Path, marker: bytes, append: str, timeout: float
) -> tuple[float, float] | None:
    """(wall seconds, QEMU's CPU seconds) from QEMU's start to `marker` on the serial console.

    None if the marker did not come within timeout. CPU time is what the boot cost the host: on a
    shared machine it varies much less than the wall time.
    """
    argv = [
        "qemu-system-x86_64", "-no-user-config", "-nodefaults", "-display", "none",
        "-machine", "q35", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
        "-m", "256M", "-smp", "1", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", f"console=ttyS0 panic=-1 {append}".strip(),
        "-chardev", "stdio,id=s0,signal=off", "-serial", "chardev:s0", "-no-reboot",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    seen = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                remaining = started + timeout - time.monotonic()
                if remaining <= 0:
                    return None
                if not sel.select(remaining):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    return None
                seen += chunk
                if marker in seen:
                    return time.monotonic() - started, cpu_seconds(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def bare_variants(accel: str, runs: int, work: Path) -> dict[str, Any]:
    kernel = ensure_kernel()
    tiny = marker_initramfs(work)
    boot_initrd = ensure_boot_initramfs()
    variants = {
        "vmlinux_tiny_initramfs_to_init": (kernel.vmlinux, tiny, INIT_MARKER, "quiet"),
        "bzimage_tiny_initramfs_to_init": (kernel.bzimage, tiny, INIT_MARKER, "quiet"),
        "vmlinux_tiny_initramfs_to_init_cryptomgr_notests": (
            kernel.vmlinux,
            tiny,
            INIT_MARKER,
            "quiet cryptomgr.notests",
        ),
        "vmlinux_boot_initramfs_to_shell": (kernel.vmlinux, boot_initrd, INITRAMFS_SHELL, "quiet"),
    }
    out: dict[str, Any] = {
        "sizes_mib": {
            "vmlinux": round(kernel.vmlinux.stat().st_size / 2**20, 1),
            "bzimage": round(kernel.bzimage.stat().st_size / 2**20, 1),
            "tiny_initramfs": round(tiny.stat().st_size / 2**20, 1),
            "boot_initramfs": round(boot_initrd.stat().st_size / 2**20, 1),
        }
    }
    for name, (k, initrd, marker, append) in variants.items():
        times = [boot_bare(accel, k, initrd, marker, append, 120.0) for _ in range(runs)]
        ok = [t for t in times if t is not None]
        out[name] = {
            "median_s": round(statistics.median(t[0] for t in ok), 2) if ok else None,
            "median_qemu_cpu_s": round(statistics.median(t[1] for t in ok), 2) if ok else None,
            "runs_s": [round(t[0], 2) if t is not None else None for t in times],
        }
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def legacy(accel: str, runs: int, idle: float, work: Path) -> dict[str, Any]:
    import yaml

    spec = yaml.safe_load(MANIFEST.read_text())["spec"]
    memory_text = str(spec["domain"]["resources"]["requests"]["memory"])
    guest_mib = int(memory_text.removesuffix("Mi"))
    results = []
    for i in range(runs):
        d = work / f"legacy-{accel}-{i}"
        d.mkdir()
        results.append(boot_legacy(accel, d, idle, guest_mib))
    keys = sorted({k for r in results for k in r if k != "memory_after_idle"})
    mem_keys = sorted(results[0]["memory_after_idle"])
    return {
        "manifest": str(MANIFEST.relative_to(REPO)),
        "guest_memory_mib": guest_mib,
        "idle_seconds_before_memory": idle,
        "median": {k: median_of(results, k) for k in keys},
        "memory_median": {k: median_of([r["memory_after_idle"] for r in results], k) for k in mem_keys},
        "runs": results,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading PSS")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--skip-legacy", action="store_true")
    args = parser.parse_args()
    ensure_legacy_image()
    verdict = accel_mod.kvm_verdict()
    accels = ["tcg", "kvm"] if verdict.kvm else ["tcg"]
    result: dict[str, Any] = {
        "benchmark": "boot",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "loadavg_before": loadavg(),
        "kvm_probe": asdict(verdict),
        "measured_under": accels,
        "runs": args.runs,
    }
    with tempfile.TemporaryDirectory(prefix="kubevisor-bench-boot-") as tmp:
        work = Path(tmp)
        for accel in accels:
            section: dict[str, Any] = {}
            if not args.skip_legacy:
                section["legacy_vmi"] = legacy(accel, args.runs, args.idle, work)
            if not args.skip_bare:
                d = work / f"bare-{accel}"
                d.mkdir()
                section["bare_kernel"] = bare_variants(accel, args.runs, d)
            result[accel] = section
    result["loadavg_after"] = loadavg()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
