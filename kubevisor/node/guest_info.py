"""Guest agent answers turned into KubeVirt's shapes (pure, apart from asking the agent).

- `guest_os_info(agent)`: the `guestosinfo` subresource, KubeVirt's
  VirtualMachineInstanceGuestAgentInfo (guestAgentVersion, supportedCommands, hostname, os,
  timezone).
- `os_info(osinfo)`: `status.guestOSInfo` of a VMI from `guest-get-osinfo`.
- `guest_interfaces(ifaces)`: interface name, MAC and addresses from
  `guest-network-get-interfaces`, loopback left out.
"""

from __future__ import annotations

import contextlib
from typing import Any

from kubevisor.hypervisor.guest_agent import GuestAgent, GuestAgentError

Obj = dict[str, Any]

_OS_FIELDS = {
    "name": "name",
    "kernel-release": "kernelRelease",
    "version": "version",
    "pretty-name": "prettyName",
    "version-id": "versionId",
    "kernel-version": "kernelVersion",
    "machine": "machine",
    "id": "id",
}


def os_info(osinfo: Any) -> Obj:
    if not isinstance(osinfo, dict):
        return {}
    return {ours: str(osinfo[theirs]) for theirs, ours in _OS_FIELDS.items() if osinfo.get(theirs)}


def agent_info(info: Any) -> tuple[str, list[Obj]]:
    """(agent version, supported commands) from `guest-info`."""
    if not isinstance(info, dict):
        return "", []
    commands = [
        {"name": str(c.get("name")), "enabled": bool(c.get("enabled", True))}
        for c in info.get("supported_commands") or []
        if isinstance(c, dict) and c.get("name")
    ]
    return str(info.get("version") or ""), commands


def guest_interfaces(ifaces: Any) -> list[Obj]:
    out: list[Obj] = []
    for iface in ifaces if isinstance(ifaces, list) else []:
        if not isinstance(iface, dict) or iface.get("name") == "lo":
            continue
        addrs = [
            f"{a['ip-address']}/{a['prefix']}" if "prefix" in a else str(a["ip-address"])
            for a in iface.get("ip-addresses") or []
            if isinstance(a, dict) and a.get("ip-address")
        ]
        entry: Obj = {"interfaceName": str(iface.get("name") or "")}
        if iface.get("hardware-address"):
            entry["mac"] = str(iface["hardware-address"])
        if addrs:
            entry["ipAddresses"] = addrs
        out.append(entry)
    return out


async def guest_os_info(agent: GuestAgent) -> Obj:
    """Ask the agent; GuestAgentError when it does not answer `guest-info`."""
    version, commands = agent_info(await agent.execute("guest-info"))
    result: Obj = {"guestAgentVersion": version, "supportedCommands": commands}
    supported = {c["name"] for c in commands if c["enabled"]}
    if "guest-get-host-name" in supported:
        with contextlib.suppress(GuestAgentError):
            host = await agent.execute("guest-get-host-name")
            result["hostname"] = str((host or {}).get("host-name") or "")
    if "guest-get-osinfo" in supported:
        with contextlib.suppress(GuestAgentError):
            result["os"] = os_info(await agent.execute("guest-get-osinfo"))
    if "guest-get-timezone" in supported:
        with contextlib.suppress(GuestAgentError):
            tz = await agent.execute("guest-get-timezone") or {}
            result["timezone"] = f"{tz.get('zone', '')}, {tz.get('offset', 0)}"
    return result
