"""Node registration objects and pod status reports of the node agent (pure)."""

from pathlib import Path

import pytest

from kubevisor.node.node_object import (
    Capacity,
    NodeError,
    check_node_name,
    host_capacity,
    lease_object,
    node_object,
)
from kubevisor.node.pod_status import rejected_status, running_status, terminated_status

POD = {
    "metadata": {"name": "virt-launcher-a-bcdfg"},
    "spec": {"containers": [{"name": "compute", "image": "img"}]},
}


def test_node_object_capacity_labels_cidr():
    node = node_object(
        "n1", Capacity(cpu=2, memory_bytes=4 * 2**30, kvm=1000), "10.0.0.1", "10.244.0.0/24", "t"
    )
    assert node["metadata"]["labels"]["kubevirt.io/schedulable"] == "true"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    assert node["spec"] == {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    alloc = node["status"]["allocatable"]
    assert alloc == {"cpu": "2", "memory": "4194304Ki", "pods": "110", "devices.kubevirt.io/kvm": "1000"}
    ready = node["status"]["conditions"][0]
    assert (ready["type"], ready["status"], ready["lastHeartbeatTime"]) == ("Ready", "True", "t")
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "10.0.0.1"}


def test_host_capacity_reads_meminfo_and_kvm(tmp_path: Path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree: 1 kB\n")
    cap = host_capacity(meminfo, tmp_path / "no-kvm")
    assert cap.memory_bytes == 24000000 * 1024 and cap.kvm == 0 and cap.cpu >= 1
    (tmp_path / "kvm").touch()
    assert host_capacity(meminfo, tmp_path / "kvm").kvm == 1000


def test_node_name_validation():
    assert check_node_name("node-1.example") == "node-1.example"
    with pytest.raises(NodeError, match="--node-name"):
        check_node_name("Bad_Name")


def test_lease():
    lease = lease_object("n1", "2026-01-01T00:00:00.000000Z")
    assert lease["metadata"] == {"name": "n1", "namespace": "kube-node-lease"}
    assert lease["spec"]["holderIdentity"] == "n1" and lease["spec"]["leaseDurationSeconds"] == 40


def test_running_and_terminated_pod_status():
    running = running_status(POD, "10.0.0.1", "s", "n")
    assert running["phase"] == "Running"
    assert {c["type"]: c["status"] for c in running["conditions"]}["Ready"] == "True"
    assert running["containerStatuses"][0]["state"] == {"running": {"startedAt": "s"}}
    ok = terminated_status(POD, "10.0.0.1", "s", 0, "n")
    assert (
        ok["phase"] == "Succeeded"
        and ok["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    )
    bad = terminated_status(POD, "10.0.0.1", None, 137, "n", "killed")
    assert bad["phase"] == "Failed"
    assert bad["containerStatuses"][0]["state"]["terminated"] == {
        "exitCode": 137,
        "reason": "Error",
        "finishedAt": "n",
        "message": "killed",
    }
    assert rejected_status("UnsupportedPod", "m") == {
        "phase": "Failed",
        "reason": "UnsupportedPod",
        "message": "m",
    }
