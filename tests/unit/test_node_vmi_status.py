"""The node's part of a VMI's status from domain facts, and guest agent answers in KubeVirt's shapes."""

from __future__ import annotations

from typing import Any

from kubevisor.node.guest_info import agent_info, guest_interfaces, os_info
from kubevisor.node.vmi_status import DomainFacts, node_vmi_status

NOW = "2026-12-04T00:00:00Z"
LATER = "2026-12-04T00:05:00Z"


def vmi(**spec_extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "domain": {
            "cpu": {"cores": 2, "sockets": 1, "threads": 1},
            "memory": {"guest": "512Mi"},
            "machine": {"type": "q35"},
            "devices": {"interfaces": [{"name": "default", "masquerade": {}}]},
        },
        "networks": [{"name": "default", "pod": {}}],
    }
    spec.update(spec_extra)
    return {
        "metadata": {"name": "v", "namespace": "ns", "uid": "u1"},
        "spec": spec,
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


GUEST_IFACES = [{"interfaceName": "eth0", "mac": "52:54:00:12:34:56", "ipAddresses": ["10.0.2.2/24"]}]


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_running_tcg_guest_with_agent() -> None:
    facts = DomainFacts(paused=False, accel="tcg", agent_connected=True, pod_ip="192.0.2.7",
                        os_info={"id": "kubevisor"}, guest_interfaces=GUEST_IFACES)
    status = node_vmi_status(vmi(), facts, NOW)
    conds = conditions(status)
    assert conds["SoftwareEmulation"]["status"] == "True" and conds["SoftwareEmulation"]["reason"] == "TCG"
    assert conds["AgentConnected"]["status"] == "True"
    assert "Paused" not in conds and conds["Ready"]["status"] == "True"  # Ready is the controller's
    (iface,) = status["interfaces"]
    # masquerade reports the pod IP, as KubeVirt does; name and MAC come from the agent
    assert iface == {"name": "default", "infoSource": "domain, guest-agent", "interfaceName": "eth0",
                     "mac": "52:54:00:12:34:56", "ipAddress": "192.0.2.7", "ipAddresses": ["192.0.2.7"],
                     "podInterfaceName": "eth0"}
    assert status["guestOSInfo"] == {"id": "kubevisor"}
    assert status["currentCPUTopology"] == {"sockets": 1, "cores": 2, "threads": 1}
    assert status["memory"]["guestAtBoot"] == "512Mi" and status["machine"] == {"type": "q35"}
    assert status["phase"] == "Running"


def test_pause_sets_the_condition_and_unpause_removes_it() -> None:
    v = vmi()
    paused = node_vmi_status(v, DomainFacts(paused=True, accel="tcg", agent_connected=False), NOW)
    cond = conditions(paused)["Paused"]
    assert cond["status"] == "True" and cond["reason"] == "PausedByUser"
    assert cond["lastTransitionTime"] == NOW
    v["status"] = paused
    again = node_vmi_status(v, DomainFacts(paused=True, accel="tcg", agent_connected=False), LATER)
    assert conditions(again)["Paused"]["lastTransitionTime"] == NOW  # unchanged status keeps its time
    assert again == paused  # nothing to write: an idle node makes no writes
    v["status"] = again
    resumed = node_vmi_status(v, DomainFacts(paused=False, accel="tcg", agent_connected=False), LATER)
    assert "Paused" not in conditions(resumed) and "AgentConnected" not in conditions(resumed)


def test_kvm_has_no_software_emulation_and_unknown_keeps_what_was_said() -> None:
    v = vmi()
    v["status"]["conditions"].append({"type": "SoftwareEmulation", "status": "True"})
    assert "SoftwareEmulation" not in conditions(
        node_vmi_status(v, DomainFacts(paused=False, accel="kvm", agent_connected=False), NOW))
    assert "SoftwareEmulation" in conditions(
        node_vmi_status(v, DomainFacts(paused=False, accel="", agent_connected=False), NOW))


def test_interfaces_without_agent_and_matching_by_mac() -> None:
    v = vmi()
    v["spec"]["domain"]["devices"]["interfaces"][0]["macAddress"] = "02:00:00:00:00:01"
    (plain,) = node_vmi_status(v, DomainFacts(paused=False, accel="tcg", agent_connected=False,
                                              pod_ip="192.0.2.7"), NOW)["interfaces"]
    assert plain["infoSource"] == "domain" and plain["mac"] == "02:00:00:00:00:01"
    assert plain["ipAddress"] == "192.0.2.7"
    other_nic = [{"interfaceName": "eth9", "mac": "02:00:00:00:00:99", "ipAddresses": ["10.9.0.1/8"]}]
    (iface,) = node_vmi_status(v, DomainFacts(paused=False, accel="tcg", agent_connected=True,
                                              guest_interfaces=other_nic), NOW)["interfaces"]
    assert "interfaceName" not in iface  # the agent's NIC has another MAC: not this interface


def test_a_non_masquerade_interface_reports_the_guest_address() -> None:
    v = vmi()
    v["spec"]["domain"]["devices"]["interfaces"] = [{"name": "default", "bridge": {}}]
    facts = DomainFacts(paused=False, accel="tcg", agent_connected=True, pod_ip="192.0.2.7",
                        guest_interfaces=GUEST_IFACES)
    (iface,) = node_vmi_status(v, facts, NOW)["interfaces"]
    assert iface["ipAddress"] == "10.0.2.2" and iface["ipAddresses"] == ["10.0.2.2"]


def test_guest_agent_answers_in_kubevirt_shapes() -> None:
    assert os_info({"kernel-release": "6.1", "pretty-name": "X", "id": "x", "version-id": ""}) == {
        "kernelRelease": "6.1", "prettyName": "X", "id": "x"}
    assert os_info(None) == {}
    version, commands = agent_info({"version": "7.2", "supported_commands": [
        {"name": "guest-ping", "enabled": True}, {"name": "guest-exec", "enabled": False}, {"bad": 1}]})
    assert version == "7.2"
    assert commands == [{"name": "guest-ping", "enabled": True}, {"name": "guest-exec", "enabled": False}]
    ifaces = guest_interfaces([
        {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1", "prefix": 8}]},
        {"name": "eth0", "hardware-address": "52:54:00:12:34:56",
         "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "10.0.2.2", "prefix": 24},
                          {"ip-address-type": "ipv6", "ip-address": "fd10::2"}]},
    ])
    assert ifaces == [{"interfaceName": "eth0", "mac": "52:54:00:12:34:56",
                       "ipAddresses": ["10.0.2.2/24", "fd10::2"]}]
