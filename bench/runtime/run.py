"""Benchmark: kubevisor-runtime under podman (+ conmon): time to the workload, memory per idle
sandbox, and the cost of the short verbs.

1. `podman run --rm --network none IMAGE true`, --runs times, with kubevisor-runtime and, in the
   same run and interleaved (same load), with crun where it can run here and runc: median, min and
   max wall time, plus where the time goes from podman's own events (create -> init is the
   runtime's `create`, i.e. the VM boot; init -> start its `start`; died -> remove its `delete`,
   i.e. the VM's teardown; launch -> start is the time until the workload runs, close to what
   Kata's boot-times metric calls to-workload). When crun cannot run, every attempt (the podman
   flags tried) and its error are in the output.
2. --sandboxes detached containers running `sleep`, one VM each; after --idle seconds, PSS
   (/proc/PID/smaps_rollup) per sandbox of QEMU (split into guest RAM, TCG code buffer, rest),
   virtiofsd, the sandbox monitor and the shim, each separately; conmon (podman's, the same for
   every runtime) apart. All of it is removed afterwards and checked: nothing may be left.
3. `kubevisor-runtime state ID` wall time (median of --state-runs) against `runc state` and the
   interpreter's bare start, and the import time of the `state` path (`python -X importtime`).

The image is the busybox image the podman tests import (no registry). podman gets its own
storage, run and tmp directories; the runtime its own KUBEVISOR_RUN. Prints one JSON document.

    python bench/runtime/run.py [--runs 10] [--sandboxes 10] [--idle 10] [--state-runs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import big_mappings_pss_kib, loadavg, machine, smaps_rollup_kib  # noqa: E402
from kubevisor.sandbox.vmconfig import VMConfig  # noqa: E402
from tests.integration.oci_helpers import Podman, runtime_wrapper, settled_leftovers, state_left  # noqa: E402
from tests.integration.oci_image import busybox_image_tar  # noqa: E402

IMAGE = "localhost/kv-busybox:bench"
TICK = os.sysconf("SC_CLK_TCK")
CAP_SYS_RESOURCE = 24
# podman's default rlimits (nofile 1048576, nproc 32768) are above this host's hard limits; lowering
# both is what lets runc run here (without CAP_SYS_RESOURCE nothing may raise a hard limit).
LOW_ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
CRUN_ATTEMPTS: list[tuple[str, list[str], list[str]]] = [  # (label, podman global flags, run flags)
    ("podman defaults", [], []),
    ("--ulimit host", [], ["--ulimit", "host"]),
    ("lowered ulimits", [], LOW_ULIMITS),
    ("lowered ulimits + --cgroups disabled", [], [*LOW_ULIMITS, "--cgroups", "disabled"]),
    (
        "lowered ulimits + --runtime-flag cgroup-manager=disabled",
        ["--runtime-flag", "cgroup-manager=disabled"],
        LOW_ULIMITS,
    ),
]
EVENT_PHASES = (("create", "init"), ("init", "start"), ("start", "died"), ("died", "remove"))


def stats(values: list[float], digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_event_time(value: str) -> float:
    """podman's RFC 3339 time with nanoseconds -> epoch seconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not m:
        raise ValueError(f"unexpected event time {value!r}")
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def host_facts() -> dict[str, Any]:
    """Why native runtimes struggle here: capabilities, hard limits, cgroup layout."""
    status = Path("/proc/self/status").read_text()
    m = re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)
    cap_eff = int(m.group(1), 16) if m else 0
    limits = Path("/proc/self/limits").read_text()

    def hard(name: str) -> str:
        m = re.search(rf"^{name}\s+\S+\s+(\S+)", limits, re.M)
        return m.group(1) if m else "?"

    unified = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    v2_controllers = unified.read_text().split() if unified.exists() else []
    cgroup = "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1"
    if cgroup == "v1" and unified.exists():
        cgroup = "hybrid (v1 + cgroup2 at /sys/fs/cgroup/unified)"
    versions = {}
    for tool in ("podman", "conmon", "crun", "runc"):
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout
        versions[tool] = out.strip().splitlines()[0] if out.strip() else ""
    return {
        "cap_sys_resource": bool(cap_eff >> CAP_SYS_RESOURCE & 1),
        "hard_limit_nofile": hard("Max open files"),
        "hard_limit_nproc": hard("Max processes"),
        "cgroup": cgroup,
        "cgroup2_controllers": v2_controllers,
        "versions": versions,
    }


