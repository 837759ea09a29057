"""VMI density, modelled on KubeVirt's perf-scale density test; prints ONE JSON document.

Starts a real `kubevisor apiserver`, `kubevisor controller` and a node (the real node agent, whose
launcher pods boot QEMU guests, or with --fake a kwok-style fake node: kubevisor.node.fake), then
creates N VMIs at a fixed rate (KubeVirt: 100 VMIs, one every 100 ms) and measures:

- creation -> Running per VMI (client clock: just before the POST, to the watch event showing
  phase Running): P50, P95, max; and the time from the first create until all are Running;
- API writes per VMI: the PATCH and PUT (UPDATE) requests the apiserver counted in
  apiserver_request_total (/metrics) during the run, by resource, divided by N
  (KubeVirt's budget: PATCH vmis <= 2, UPDATE vmis <= 10 per VMI);
- memory of the controller and the apiserver (PSS and RSS from /proc/<pid>/smaps_rollup) at 0 VMIs
  and at each checkpoint (--fake: 1,000 and 10,000 when N reaches them), as KB per VMI.

    .venv/bin/python bench/density/run.py [--n 20] [--rate 10]           # real guests (TCG)
    .venv/bin/python bench/density/run.py --fake --n 10000 --rate 50      # control plane only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.common import machine  # noqa: E402
from kubevisor.controller.kube import NAMESPACES, NODES, VMIS, ApiError, Kube  # noqa: E402

Obj = dict[str, Any]
NAMESPACE = "density"
CRD_KIND = "CustomResourceDefinition"


def memory_kib(pid: int) -> dict[str, int]:
    """Pss and Rss of one process, in KiB."""
    out = {"pss": 0, "rss": 0}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["pss"] = int(line.split()[1])
        elif line.startswith("Rss:"):
            out["rss"] = int(line.split()[1])
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, as Prometheus' histogram_quantile approximates (q in 0..1)."""
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def vmi_manifest(name: str, fake: bool) -> Obj:
    """KubeVirt's density VMI: a minimal guest (their cirros, 90Mi); ours: the legacy image, 1 CPU."""
    memory = "90Mi" if fake else "256Mi"
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "labels": {"density": "true"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "domain": {
                "resources": {"requests": {"memory": memory, "cpu": "100m"}},
                "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}]},
            },
            "volumes": [{"name": "containerdisk", "containerDisk": {"image": "kubevisor/legacy:latest"}}],
        },
    }


