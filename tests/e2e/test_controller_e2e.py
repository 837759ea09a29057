"""The controllers against the real embedded apiserver (`kubevisor apiserver`), end to end.

One apiserver and one `kubevisor controller` process per module (each test in its own
namespace). The kubevirt.io CRDs from deploy/crds are applied with the real kubectl.
The test plays the node agent where one is needed: it registers Nodes, renews their
Leases, and patches launcher pod status / VMI phase as the agent would.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubevisor.controller.kube import (
    EVENTS,
    LEASES,
    NAMESPACES,
    NODES,
    PODS,
    PVCS,
    VMIRS,
    VMIS,
    VMS,
    ApiError,
    Kube,
)
from kubevisor.controller.leader import format_micro_time

# KUBEVISOR_E2E_APISERVER_PATH: run the apiserver from another checkout (e.g. while it is not on main).
if not os.environ.get("KUBEVISOR_E2E_APISERVER_PATH"):
    pytest.importorskip("kubevisor.apiserver.cli", reason="the embedded apiserver is not on this branch yet")

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "crds"
KUBECTL = shutil.which("kubectl")
HEARTBEAT_TIMEOUT = 8  # seconds without a Lease renewal before a node is NotReady
WAIT = 60.0

Obj = dict[str, Any]


def wait_for(what: str, fn: Callable[[], Any], timeout: float = WAIT, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except ApiError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def holds(what: str, fn: Callable[[], bool], duration: float = 4.0) -> None:
    """Assert fn() stays true for `duration` seconds (negative checks: nothing happens)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert fn(), what
        time.sleep(0.2)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "apiserver"
        self.kubeconfig = self.data / "admin.kubeconfig"
        self.apiserver: subprocess.Popen[str] | None = None
        self.controller: subprocess.Popen[str] | None = None
        self.kube: Kube | None = None
        self._beats: dict[str, threading.Event] = {}
        self.controller_runs = 0

    # -- processes ----------------------------------------------------------------
    def start_apiserver(self, pod_log_dir: Path | None = None) -> None:
        env = dict(os.environ)
        extra = os.environ.get("KUBEVISOR_E2E_APISERVER_PATH")  # run the apiserver from another checkout
        if extra:
            env["PYTHONPATH"] = extra
        log = open(self.tmp / "apiserver.log", "w")  # noqa: SIM115
        self.apiserver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevisor.cli",
                "apiserver",
                "--data-dir",
                str(self.data),
                "--listen",
                "127.0.0.1:0",
                *(["--pod-log-dir", str(pod_log_dir)] if pod_log_dir else []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=extra or REPO,
        )
        wait_for(
            "apiserver kubeconfig",
            lambda: self.kubeconfig.exists() and "serving on" in (self.tmp / "apiserver.log").read_text(),
            timeout=60,
        )
        self.kube = Kube.from_kubeconfig(str(self.kubeconfig))
        wait_for("namespaces served", lambda: self.kube.list(NAMESPACES)["items"])

    def kubectl_run(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        assert KUBECTL, "kubectl is needed"
        return subprocess.run(
            [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        done = self.kubectl_run(*args, stdin=stdin, timeout=timeout)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def apply_crds(self) -> None:
        self.kubectl("apply", "-f", str(CRDS))
        for plural in ("virtualmachines", "virtualmachineinstances", "virtualmachineinstancereplicasets"):
            wait_for(
                f"{plural} served", lambda p=plural: self.kube.request("GET", f"/apis/kubevirt.io/v1/{p}")
            )

    def start_controller(self, heartbeat_timeout: float = HEARTBEAT_TIMEOUT) -> None:
        self.controller_runs += 1
        log = open(self.tmp / f"controller-{self.controller_runs}.log", "w")  # noqa: SIM115
        self.controller = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubevisor.cli",
                "controller",
                "--kubeconfig",
                str(self.kubeconfig),
                "--leader-elect-lease-duration",
                "3",
                "--node-heartbeat-timeout",
                str(heartbeat_timeout),
                "--watch-timeout",
                "20",
                "--local-path-dir",
                str(self.tmp / "local-path"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def kill_controller(self) -> None:
        assert self.controller is not None
        self.controller.send_signal(signal.SIGKILL)
        self.controller.wait(timeout=10)

    def stop(self) -> None:
        for beat in self._beats.values():
            beat.set()
        for proc in (self.controller, self.apiserver):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        if self.kube is not None:
            self.kube.close()

    # -- a node, as a node agent registers it ----------------------------------------
    def add_node(
        self, name: str, memory: str = "4Gi", cpu: str = "2", labels: dict[str, str] | None = None
    ) -> None:
        capacity = {"cpu": cpu, "memory": memory, "pods": "110"}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubevirt.io/schedulable": "true",
                    "kubernetes.io/hostname": name,
                    **(labels or {}),
                },
            },
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }
        created = self.kube.create(NODES, None, body)
        if not (created.get("status") or {}).get("allocatable"):
            created["status"] = body["status"]
            self.kube.update_status(NODES, created)
        self.start_heartbeat(name)

    def start_heartbeat(self, name: str) -> None:
        """The node agent's loop: renew the node's Lease, finish deleting its terminating pods."""
        stop = threading.Event()
        self._beats[name] = stop
        kube = self.kube
        assert kube is not None

        def renew(now: str) -> None:
            try:
                lease = kube.get(LEASES, "kube-node-lease", name)
                lease["spec"]["renewTime"] = now
                kube.replace(LEASES, lease)
            except ApiError as exc:
                if not exc.not_found:
                    raise
                kube.create(
                    LEASES,
                    "kube-node-lease",
                    {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": name, "namespace": "kube-node-lease"},
                        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now},
                    },
                )

        def reap() -> None:
            # As a kubelet does once the containers are stopped: delete with grace 0.
            for pod in kube.list(PODS, field_selector=f"spec.nodeName={name}")["items"]:
                meta = pod["metadata"]
                if meta.get("deletionTimestamp"):
                    try:
                        kube.delete(PODS, meta["namespace"], meta["name"], grace_period_seconds=0)
                    except ApiError as exc:
                        if not exc.not_found:
                            raise

        def loop() -> None:
            while not stop.is_set():
                try:
                    renew(format_micro_time(dt.datetime.now(dt.UTC)))
                    reap()
                except Exception:
                    pass
                stop.wait(0.5)

        threading.Thread(target=loop, daemon=True, name=f"agent-{name}").start()

    def stop_heartbeat(self, name: str) -> None:
        self._beats.pop(name).set()

    # -- helpers --------------------------------------------------------------------
    def namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.kube.create(
            NAMESPACES, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        return name

    def vmi(self, ns: str, name: str) -> Obj | None:
        try:
            return self.kube.get(VMIS, ns, name)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def vm(self, ns: str, name: str) -> Obj:
        return self.kube.get(VMS, ns, name)

    def launcher_pods(self, ns: str, vmi_uid: str | None = None) -> list[Obj]:
        selector = "kubevirt.io=virt-launcher" + (f",kubevirt.io/created-by={vmi_uid}" if vmi_uid else "")
        return self.kube.list(PODS, ns, label_selector=selector)["items"]

    def events(self, ns: str) -> list[Obj]:
        return self.kube.list(EVENTS, ns)["items"]

    def printable(self, ns: str, name: str) -> str:
        return str((self.vm(ns, name).get("status") or {}).get("printableStatus") or "")

    # the node agent's part --------------------------------------------------------
    def pod_running(self, pod: Obj) -> None:
        meta = pod["metadata"]
        self.kube.patch(
            PODS,
            meta["namespace"],
            meta["name"],
            {
                "status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "True"},
                    ],
                    "containerStatuses": [
                        {
                            "name": "compute",
                            "ready": True,
                            "restartCount": 0,
                            "image": "x",
                            "imageID": "",
                            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                        }
                    ],
                }
            },
            subresource="status",
        )

    def pod_ended(self, pod: Obj, succeeded: bool) -> None:
        meta = pod["metadata"]
        phase = "Succeeded" if succeeded else "Failed"
        code = 0 if succeeded else 137
        self.kube.patch(
            PODS,
            meta["namespace"],
            meta["name"],
            {
                "status": {
                    "phase": phase,
                    "conditions": [{"type": "Ready", "status": "False"}],
                    "containerStatuses": [
                        {
                            "name": "compute",
                            "ready": False,
                            "restartCount": 0,
                            "image": "x",
                            "imageID": "",
                            "state": {"terminated": {"exitCode": code}},
                        }
                    ],
                }
            },
            subresource="status",
        )

    def vmi_running(self, ns: str, name: str) -> None:
        def attempt() -> bool:
            vmi = self.kube.get(VMIS, ns, name)
            vmi["status"]["phase"] = "Running"
            try:
                self.kube.replace(VMIS, vmi)
            except ApiError as exc:
                if exc.conflict:
                    return False
                raise
            return True

        wait_for("VMI set Running", attempt)

    def start_guest(self, ns: str, name: str) -> Obj:
        """Drive a VMI to Running as the node agent would; returns the launcher pod."""
        vmi = wait_for(f"VMI {name}", lambda: self.vmi(ns, name))
        pod = wait_for(
            f"launcher pod of {name} bound",
            lambda: next(
                (p for p in self.launcher_pods(ns, vmi["metadata"]["uid"]) if p["spec"].get("nodeName")), None
            ),
        )
        self.pod_running(pod)
        wait_for(
            f"{name} Scheduled",
            lambda: (self.vmi(ns, name) or {}).get("status", {}).get("phase") == "Scheduled",
        )
        self.vmi_running(ns, name)
        wait_for(f"VM {name} Running", lambda: self.printable(ns, name) == "Running")
        return pod