# -- 1. podman run --rm IMAGE true ----------------------------------------------------------------
class Series:
    def __init__(self, label: str, podman: Podman, global_flags: list[str], run_flags: list[str]) -> None:
        self.label = label
        self.podman = podman
        self.global_flags = global_flags
        self.run_flags = run_flags
        self.names: list[str] = []
        self.walls: list[float] = []
        self.launched: dict[str, float] = {}  # name -> epoch seconds when podman was started
        self.failures: list[str] = []

    def argv(self, name: str) -> list[str]:
        return [*self.global_flags, "run", "--rm", "--name", name, "--network", "none", *self.run_flags,
                IMAGE, "true"]  # fmt: skip

    def once(self, name: str) -> subprocess.CompletedProcess[str]:
        self.launched[name] = time.time()
        t0 = time.perf_counter()
        proc = self.podman(*self.argv(name), check=False, timeout=600)
        wall = time.perf_counter() - t0
        if proc.returncode == 0:
            self.names.append(name)
            self.walls.append(wall)
        else:
            self.failures.append(f"exit {proc.returncode}: {last_line(proc.stderr)}")
        return proc

    def result(self, events: dict[str, dict[str, float]]) -> dict[str, Any]:
        phases: dict[str, list[float]] = {f"{a}_to_{b}_s": [] for a, b in EVENT_PHASES}
        phases["launch_to_start_s"] = []
        for name in self.names:
            ev = events.get(name, {})
            if "start" in ev:
                phases["launch_to_start_s"].append(ev["start"] - self.launched[name])
            for a, b in EVENT_PHASES:
                if a in ev and b in ev:
                    phases[f"{a}_to_{b}_s"].append(ev[b] - ev[a])
        return {
            "command": ["podman", *self.argv("NAME")],
            "runtime": str(self.podman.runtime),
            "wall_s": stats(self.walls),
            "runs_s": [round(w, 3) for w in self.walls],
            "phases_from_podman_events": {k: stats(v) for k, v in phases.items()},
            "failures": self.failures,
        }


def podman_events(podman: Podman, since: float) -> dict[str, dict[str, float]]:
    """{container name: {status: epoch seconds}} of container events since `since`."""
    out = podman(
        "events", "--stream=false", "--since", str(int(since) - 1), "--format", "json", timeout=120
    ).stdout
    events: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        ev = json.loads(line)
        if ev.get("Type") == "container" and ev.get("Name"):
            events.setdefault(ev["Name"], {}).setdefault(ev["Status"], parse_event_time(ev["Time"]))
    return events


