"""Helpers the benchmarks share: the machine's facts, the load average, a process's PSS."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:")), 0)
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "qemu": qemu.stdout.splitlines()[0] if qemu.stdout else "",
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def smaps_rollup_kib(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup as {field: KiB} (Rss, Pss, Pss_Anon, Pss_File, Pss_Shmem, ...)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            out[key] = int(parts[0])
    return out


def big_mappings_pss_kib(pid: int, guest_kib: int) -> dict[str, int]:
    """PSS of QEMU's two big mappings: guest RAM (anonymous, or a memfd when the memory backend is
    shared with vhost-user, of the guest's size) and, under TCG, the translated-code buffer (rwx,
    anonymous; `-accel tcg,tb-size`, 1 GiB by default in QEMU 7.2)."""
    found = {"guest_ram": 0, "tcg_code_buffer": 0}
    current: tuple[str, int, bool] | None = None  # (perms, size, memfd) of a candidate mapping

    def account(pss: int) -> None:
        if current is None:
            return
        perms, size, memfd = current
        if guest_kib <= size <= guest_kib + 4096 and "x" not in perms:
            found["guest_ram"] += pss
        elif "x" in perms and size >= 64 * 1024 and not memfd:
            found["tcg_code_buffer"] += pss

    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            fields = line.split()
            memfd = len(fields) >= 6 and fields[5].startswith("/memfd:")
            current = (fields[1], 0, memfd) if len(fields) < 6 or memfd else None
        elif line.startswith("Size:") and current is not None:
            current = (current[0], int(line.split()[1]), current[2])
        elif line.startswith("Pss:"):
            account(int(line.split()[1]))
    return found