class Procs:
    """The processes this benchmark starts; all stopped at the end, by pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                cwd=REPO,
            )
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 60) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")


def wait_until(what: str, fn: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
        except (ApiError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def install_crds(kube: Kube) -> None:
    for path in sorted((REPO / "deploy" / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != CRD_KIND:
                continue
            try:
                kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=doc)
            except ApiError as exc:
                if not exc.already_exists:
                    raise
    wait_until("VMIs served", lambda: kube.request("GET", "/apis/kubevirt.io/v1/virtualmachineinstances"), 60)


def request_counts(kube: Kube) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total by (verb, resource, subresource); failed requests as verb "<VERB> <code>"."""
    from prometheus_client.parser import text_string_to_metric_families

    response = kube._send("GET", "/metrics")
    text = response.read().decode()
    counts: Counter[tuple[str, str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                verb = (
                    labels["verb"] if labels["code"].startswith("2") else f"{labels['verb']} {labels['code']}"
                )
                counts[(verb, labels["resource"], labels["subresource"])] += int(sample.value)
    return counts


class RunningWatcher:
    """Watches the namespace's VMIs; remembers when each was first seen Running (monotonic clock)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.running: dict[str, float] = {}
        self.phases: dict[str, dict[str, float]] = {}  # name -> phase -> first seen
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="watch-vmis")

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        rv = str(self.kube.list(VMIS, NAMESPACE)["metadata"].get("resourceVersion") or "0")
        while not self.stop.is_set():
            try:
                for event in self.kube.watch(VMIS, rv, namespace=NAMESPACE, timeout_seconds=60):
                    obj = event.get("object") or {}
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    if event.get("type") == "BOOKMARK":
                        continue
                    phase = (obj.get("status") or {}).get("phase") or "None"
                    name = obj["metadata"]["name"]
                    self.phases.setdefault(name, {}).setdefault(phase, time.monotonic())
                    if phase == "Running":
                        with self.lock:
                            if name not in self.running:
                                self.running[name] = time.monotonic()
                                self.changed.notify_all()
                    if self.stop.is_set():
                        return
            except ApiError as exc:
                if exc.gone:
                    rv = str(self.kube.list(VMIS, NAMESPACE)["metadata"].get("resourceVersion") or "0")
            except Exception:
                if self.stop.is_set():
                    return
                time.sleep(0.5)

    def wait_count(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.running) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
        return True


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    procs = Procs(tmp)
    py = sys.executable
    result: dict[str, Any] = {
        "benchmark": "density",
        "mode": "fake-node" if args.fake else "real-qemu",
        "n": args.n,
        "rate_per_s": args.rate,
        "machine": machine(),
        "anchors_kubevirt": {
            "creation_to_running_p50_s": 18,
            "creation_to_running_p95_s": 28,
            "patch_vmis_per_vmi_max": 2,
            "update_vmis_per_vmi_max": 10,
            "virt_controller_kb_per_vmi": 173,
            "virt_api_kb_per_vmi": 3.9,
        },
    }
    data = tmp / "apiserver"
    kubeconfig = data / "admin.kubeconfig"
    try:
        procs.start(
            "apiserver",
            [py, "-m", "kubevisor.cli", "apiserver", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        )
        wait_until("apiserver", lambda: kubeconfig.exists() and "serving on" in procs.log("apiserver"), 60)
        kube = Kube.from_kubeconfig(str(kubeconfig))
        wait_until("namespaces", lambda: kube.list(NAMESPACES)["items"], 60)
        install_crds(kube)
        kube.create(
            NAMESPACES, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        if args.fake:
            node_argv = [
                py,
                "-m",
                "kubevisor.node.fake",
                "--kubeconfig",
                str(kubeconfig),
                "--node-name",
                "fake-0",
            ]
            node_env: dict[str, str] = {}
        else:
            from kubevisor.images.containerdisk import ensure_legacy_image

            ensure_legacy_image()
            node_argv = [
                py, "-m", "kubevisor.cli", "node", "--kubeconfig", str(kubeconfig), "--node-name", "node-0",
                "--state-dir", str(tmp / "node"), "--stop-pods-on-exit", "--log-level", "WARNING",
            ]  # fmt: skip
            node_env = {"KUBEVISOR_RUN": str(tmp / "run")}
        procs.start("node", node_argv, node_env)
        wait_until("node", lambda: kube.list(NODES)["items"], 60)
        controller = procs.start(
            "controller",
            [
                py, "-m", "kubevisor.cli", "controller", "--kubeconfig", str(kubeconfig),
                "--no-leader-elect", "--local-path-dir", str(tmp / "local-path"), "--log-level", "WARNING",
            ],
        )  # fmt: skip
        apiserver_pid = procs.procs["apiserver"].pid
        # A primer VMI first (as KubeVirt's test), so that caches and code paths are warm.
        watcher = RunningWatcher(kube)
        watcher.start()
        kube.create(VMIS, NAMESPACE, vmi_manifest("primer", args.fake))
        if not watcher.wait_count(1, args.timeout):
            raise TimeoutError("the primer VMI did not reach Running")
        kube.request("DELETE", VMIS.path(NAMESPACE, "primer"))
        wait_until("primer gone", lambda: _gone(kube, "primer"), args.timeout)
        time.sleep(args.settle)
        with watcher.lock:
            watcher.running.clear()
            watcher.phases.clear()
        base_mem = {"controller": memory_kib(controller.pid), "apiserver": memory_kib(apiserver_pid)}
        base_counts = request_counts(kube)
        checkpoints = sorted({c for c in args.checkpoints if 0 < c < args.n} | {args.n})
        created: dict[str, float] = {}
        memory: list[dict[str, Any]] = []
        start = time.monotonic()
        next_at = start
        done_at: float | None = None
        for i in range(args.n):
            now = time.monotonic()
            if next_at > now:
                time.sleep(next_at - now)
            next_at += 1.0 / args.rate
            name = f"vmi-{i:05d}"
            created[name] = time.monotonic()
            kube.create(VMIS, NAMESPACE, vmi_manifest(name, args.fake))
            if i + 1 in checkpoints:
                if not watcher.wait_count(i + 1, args.timeout):
                    break
                if i + 1 == args.n:
                    done_at = time.monotonic()
                time.sleep(args.settle)
                memory.append(_memory_point(i + 1, base_mem, controller.pid, apiserver_pid))
                next_at = time.monotonic()
        creation_end = max(created.values())
        counts = request_counts(kube) - base_counts
        with watcher.lock:
            running = dict(watcher.running)
        latencies = [running[n] - created[n] for n in created if n in running]
        result["created"] = len(created)
        result["running"] = len(latencies)
        if latencies:
            result["creation_to_running_s"] = {
                "p50": round(percentile(latencies, 0.50), 2),
                "p95": round(percentile(latencies, 0.95), 2),
                "max": round(max(latencies), 2),
                "mean": round(statistics.fmean(latencies), 2),
            }
            by_phase: dict[str, list[float]] = {}
            for name, t0 in created.items():
                for phase, seen in watcher.phases.get(name, {}).items():
                    by_phase.setdefault(phase, []).append(seen - t0)
            result["creation_to_phase_p50_s"] = {
                phase: round(percentile(values, 0.5), 2)
                for phase, values in sorted(by_phase.items(), key=lambda kv: statistics.median(kv[1]))
            }
        if done_at is not None and len(checkpoints) == 1:
            result["all_running_after_s"] = round(max(running.values()) - start, 2)
            result["creating_took_s"] = round(creation_end - start, 2)
        result["api_writes_per_vmi"] = _writes(counts, args.n)
        result["memory"] = memory
        watcher.stop.set()
        if not args.fake:
            # Power the guests down before the node agent goes (it also stops what is left).
            kube.request("DELETE", VMIS.path(NAMESPACE), body={"gracePeriodSeconds": 0})
            wait_until("VMIs gone", lambda: not kube.list(VMIS, NAMESPACE)["items"], 300, 1.0)
        kube.close()
    finally:
        for name in ("controller", "node", "apiserver"):
            procs.stop(name, timeout=120 if name == "node" else 30)
    return result


def _gone(kube: Kube, name: str) -> bool:
    try:
        kube.get(VMIS, NAMESPACE, name)
    except ApiError as exc:
        return exc.not_found
    return False


def _memory_point(
    count: int, base: dict[str, dict[str, int]], controller: int, apiserver: int
) -> dict[str, Any]:
    point: dict[str, Any] = {"vmis": count}
    for name, pid in (("controller", controller), ("apiserver", apiserver)):
        now = memory_kib(pid)
        point[name] = {
            "pss_mib": round(now["pss"] / 1024, 1),
            "rss_mib": round(now["rss"] / 1024, 1),
            "pss_kb_per_vmi": round((now["pss"] - base[name]["pss"]) * 1.024 / count, 1),
            "rss_kb_per_vmi": round((now["rss"] - base[name]["rss"]) * 1.024 / count, 1),
        }
    return point


def _writes(counts: Counter[tuple[str, str, str]], n: int) -> dict[str, Any]:
    """Successful PATCH and UPDATE (PUT) per VMI by resource[/subresource]; creates, deletes, failures."""
    out: dict[str, Any] = {}
    for verb, label in (("PATCH", "PATCH"), ("PUT", "UPDATE"), ("POST", "CREATE"), ("DELETE", "DELETE")):
        per: dict[str, float] = {}
        for (v, resource, sub), count in sorted(counts.items()):
            if v != verb or count <= 0:
                continue
            key = f"{resource}/{sub}" if sub else resource
            per[key] = round(count / n, 2)
        out[label] = per
    failed: dict[str, float] = {}
    for (v, resource, sub), count in sorted(counts.items()):
        if " " in v and count > 0:
            failed[f"{v} {resource}/{sub}" if sub else f"{v} {resource}"] = round(count / n, 2)
    out["failed"] = failed  # e.g. 409 Conflict: a write from a stale cache, retried
    out["PATCH_total_excluding_leases_events"] = round(
        sum(c for (v, r, _), c in counts.items() if v == "PATCH" and r not in ("leases", "events")) / n, 2
    )
    out["UPDATE_total_excluding_leases"] = round(
        sum(c for (v, r, _), c in counts.items() if v == "PUT" and r != "leases") / n, 2
    )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=20, help="VMIs to create (KubeVirt: 100)")
    p.add_argument("--rate", type=float, default=10.0, help="VMIs created per second (KubeVirt: 10)")
    p.add_argument("--fake", action="store_true", help="fake node: launcher pods run without QEMU (kwok)")
    p.add_argument(
        "--checkpoints",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=None,
        help="VMI counts at which to wait for all Running and measure memory (default --fake: 1000,10000)",
    )
    p.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for Running at a checkpoint"
    )
    p.add_argument("--settle", type=float, default=5.0, help="seconds to let things settle before measuring")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = p.parse_args()
    if args.checkpoints is None:
        args.checkpoints = [1000, 10000] if args.fake else []
    tmp = Path(tempfile.mkdtemp(prefix="kubevisor-density-"))
    try:
        result = run(args, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.keep:
        result["tmp"] = str(tmp)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