def to_workload(kv: Podman, crun: Podman, runc: Podman, runs: int) -> dict[str, Any]:
    crun_attempts = []
    crun_series: Series | None = None
    for i, (label, global_flags, run_flags) in enumerate(CRUN_ATTEMPTS):
        attempt = Series(label, crun, global_flags, run_flags)
        proc = attempt.once(f"kvbench-crun-try{i}")
        crun_attempts.append(
            {
                "flags": [*global_flags, *run_flags],
                "label": label,
                "exit": proc.returncode,
                "error": last_line(proc.stderr),
            }
        )
        if proc.returncode == 0:
            crun_series = Series(label, crun, global_flags, run_flags)
            break
    runc_default = Series("podman defaults", runc, [], [])
    proc = runc_default.once("kvbench-runc-default")
    series = {
        "kubevisor": Series("podman defaults", kv, [], []),
        "runc": Series("lowered ulimits", runc, [], LOW_ULIMITS),
    }
    if crun_series is not None:
        series["crun"] = crun_series
    since = time.time()
    for i in range(runs):  # interleaved: every runtime sees the same load
        for key, s in series.items():
            s.once(f"kvbench-{key}-{i}")
    events = podman_events(kv, since)
    result: dict[str, Any] = {key: s.result(events) for key, s in series.items()}
    result["runc"]["note"] = (
        "runc with podman's default rlimits fails here: "
        + (last_line(proc.stderr) if proc.returncode else "(it did not fail this time)")
        + f"; measured with {' '.join(LOW_ULIMITS)}"
    )
    if crun_series is None:
        result["crun"] = {
            "ran": False,
            "why": (
                "crun 1.8 cannot run a container on this host: (1) podman's default rlimits "
                "(RLIMIT_NOFILE 1048576, RLIMIT_NPROC 32768) exceed the hard limits and raising a hard "
                "limit needs CAP_SYS_RESOURCE, which this host's root lacks; (2) with lowered ulimits "
                "crun refuses the cgroup layout: hybrid mode (v1 controllers plus a cgroup2 hierarchy "
                "with controllers enabled) is not supported, and podman's --cgroups disabled / crun's "
                "cgroup-manager=disabled do not avoid that check"
            ),
            "attempts": crun_attempts,
        }
    else:
        result["crun"]["attempts"] = crun_attempts
    kv_med = result["kubevisor"]["wall_s"].get("median")
    runc_med = result["runc"]["wall_s"].get("median")
    if kv_med and runc_med:
        result["kubevisor_minus_runc_median_s"] = round(kv_med - runc_med, 3)
    return result


# -- 2. idle sandboxes ------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def monitor_pids(run_dir: Path) -> dict[str, int]:
    """{vm dir: pid} of the sandbox monitors (`python -m kubevisor.sandbox.monitor VM_DIR`)."""
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"kubevisor.sandbox.monitor" not in argv:
            continue
        i = argv.index(b"kubevisor.sandbox.monitor") + 1
        vm_dir = argv[i].decode() if i < len(argv) else ""
        if vm_dir.startswith(str(run_dir)):
            found[vm_dir] = int(proc.name)
    return found


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


