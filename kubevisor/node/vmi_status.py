"""The part of a running VMI's status that the node writes, from what it sees of the domain (pure).

KubeVirt splits the VMI status between virt-controller (phase up to Scheduled, Ready from
the launcher pod, activePods) and virt-handler (what the domain says). This is the handler's
part: the Paused, AgentConnected and SoftwareEmulation conditions, the interfaces (pod IP for
a masquerade interface, as KubeVirt reports it, plus MAC and guest name from the agent),
guestOSInfo, the machine type, the current CPU topology and memory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubevisor.controller.vmi_status import remove_condition, set_condition

Obj = dict[str, Any]

COND_PAUSED = "Paused"
COND_AGENT_CONNECTED = "AgentConnected"
COND_SOFTWARE_EMULATION = "SoftwareEmulation"


@dataclass(frozen=True)
class DomainFacts:
    paused: bool
    accel: str  # kvm | tcg | '' (unknown)
    agent_connected: bool
    pod_ip: str = ""
    os_info: Obj = field(default_factory=dict)
    guest_interfaces: list[Obj] = field(default_factory=list)  # from guest_info.guest_interfaces
    hostname: str = ""


def _conditions(conditions: list[Obj], facts: DomainFacts, now: str) -> list[Obj]:
    if facts.paused:
        conditions = set_condition(conditions, {
            "type": COND_PAUSED, "status": "True", "reason": "PausedByUser",
            "message": "VMI was paused by user",
        }, now)
    else:
        conditions = remove_condition(conditions, COND_PAUSED)
    if facts.agent_connected:
        conditions = set_condition(conditions, {
            "type": COND_AGENT_CONNECTED, "status": "True", "reason": "", "message": "",
        }, now)
    else:
        conditions = remove_condition(conditions, COND_AGENT_CONNECTED)
    if facts.accel == "tcg":
        conditions = set_condition(conditions, {
            "type": COND_SOFTWARE_EMULATION, "status": "True", "reason": "TCG",
            "message": "KVM is not usable on this node: the guest runs under software emulation (TCG)",
        }, now)
    elif facts.accel:
        conditions = remove_condition(conditions, COND_SOFTWARE_EMULATION)
    return conditions


def _interfaces(vmi: Obj, facts: DomainFacts) -> list[Obj]:
    spec = vmi.get("spec") or {}
    pod_networks = {n.get("name") for n in spec.get("networks") or [] if "pod" in n}
    guest = list(facts.guest_interfaces)
    out: list[Obj] = []
    for iface in ((spec.get("domain") or {}).get("devices") or {}).get("interfaces") or []:
        name = iface.get("name")
        entry: Obj = {"name": name, "infoSource": "domain"}
        mac = iface.get("macAddress")
        seen = next((g for g in guest if mac and str(g.get("mac", "")).lower() == str(mac).lower()), None)
        if seen is None and not mac and guest:
            seen = guest[0]  # one pod interface: the guest's first non-loopback NIC is it
        if seen is not None:
            guest.remove(seen)
            entry["infoSource"] = "domain, guest-agent"
            if seen.get("interfaceName"):
                entry["interfaceName"] = seen["interfaceName"]
            if seen.get("mac"):
                entry["mac"] = seen["mac"]
        elif mac:
            entry["mac"] = mac
        if name in pod_networks and "masquerade" in iface and facts.pod_ip:
            entry["ipAddress"] = facts.pod_ip
            entry["ipAddresses"] = [facts.pod_ip]
        elif seen is not None and seen.get("ipAddresses"):
            addrs = [str(a).split("/")[0] for a in seen["ipAddresses"]]
            entry["ipAddress"], entry["ipAddresses"] = addrs[0], addrs
        if name in pod_networks:
            entry["podInterfaceName"] = "eth0"
        out.append(entry)
    return out


def node_vmi_status(vmi: Obj, facts: DomainFacts, now: str) -> Obj:
    """The VMI's status with the node's fields brought up to date (a new dict)."""
    status = copy.deepcopy(vmi.get("status") or {})
    status["conditions"] = _conditions(list(status.get("conditions") or []), facts, now)
    status["interfaces"] = _interfaces(vmi, facts)
    if facts.os_info:
        status["guestOSInfo"] = dict(facts.os_info)
    domain = (vmi.get("spec") or {}).get("domain") or {}
    machine = (domain.get("machine") or {}).get("type")
    if machine:
        status["machine"] = {"type": machine}
    cpu = domain.get("cpu") or {}
    status["currentCPUTopology"] = {
        "sockets": int(cpu.get("sockets") or 1),
        "cores": int(cpu.get("cores") or 1),
        "threads": int(cpu.get("threads") or 1),
    }
    guest = (domain.get("memory") or {}).get("guest") or (
        ((domain.get("resources") or {}).get("requests") or {}).get("memory"))
    if guest:
        status["memory"] = {"guestAtBoot": guest, "guestCurrent": guest, "guestRequested": guest}
    return status