def vm_manifest(
    name: str,
    strategy: str | None = "Always",
    memory: str = "128Mi",
    running: bool | None = None,
    volumes: list[Obj] | None = None,
) -> Obj:
    spec: Obj = {
        "template": {
            "metadata": {"labels": {"kubevirt.io/vm": name}},
            "spec": {
                "domain": {
                    "memory": {"guest": memory},
                    "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                },
                "volumes": volumes or [{"name": "root", "containerDisk": {"image": "cirros"}}],
            },
        },
    }
    if strategy is not None:
        spec["runStrategy"] = strategy
    if running is not None:
        spec["running"] = running
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    c = Cluster(tmp_path_factory.mktemp("controller-e2e"))
    try:
        c.start_apiserver()
        c.apply_crds()
        c.add_node("node1")
        c.start_controller()
        yield c
    finally:
        c.stop()


def test_vm_creates_vmi_and_bound_launcher_pod_and_phases_progress(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("testvm"))
    vmi = wait_for("VMI", lambda: cluster.vmi(ns, "testvm"))
    vm = cluster.vm(ns, "testvm")
    ref = vmi["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "VirtualMachine",
        "testvm",
        vm["metadata"]["uid"],
        True,
    )
    pod = wait_for(
        "bound launcher pod",
        lambda: next(
            (p for p in cluster.launcher_pods(ns, vmi["metadata"]["uid"]) if p["spec"].get("nodeName")), None
        ),
    )
    assert re.fullmatch(r"virt-launcher-testvm-[bcdfghjklmnpqrstvwxz2456789]{5}", pod["metadata"]["name"])
    assert pod["spec"]["nodeName"] == "node1"
    assert pod["metadata"]["labels"]["vm.kubevirt.io/name"] == "testvm"
    pref = pod["metadata"]["ownerReferences"][0]
    assert (pref["kind"], pref["uid"], pref["controller"]) == (
        "VirtualMachineInstance",
        vmi["metadata"]["uid"],
        True,
    )
    requests = pod["spec"]["containers"][0]["resources"]["requests"]
    assert requests["memory"] == "426240Ki"  # 128Mi + KubeVirt's overhead for 128Mi/1 vCPU
    assert "devices.kubevirt.io/kvm" not in requests
    wait_for("Scheduling", lambda: cluster.vmi(ns, "testvm")["status"].get("phase") == "Scheduling")
    assert cluster.printable(ns, "testvm") == "Starting"

    cluster.pod_running(pod)
    scheduled = wait_for(
        "Scheduled",
        lambda: (v := cluster.vmi(ns, "testvm")) and v["status"].get("phase") == "Scheduled" and v,
    )
    assert scheduled["status"]["nodeName"] == "node1"
    assert scheduled["metadata"]["labels"]["kubevirt.io/nodeName"] == "node1"
    cluster.vmi_running(ns, "testvm")
    wait_for(
        "VM Running and Ready",
        lambda: (
            (s := cluster.vm(ns, "testvm").get("status") or {}).get("printableStatus") == "Running"
            and s.get("ready") is True
        ),
    )
    reasons = {(e["involvedObject"]["kind"], e["reason"]) for e in cluster.events(ns)}
    assert ("VirtualMachine", "SuccessfulCreate") in reasons
    assert ("VirtualMachineInstance", "SuccessfulCreate") in reasons
    assert ("Pod", "Scheduled") in reasons

    # Deleting the VM removes VMI and pod.
    cluster.kube.delete(VMS, ns, "testvm")
    wait_for("VM gone", lambda: not cluster.kube.list(VMS, ns)["items"])
    wait_for("VMI gone", lambda: cluster.vmi(ns, "testvm") is None)
    wait_for("pod gone", lambda: not cluster.launcher_pods(ns))


def test_always_restarts_after_guest_powers_off(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("always"))
    pod = cluster.start_guest(ns, "always")
    first = cluster.vmi(ns, "always")["metadata"]["uid"]
    cluster.pod_ended(pod, succeeded=True)
    second = wait_for(
        "a new VMI", lambda: (v := cluster.vmi(ns, "always")) and v["metadata"]["uid"] != first and v
    )
    assert (second.get("status") or {}).get("phase") in (None, "", "Pending", "Scheduling")
    cluster.start_guest(ns, "always")
    assert len(cluster.launcher_pods(ns, second["metadata"]["uid"])) == 1


def test_rerun_on_failure_stays_down_after_poweroff_restarts_after_crash(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("clean", "RerunOnFailure"))
    pod = cluster.start_guest(ns, "clean")
    cluster.pod_ended(pod, succeeded=True)
    wait_for("VMI removed after clean power-off", lambda: cluster.vmi(ns, "clean") is None)
    wait_for("Stopped", lambda: cluster.printable(ns, "clean") == "Stopped")
    holds("no new VMI", lambda: cluster.vmi(ns, "clean") is None)

    cluster.kube.create(VMS, ns, vm_manifest("crash", "RerunOnFailure"))
    pod = cluster.start_guest(ns, "crash")
    first = cluster.vmi(ns, "crash")["metadata"]["uid"]
    cluster.pod_ended(pod, succeeded=False)  # QEMU killed: the launcher pod fails
    wait_for(
        "a new VMI after the crash", lambda: (v := cluster.vmi(ns, "crash")) and v["metadata"]["uid"] != first
    )
    cluster.start_guest(ns, "crash")


def test_once_never_restarts(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("once", "Once"))
    pod = cluster.start_guest(ns, "once")
    uid = cluster.vmi(ns, "once")["metadata"]["uid"]
    cluster.pod_ended(pod, succeeded=False)
    wait_for("VMI Failed", lambda: cluster.vmi(ns, "once")["status"].get("phase") == "Failed")
    wait_for("Stopped", lambda: cluster.printable(ns, "once") == "Stopped")
    holds(
        "the same final VMI stays",
        lambda: (cluster.vmi(ns, "once") or {}).get("metadata", {}).get("uid") == uid,
    )


def test_halted_manual_and_state_change_requests(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("halted", "Halted"))
    cluster.kube.create(VMS, ns, vm_manifest("manual", "Manual"))
    cluster.kube.create(VMS, ns, vm_manifest("legacy", None, running=False))
    wait_for(
        "Stopped", lambda: all(cluster.printable(ns, n) == "Stopped" for n in ("halted", "manual", "legacy"))
    )
    holds("no VMIs", lambda: not cluster.kube.list(VMIS, ns)["items"])

    # Manual: a start request starts it, a stop request for that VMI stops it.
    cluster.kube.patch(
        VMS, ns, "manual", {"status": {"stateChangeRequests": [{"action": "Start"}]}}, subresource="status"
    )
    vmi = wait_for("VMI started by request", lambda: cluster.vmi(ns, "manual"))
    wait_for(
        "start request trimmed", lambda: not cluster.vm(ns, "manual")["status"].get("stateChangeRequests")
    )
    cluster.kube.patch(
        VMS,
        ns,
        "manual",
        {"status": {"stateChangeRequests": [{"action": "Stop", "uid": vmi["metadata"]["uid"]}]}},
        subresource="status",
    )
    wait_for("VMI stopped by request", lambda: cluster.vmi(ns, "manual") is None)
    holds("Manual does not restart", lambda: cluster.vmi(ns, "manual") is None, 3)

    # Halted + start request flips to Always; legacy running: false flips to running: true.
    for name in ("halted", "legacy"):
        cluster.kube.patch(
            VMS, ns, name, {"status": {"stateChangeRequests": [{"action": "Start"}]}}, subresource="status"
        )
    wait_for("Halted became Always", lambda: cluster.vm(ns, "halted")["spec"].get("runStrategy") == "Always")
    wait_for("legacy running: true", lambda: cluster.vm(ns, "legacy")["spec"].get("running") is True)
    wait_for("VMIs started", lambda: cluster.vmi(ns, "halted") and cluster.vmi(ns, "legacy"))


def test_replica_set_scales_0_2_0(cluster: Cluster) -> None:
    ns = cluster.namespace()
    template = vm_manifest("x")["spec"]["template"]
    template["metadata"]["labels"] = {"app": "rs"}
    cluster.kube.create(
        VMIRS,
        ns,
        {
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceReplicaSet",
            "metadata": {"name": "rs"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "rs"}}, "template": template},
        },
    )
    wait_for(
        "status 0",
        lambda: (cluster.kube.get(VMIRS, ns, "rs").get("status") or {}).get("labelSelector") == "app=rs",
    )
    holds("no VMIs at 0", lambda: not cluster.kube.list(VMIS, ns)["items"], 2)
    cluster.kube.patch(VMIRS, ns, "rs", {"spec": {"replicas": 2}})
    vmis = wait_for(
        "2 VMIs", lambda: (items := cluster.kube.list(VMIS, ns)["items"]) and len(items) == 2 and items
    )
    for v in vmis:
        assert v["metadata"]["name"].startswith("rs")
        assert v["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachineInstanceReplicaSet"
    wait_for("2 launcher pods", lambda: len(cluster.launcher_pods(ns)) == 2)
    holds("exactly 2", lambda: len(cluster.kube.list(VMIS, ns)["items"]) == 2, 2)
    wait_for("status replicas 2", lambda: cluster.kube.get(VMIRS, ns, "rs")["status"].get("replicas") == 2)
    cluster.kube.patch(VMIRS, ns, "rs", {"spec": {"replicas": 0}})
    wait_for("0 VMIs", lambda: not cluster.kube.list(VMIS, ns)["items"])
    wait_for("0 pods", lambda: not cluster.launcher_pods(ns))
    wait_for("status replicas 0", lambda: cluster.kube.get(VMIRS, ns, "rs")["status"].get("replicas") == 0)


def test_too_big_vm_is_error_unschedulable(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.kube.create(VMS, ns, vm_manifest("huge", memory="64Gi"))
    wait_for("ErrorUnschedulable", lambda: cluster.printable(ns, "huge") == "ErrorUnschedulable")
    vmi = cluster.vmi(ns, "huge")
    cond = next(c for c in vmi["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert re.fullmatch(
        r"0/\d+ nodes are available: (.*, )?\d+ Insufficient memory(, .*)?\.", cond["message"]
    )
    events = [e for e in cluster.events(ns) if e["reason"] == "FailedScheduling"]
    assert events and events[0]["type"] == "Warning" and "Insufficient memory" in events[0]["message"]
    assert not cluster.launcher_pods(ns)[0]["spec"].get("nodeName")


def test_missing_pvc_is_error_pvc_not_found(cluster: Cluster) -> None:
    ns = cluster.namespace()
    volumes = [{"name": "root", "persistentVolumeClaim": {"claimName": "nope"}}]
    cluster.kube.create(VMS, ns, vm_manifest("pvc", volumes=volumes))
    wait_for("ErrorPvcNotFound", lambda: cluster.printable(ns, "pvc") == "ErrorPvcNotFound")
    assert not cluster.launcher_pods(ns)
    cluster.kube.create(
        PVCS,
        ns,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "nope"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    wait_for("pod created once the PVC exists", lambda: cluster.launcher_pods(ns))
    pod = cluster.launcher_pods(ns)[0]
    assert pod["spec"]["volumes"] == [{"name": "root", "persistentVolumeClaim": {"claimName": "nope"}}]


def test_unresponsive_node_goes_not_ready_and_its_vmis_fail(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.add_node("node2", labels={"pool": "flaky"})
    manifest = vm_manifest("flaky", "Once")
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "flaky"}
    cluster.kube.create(VMS, ns, manifest)
    pod = cluster.start_guest(ns, "flaky")
    assert pod["spec"]["nodeName"] == "node2"
    cluster.stop_heartbeat("node2")
    vmi = wait_for(
        "VMI Failed",
        lambda: (v := cluster.vmi(ns, "flaky")) and v["status"].get("phase") == "Failed" and v,
        timeout=HEARTBEAT_TIMEOUT * 4,
    )
    assert vmi["status"]["reason"] == "NodeUnresponsive"
    node = cluster.kube.get(NODES, None, "node2")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "Unknown"
    assert any(t["key"] == "node.kubernetes.io/unreachable" for t in node["spec"]["taints"])
    assert any(e["reason"] == "NodeUnresponsive" for e in cluster.events(ns))
    # Deleting the VM cleans up even though node2's agent will never confirm the pod's end.
    cluster.kube.delete(VMS, ns, "flaky")
    wait_for("VMI gone", lambda: cluster.vmi(ns, "flaky") is None)
    wait_for("pod gone", lambda: not cluster.launcher_pods(ns))
    cluster.kube.delete(NODES, None, "node2")


def test_kill_9_mid_creation_makes_no_duplicates(cluster: Cluster) -> None:
    ns = cluster.namespace()
    names = [f"k{i}" for i in range(6)]
    for round_ in range(2):
        for name in names:
            cluster.kube.create(VMS, ns, vm_manifest(f"{name}-{round_}"))
        time.sleep(0.3 + 0.2 * round_)  # the controller is busy creating VMIs and pods
        cluster.kill_controller()
        cluster.start_controller()
        for name in names:
            vm_name = f"{name}-{round_}"
            vmi = wait_for(f"VMI {vm_name}", lambda n=vm_name: cluster.vmi(ns, n), timeout=WAIT * 2)
            wait_for(f"pod of {vm_name}", lambda v=vmi: cluster.launcher_pods(ns, v["metadata"]["uid"]))
    holds(
        "exactly one VMI and one pod per VM",
        lambda: (
            len(cluster.kube.list(VMIS, ns)["items"]) == 2 * len(names)
            and len(cluster.launcher_pods(ns)) == 2 * len(names)
            and all(
                len(cluster.launcher_pods(ns, v["metadata"]["uid"])) == 1
                for v in cluster.kube.list(VMIS, ns)["items"]
            )
        ),
        4,
    )
    assert cluster.controller_runs >= 3


def test_instancetype_and_preference_are_expanded_into_the_vmi(cluster: Cluster) -> None:
    ns = cluster.namespace()
    manifest = vm_manifest("sized")
    del manifest["spec"]["template"]["spec"]["domain"]["memory"]
    manifest["spec"]["instancetype"] = {"kind": "VirtualMachineInstancetype", "name": "medium"}
    manifest["spec"]["preference"] = {"name": "cores"}  # cluster-wide by default
    cluster.kube.create(VMS, ns, manifest)
    wait_for(
        "FailedCreate while the instancetype is missing",
        lambda: any(
            e["reason"] == "FailedCreate" and "VirtualMachineInstancetype" in e["message"]
            for e in cluster.events(ns)
        ),
    )
    assert cluster.vmi(ns, "sized") is None
    docs = [
        {
            "apiVersion": "instancetype.kubevirt.io/v1beta1",
            "kind": "VirtualMachineClusterPreference",
            "metadata": {"name": "cores"},
            "spec": {"cpu": {"preferredCPUTopology": "cores"}},
        },
        {
            "apiVersion": "instancetype.kubevirt.io/v1beta1",
            "kind": "VirtualMachineInstancetype",
            "metadata": {"name": "medium", "namespace": ns},
            "spec": {"cpu": {"guest": 2}, "memory": {"guest": "192Mi"}},
        },
    ]
    path = cluster.tmp / f"instancetype-{ns}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cluster.kubectl("apply", "-f", str(path))
    vmi = wait_for("VMI once the instancetype exists", lambda: cluster.vmi(ns, "sized"), timeout=WAIT)
    domain = vmi["spec"]["domain"]
    assert domain["memory"]["guest"] == "192Mi"
    assert domain["cpu"]["cores"] == 2 and domain["cpu"].get("sockets", 1) == 1
    annotations = vmi["metadata"]["annotations"]
    assert annotations["kubevirt.io/instancetype-name"] == "medium"
    assert annotations["kubevirt.io/cluster-preference-name"] == "cores"
    pod = wait_for("launcher pod", lambda: cluster.launcher_pods(ns, vmi["metadata"]["uid"]))[0]
    # The pod is sized from the expanded VMI: 192Mi + KubeVirt's overhead for 192Mi / 2 vCPUs.
    assert pod["spec"]["containers"][0]["resources"]["requests"]["memory"] == "500096Ki"