def idle_sandboxes(kv: Podman, run_dir: Path, count: int, idle: float) -> dict[str, Any]:
    starts: list[float] = []
    names = [f"kvbench-idle-{i}" for i in range(count)]
    for name in names:
        t0 = time.perf_counter()
        kv("run", "-d", "--name", name, "--network", "none", IMAGE, "sleep", "1000000", timeout=600)
        starts.append(time.perf_counter() - t0)
    vm_dirs = sorted((run_dir / "sb").iterdir())
    if len(vm_dirs) != count:
        raise RuntimeError(f"{count} containers but {len(vm_dirs)} sandbox VMs under {run_dir / 'sb'}")
    monitors = monitor_pids(run_dir)
    procs: list[dict[str, int]] = []
    for d in vm_dirs:
        recorded = json.loads((d / "procs.json").read_text())
        guest_mib = VMConfig.from_json(json.loads((d / "vm.json").read_text())).memory_mib
        procs.append(
            {
                "qemu": int(recorded["qemu"]["pid"]),
                "virtiofsd": int(recorded["virtiofsd"]["pid"]),
                "monitor": monitors[str(d)],
                "guest_mib": guest_mib,
            }
        )
    inspect = kv("inspect", "--format", "{{.State.Pid}} {{.State.ConmonPid}}", *names).stdout.split()
    shims, conmons = [int(x) for x in inspect[0::2]], [int(x) for x in inspect[1::2]]
    cpu_before = {p["qemu"]: cpu_seconds(p["qemu"]) for p in procs}
    t_idle = time.monotonic()
    time.sleep(idle)
    idle_wall = time.monotonic() - t_idle
    qemu_cpu_pct = [100 * (cpu_seconds(p["qemu"]) - cpu_before[p["qemu"]]) / idle_wall for p in procs]
    per: dict[str, list[float]] = {
        k: []
        for k in (
            "qemu", "qemu_guest_ram", "qemu_tcg_code_buffer", "qemu_other", "virtiofsd", "monitor", "shim",
            "conmon",
        )
    }  # fmt: skip
    qemu_rss: list[float] = []
    qemu_kinds: dict[str, list[float]] = {"Pss_Anon": [], "Pss_File": [], "Pss_Shmem": []}
    for p in procs:
        rollup = smaps_rollup_kib(p["qemu"])
        for kind, values in qemu_kinds.items():
            values.append(rollup.get(kind, 0))
        big = big_mappings_pss_kib(p["qemu"], p["guest_mib"] * 1024)
        per["qemu"].append(rollup["Pss"])
        qemu_rss.append(rollup["Rss"])
        per["qemu_guest_ram"].append(big["guest_ram"])
        per["qemu_tcg_code_buffer"].append(big["tcg_code_buffer"])
        per["qemu_other"].append(rollup["Pss"] - big["guest_ram"] - big["tcg_code_buffer"])
        per["virtiofsd"].append(smaps_rollup_kib(p["virtiofsd"])["Pss"])
        per["monitor"].append(smaps_rollup_kib(p["monitor"])["Pss"])
    per["shim"] = [smaps_rollup_kib(pid)["Pss"] for pid in shims]
    per["conmon"] = [smaps_rollup_kib(pid)["Pss"] for pid in conmons]
    mean = {k: sum(v) / len(v) for k, v in per.items()}
    ours = ("qemu", "virtiofsd", "monitor", "shim")
    total = sum(mean[k] for k in ours)
    return {
        "sandboxes": count,
        "guest_memory_mib": procs[0]["guest_mib"],
        "idle_seconds_before_reading": idle,
        "detached_start_s": stats(starts),
        "detached_start_runs_s": [round(s, 2) for s in starts],
        "qemu_idle_cpu_percent": stats(qemu_cpu_pct, 1),
        "pss_mib_mean_per_sandbox": {k: mib(v) for k, v in mean.items()},
        "pss_mib_median_per_sandbox": {k: mib(statistics.median(v)) for k, v in per.items()},
        "qemu_rss_mib_mean": mib(sum(qemu_rss) / len(qemu_rss)),
        "qemu_pss_mib_mean_by_kind": {k.lower(): mib(sum(v) / len(v)) for k, v in qemu_kinds.items()},
        "per_sandbox_total_pss_mib": {
            "qemu_plus_shim": mib(mean["qemu"] + mean["shim"]),
            "qemu_virtiofsd_monitor_shim": mib(total),
            "without_guest_ram": mib(total - mean["qemu_guest_ram"]),
            "without_guest_ram_and_tcg_buffer": mib(
                total - mean["qemu_guest_ram"] - mean["qemu_tcg_code_buffer"]
            ),
            "conmon_not_ours": mib(mean["conmon"]),
        },
        "all_sandboxes_pss_mib": mib(sum(sum(per[k]) for k in ours)),
    }


# -- 3. short verbs ---------------------------------------------------------------------------------
def time_argv(argv: list[str], runs: int) -> dict[str, Any]:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        walls.append((time.perf_counter() - t0) * 1000)
    return {"argv": argv, **{f"{k}_ms" if k != "n" else k: v for k, v in stats(walls, 1).items()}}


def import_profile(argv: list[str], runs: int) -> dict[str, Any]:
    """`python -X importtime` of a `state` call: modules imported and their summed self time."""
    code = f"import sys; from kubevisor.oci.main import main; sys.exit(main({argv!r}))"
    totals, counts = [], []
    top: list[tuple[int, str]] = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
        )
        rows = []
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m:
                rows.append((int(m.group(1)), m.group(4)))
        totals.append(sum(r[0] for r in rows) / 1000)
        counts.append(len(rows))
        top = sorted(rows, reverse=True)[:8]
    ours = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from kubevisor.oci.main import main"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    cumulative = {
        m.group(2): int(m.group(1)) / 1000
        for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| *(kubevisor\.oci\.\w+)$", ours, re.M)
    }
    return {
        "modules_imported": stats([float(c) for c in counts], 0),
        "import_self_time_sum_ms": stats(totals, 2),
        "slowest_imports_last_run_us": [{"module": name, "self_us": us} for us, name in top],
        "cumulative_ms_of_kubevisor_oci_modules": cumulative,
    }


