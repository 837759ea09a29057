"""`kubevisor node` against the embedded apiserver and `kubevisor controller`.

Registration, Lease heartbeat, running launcher pods, pod status from the launcher's exit,
`kubectl logs`, graceful deletion, and adoption after `kill -9` of the agent. The launcher
here is a small stand-in process (the real one boots QEMU: see the launcher's own tests, and
test_up_vms_e2e.py for the agent with real launchers); what is under test is the agent's process
and pod bookkeeping.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_controller_e2e import KUBECTL, Cluster, holds, vm_manifest, wait_for

from kubevisor import procs
from kubevisor.controller.kube import LEASES, NODES, VMS, ApiError

pytestmark = pytest.mark.e2e

# Exits with the code written to <vmi file>.exit; exits 0 on SIGTERM (a clean power-down).
STAND_IN = """
import os, signal, sys, time
path = sys.argv[1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("stand-in launcher for", open(path).read().split("name: ")[1].split()[0], flush=True)
while not os.path.exists(path + ".exit"):
    time.sleep(0.1)
sys.exit(int(open(path + ".exit").read()))
"""


class Node:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.state = cluster.tmp / f"node-{name}"
        self.logs = cluster.tmp / "pod-logs"
        self.proc: subprocess.Popen[str] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        log = open(self.cluster.tmp / f"node-{self.name}-{self.runs}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevisor.cli",
                "node",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--node-name",
                self.name,
                "--state-dir",
                str(self.state),
                "--pod-log-dir",
                str(self.logs),
                "--launcher-command",
                json.dumps([sys.executable, "-c", STAND_IN]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def launcher_record(self, pod_uid: str) -> procs.ProcessRecord | None:
        return procs.read_record(self.state / "pods" / pod_uid / "launcher.json")

    def vmi_file(self, pod_uid: str) -> Path:
        return self.state / "pods" / pod_uid / "vmi.yaml"

    def clean(self) -> None:
        """Stop stand-in launchers the agent left running on purpose (it only adopts them)."""
        pods_dir = self.state / "pods"
        for record_file in pods_dir.glob("*/launcher.json") if pods_dir.exists() else []:
            procs.clean(record_file, grace=5)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Node]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    cluster = Cluster(tmp_path_factory.mktemp("node-e2e"))
    node = Node(cluster, "agent1")
    try:
        cluster.start_apiserver(pod_log_dir=node.logs)
        cluster.apply_crds()
        node.start()
        cluster.start_controller(heartbeat_timeout=60)
        yield cluster, node
    finally:
        node.stop()
        node.clean()
        cluster.stop()


def test_node_registers_and_heartbeats(env: tuple[Cluster, Node]) -> None:
    cluster, _ = env
    registered = wait_for("Node", lambda: cluster.kube.get(NODES, None, "agent1"))
    labels = registered["metadata"]["labels"]
    assert labels["kubevirt.io/schedulable"] == "true" and labels["kubernetes.io/hostname"] == "agent1"
    alloc = registered["status"]["allocatable"]
    assert {"cpu", "memory", "pods", "devices.kubevirt.io/kvm"} <= set(alloc)
    assert registered["spec"]["podCIDR"] == "10.244.0.0/24"
    first = wait_for("Lease", lambda: cluster.kube.get(LEASES, "kube-node-lease", "agent1"))["spec"][
        "renewTime"
    ]
    wait_for(
        "Lease renewed",
        lambda: cluster.kube.get(LEASES, "kube-node-lease", "agent1")["spec"]["renewTime"] != first,
        timeout=30,
    )


def test_launcher_pod_runs_logs_and_ends_with_the_launcher(env: tuple[Cluster, Node]) -> None:
    cluster, node = env
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("agentvm"))
    vmi = wait_for("VMI", lambda: cluster.vmi(ns, "agentvm"))
    pod = wait_for(
        "pod Running",
        lambda: next(
            (
                p
                for p in cluster.launcher_pods(ns, vmi["metadata"]["uid"])
                if p.get("status", {}).get("phase") == "Running"
            ),
            None,
        ),
    )
    assert pod["spec"]["nodeName"] == "agent1"
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    wait_for("VMI Scheduled", lambda: cluster.vmi(ns, "agentvm")["status"].get("phase") == "Scheduled")
    uid = pod["metadata"]["uid"]
    record = node.launcher_record(uid)
    assert record is not None and procs.is_alive(record)
    logs = wait_for(
        "kubectl logs",
        lambda: (
            "stand-in launcher for agentvm" in cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"])
            and True
        ),
    )
    assert logs

    # The launcher exits 1 (QEMU killed): the pod fails, the VMI fails, Always starts a new one.
    node.vmi_file(uid).with_name("vmi.yaml.exit").write_text("1")
    # (the failed pod and VMI are replaced quickly: their Failed phase shows in the events)
    wait_for(
        "VMI Failed event",
        lambda: any(
            e["reason"] == "Failed" and e["involvedObject"]["uid"] == vmi["metadata"]["uid"]
            for e in cluster.events(ns)
        ),
    )
    wait_for(
        "a new VMI",
        lambda: (v := cluster.vmi(ns, "agentvm")) and v["metadata"]["uid"] != vmi["metadata"]["uid"],
    )
    assert not procs.is_alive(record)


def test_kill_9_of_the_agent_adopts_running_launchers(env: tuple[Cluster, Node]) -> None:
    cluster, node = env
    ns = cluster.namespace()
    for name in ("adopt1", "adopt2"):
        cluster.kube.create(VMS, ns, vm_manifest(name))
    pods = wait_for(
        "2 running pods",
        lambda: (
            (ps := [p for p in cluster.launcher_pods(ns) if p.get("status", {}).get("phase") == "Running"])
            and len(ps) == 2
            and ps
        ),
    )
    records = {p["metadata"]["uid"]: node.launcher_record(p["metadata"]["uid"]) for p in pods}
    assert all(r is not None and procs.is_alive(r) for r in records.values())
    node.kill9()
    holds("launchers survive the agent", lambda: all(procs.is_alive(r) for r in records.values() if r), 2)
    node.start()
    # Same processes, still Running; and the agent still acts on them (deletion powers them down).
    holds(
        "same launchers, pods still Running",
        lambda: (
            all(
                node.launcher_record(uid) == rec and procs.is_alive(rec)
                for uid, rec in records.items()
                if rec
            )
            and all(p["status"]["phase"] == "Running" for p in cluster.launcher_pods(ns))
        ),
        4,
    )
    cluster.kube.delete(VMS, ns, "adopt1")
    victim = next(p for p in pods if p["metadata"]["labels"]["vm.kubevirt.io/name"] == "adopt1")
    wait_for("adopted launcher stopped", lambda: not procs.is_alive(records[victim["metadata"]["uid"]]))
    wait_for(
        "its pod gone",
        lambda: not cluster.launcher_pods(ns, victim["metadata"]["labels"]["kubevirt.io/created-by"]),
    )
    survivor = next(p for p in pods if p is not victim)
    assert procs.is_alive(records[survivor["metadata"]["uid"]])


def test_deleting_a_vm_powers_the_launcher_down(env: tuple[Cluster, Node]) -> None:
    cluster, node = env
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("gone"))
    pod = wait_for(
        "pod Running",
        lambda: next(
            (p for p in cluster.launcher_pods(ns) if p.get("status", {}).get("phase") == "Running"), None
        ),
    )
    record = node.launcher_record(pod["metadata"]["uid"])
    assert record is not None
    cluster.kube.delete(VMS, ns, "gone")
    wait_for("launcher exited", lambda: not procs.is_alive(record))
    wait_for("VMI gone", lambda: cluster.vmi(ns, "gone") is None)
    wait_for("pod gone", lambda: not cluster.launcher_pods(ns))
    wait_for("state cleaned", lambda: not (node.state / "pods" / pod["metadata"]["uid"]).exists())
    try:
        cluster.kube.get(VMS, ns, "gone")
        raise AssertionError("VM still there")
    except ApiError as exc:
        assert exc.not_found
