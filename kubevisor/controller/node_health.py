"""Node heartbeat judgement (pure): when is a node unresponsive, and what follows.

A node agent heartbeats by renewing its Lease `kube-node-lease/<node>` (and by posting
its Ready condition). When neither has moved for the timeout the node is marked NotReady
(Ready=Unknown, reason NodeStatusUnknown, taints node.kubernetes.io/unreachable), so no
new pod goes there, and its VMIs that are not final are marked Failed with reason
NodeUnresponsive (KubeVirt's node controller), so their VMs can restart elsewhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubevisor.controller.leader import parse_time
from kubevisor.controller.vmi_status import FAILED, is_final

Obj = dict[str, Any]

UNREACHABLE_TAINT_KEY = "node.kubernetes.io/unreachable"
NODE_UNRESPONSIVE_REASON = "NodeUnresponsive"
HEARTBEAT_ANNOTATION = "kubevirt.io/heartbeat"  # what virt-handler writes on its node
DEFAULT_HEARTBEAT_TIMEOUT = 300.0  # KubeVirt: virt-handler heartbeat timeout 5 min


def ready_condition(node: Obj) -> Obj | None:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return None


def last_heartbeat(node: Obj, lease: Obj | None) -> dt.datetime | None:
    stamps = []
    if lease is not None:
        stamps.append(parse_time((lease.get("spec") or {}).get("renewTime")))
    cond = ready_condition(node)
    if cond is not None:
        stamps.append(parse_time(cond.get("lastHeartbeatTime")))
    meta = node.get("metadata") or {}
    stamps.append(parse_time((meta.get("annotations") or {}).get(HEARTBEAT_ANNOTATION)))
    stamps.append(parse_time(meta.get("creationTimestamp")))
    known = [s for s in stamps if s is not None]
    return max(known) if known else None


def seconds_until_stale(node: Obj, lease: Obj | None, now: dt.datetime, timeout: float) -> float:
    """<= 0: the node is unresponsive now; else how long it may stay silent."""
    beat = last_heartbeat(node, lease)
    if beat is None:
        return 0.0
    return (beat + dt.timedelta(seconds=timeout) - now).total_seconds()


def marked_unreachable(node: Obj) -> bool:
    return any(t.get("key") == UNREACHABLE_TAINT_KEY for t in (node.get("spec") or {}).get("taints") or [])


def not_ready_patch(node: Obj, now: str) -> tuple[list[Obj], list[Obj]]:
    """(new conditions, new taints) marking the node NotReady/unreachable."""
    conditions = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") != "Ready"]
    old = ready_condition(node) or {}
    conditions.append(
        {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Node agent stopped posting node status.",
            "lastHeartbeatTime": old.get("lastHeartbeatTime"),
            "lastTransitionTime": now
            if old.get("status") != "Unknown"
            else old.get("lastTransitionTime", now),
        }
    )
    taints = [
        t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != UNREACHABLE_TAINT_KEY
    ]
    taints.append({"key": UNREACHABLE_TAINT_KEY, "effect": "NoSchedule", "timeAdded": now})
    taints.append({"key": UNREACHABLE_TAINT_KEY, "effect": "NoExecute", "timeAdded": now})
    return conditions, taints


def reachable_taints(node: Obj) -> list[Obj]:
    return [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != UNREACHABLE_TAINT_KEY]


def vmis_to_fail(node_name: str, vmis: list[Obj]) -> list[Obj]:
    return [v for v in vmis if (v.get("status") or {}).get("nodeName") == node_name and not is_final(v)]


def failed_vmi_status(vmi: Obj, now: str) -> Obj:
    status = dict(vmi.get("status") or {})
    status["phase"] = FAILED
    status["reason"] = NODE_UNRESPONSIVE_REASON
    stamps = list(status.get("phaseTransitionTimestamps") or [])
    stamps.append({"phase": FAILED, "phaseTransitionTimestamp": now})
    status["phaseTransitionTimestamps"] = stamps
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
    conditions.append(
        {
            "type": "Ready",
            "status": "False",
            "reason": NODE_UNRESPONSIVE_REASON,
            "message": f"node {status.get('nodeName')} is unresponsive",
            "lastTransitionTime": now,
            "lastProbeTime": None,
        }
    )
    status["conditions"] = conditions
    return status