def short_verbs(kv: Podman, runc: Podman, root: Path, runs: int) -> dict[str, Any]:
    kv("run", "-d", "--name", "kvbench-state", "--network", "none", IMAGE, "sleep", "1000000", timeout=600)
    runc(
        "run", "-d", "--name", "kvbench-state-runc", "--network", "none", *LOW_ULIMITS, IMAGE, "sleep",
        "1000000",
    )  # fmt: skip
    cid = kv("inspect", "--format", "{{.Id}}", "kvbench-state").stdout.strip()
    runc_cid = runc("inspect", "--format", "{{.Id}}", "kvbench-state-runc").stdout.strip()
    entry_point = Path(sys.executable).parent / "kubevisor-runtime"
    state_argv = [str(entry_point), "--root", str(root), "state", cid]
    state = json.loads(subprocess.run(state_argv, capture_output=True, text=True, check=True).stdout)
    if state["status"] != "running":
        raise RuntimeError(f"kubevisor-runtime state: {state}")
    result = {
        "kubevisor_runtime_state": time_argv(state_argv, runs),
        "kubevisor_runtime_version": time_argv([str(entry_point), "--version"], runs),
        "python_bare_start": time_argv([sys.executable, "-c", "pass"], runs),
        "python_isolated_start": time_argv([sys.executable, "-I", "-S", "-c", "pass"], runs),
        "runc_state": time_argv(["runc", "state", runc_cid], runs),
        "import_profile_of_state": import_profile(state_argv[1:], 5),
    }
    for arg in result.values():
        if "argv" in arg:
            arg["argv"] = [re.sub(r"^([0-9a-f]{12})[0-9a-f]{52}$", r"\1…", a) for a in arg["argv"]]
    kv("rm", "--force", "--time", "0", "kvbench-state", timeout=300)
    runc("rm", "--force", "--time", "0", "kvbench-state-runc", timeout=300)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sandboxes", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before reading PSS")
    parser.add_argument("--state-runs", type=int, default=50)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "runtime",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "loadavg_before": loadavg(),
        "host": host_facts(),
        "sandbox_accel": VMConfig(kernel="", initrd="").accel,
    }
    with tempfile.TemporaryDirectory(prefix="kubevisor-bench-runtime-") as tmp:
        work = Path(tmp)
        run_dir = work / "run"
        root = work / "runtime-root"
        wrapper = runtime_wrapper(work / "kubevisor-runtime", {"KUBEVISOR_RUN": str(run_dir)}, root=root)
        kv, crun, runc = Podman(work, wrapper), Podman(work, "crun"), Podman(work, "runc")
        leftovers: list[str] = []
        try:
            kv("import", str(busybox_image_tar(work)), IMAGE)
            for key, measure in (
                ("to_workload", lambda: to_workload(kv, crun, runc, args.runs)),
                ("short_verbs", lambda: short_verbs(kv, runc, root, args.state_runs)),
                ("idle_sandboxes", lambda: idle_sandboxes(kv, run_dir, args.sandboxes, args.idle)),
            ):
                before = loadavg()
                result[key] = {"loadavg_before": before, **measure(), "loadavg_after": loadavg()}
        finally:
            kv.remove_containers()
            leftovers = settled_leftovers(run_dir, wrapper, work / "runroot") + state_left(root)
            kv.remove_images_and_storage()
        result["leftovers"] = leftovers
    result["loadavg_after"] = loadavg()
    print(json.dumps(result, indent=1))
    return 1 if leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
