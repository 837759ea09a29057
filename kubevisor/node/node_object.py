"""The Node and Lease a node agent registers and heartbeats (pure, apart from reading /proc).

Capacity: cpu (host CPUs), memory (MemTotal), pods, devices.kubevirt.io/kvm (KubeVirt's
device plugin advertises 1000 slots where /dev/kvm exists, 0 otherwise). Labels include
`kubevirt.io/schedulable=true`, which launcher pods select, and the usual
`kubernetes.io/{hostname,os,arch}`.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

KVM_RESOURCE = "devices.kubevirt.io/kvm"
KVM_SLOTS = 1000  # KubeVirt's device plugin default (--max-devices)
NODE_LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40  # seconds, as kubelet's
AGENT_VERSION = "kubevisor-node"
# HOST:PORT of the node agent's access server (mutual TLS), where the apiserver reaches VMIs.
ACCESS_ENDPOINT_ANNOTATION = "kubevisor.io/access-endpoint"

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class NodeError(ValueError):
    pass


@dataclass(frozen=True)
class Capacity:
    cpu: int
    memory_bytes: int
    pods: int = 110
    kvm: int = 0


def check_node_name(name: str) -> str:
    if not _NODE_NAME.match(name):
        raise NodeError(f"--node-name: {name!r} is not a valid node name (lowercase DNS subdomain)")
    return name


def host_capacity(meminfo: Path = Path("/proc/meminfo"), kvm: Path = Path("/dev/kvm")) -> Capacity:
    mem_kib = 0
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
            break
    return Capacity(
        cpu=os.cpu_count() or 1, memory_bytes=mem_kib * 1024, kvm=KVM_SLOTS if kvm.exists() else 0
    )


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def ready_condition(now: str, transition: str | None = None) -> Obj:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubevisor node agent is posting ready status",
        "lastHeartbeatTime": now,
        "lastTransitionTime": transition or now,
    }


def node_status(cap: Capacity, address: str, now: str, transition: str | None = None) -> Obj:
    resources = {
        "cpu": str(cap.cpu),
        "memory": f"{cap.memory_bytes // 1024}Ki",
        "pods": str(cap.pods),
        KVM_RESOURCE: str(cap.kvm),
    }
    return {
        "capacity": dict(resources),
        "allocatable": dict(resources),
        "conditions": [ready_condition(now, transition)],
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": platform.node()},
        ],
        "nodeInfo": {
            "architecture": _arch(),
            "operatingSystem": "linux",
            "kernelVersion": platform.release(),
            "kubeletVersion": AGENT_VERSION,
            "containerRuntimeVersion": "kubevisor://embedded",
            "kubeProxyVersion": "",
            "osImage": "",
            "bootID": "",
            "machineID": "",
            "systemUUID": "",
        },
    }


def node_object(name: str, cap: Capacity, address: str, pod_cidr: str | None, now: str) -> Obj:
    spec: Obj = {}
    if pod_cidr:
        spec["podCIDR"] = pod_cidr
        spec["podCIDRs"] = [pod_cidr]
    status = node_status(cap, address, now)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": _arch(),
                "kubevirt.io/schedulable": "true",
            },
        },
        "spec": spec,
        "status": status,
    }


def lease_object(name: str, now_micro: str) -> Obj:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": NODE_LEASE_NAMESPACE},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": now_micro},
    }
