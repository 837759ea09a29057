"""Scheduling decisions for the embedded scheduler (pure): filter nodes, score, explain.

Filters as kube-scheduler's default plugins: NodeUnschedulable, NodeAffinity (nodeSelector
+ required node affinity), TaintToleration (NoSchedule/NoExecute), NodeResourcesFit
(requests against allocatable minus what pods already bound there request, including
pod count and extended resources such as devices.kubevirt.io/kvm). Among feasible nodes
the least allocated wins (ties by name). A pod that fits nowhere gets kube-scheduler's
message, e.g. "0/1 nodes are available: 1 Insufficient memory."
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubevisor.controller.quantity import to_millis
from kubevisor.controller.selectors import node_matches_pod_affinity

Obj = dict[str, Any]

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_TOO_MANY_PODS = "Too many pods"


def _millis(value: Any) -> int:
    try:
        return to_millis(value)
    except ValueError:
        return 0


def pod_requests(pod: Obj) -> dict[str, int]:
    """Effective requests in milli-units: sum over containers, max with each init container."""
    spec = pod.get("spec") or {}
    total: Counter[str] = Counter()
    for c in spec.get("containers") or []:
        for name, value in ((c.get("resources") or {}).get("requests") or {}).items():
            total[name] += _millis(value)
        # An extended resource given only as a limit is also its request.
        for name, value in ((c.get("resources") or {}).get("limits") or {}).items():
            if "/" in name and name not in ((c.get("resources") or {}).get("requests") or {}):
                total[name] += _millis(value)
    for c in spec.get("initContainers") or []:
        for name, value in ((c.get("resources") or {}).get("requests") or {}).items():
            total[name] = max(total[name], _millis(value))
    for name, value in (spec.get("overhead") or {}).items():
        total[name] += _millis(value)
    total["pods"] = 1000
    return dict(total)


def node_allocatable(node: Obj) -> dict[str, int]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return {name: _millis(value) for name, value in alloc.items()}


def is_terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class NodeUsage:
    """The requests of the bound, non-terminal pods, per node; updated one pod change at a time."""

    def __init__(self) -> None:
        self._pods: dict[str, tuple[str, dict[str, int]]] = {}
        self._nodes: dict[str, Counter[str]] = {}

    def update(self, key: str, pod: Obj | None) -> None:
        """The pod at `key` is now `pod` (None: deleted)."""
        previous = self._pods.pop(key, None)
        if previous is not None:
            self._nodes[previous[0]].subtract(previous[1])
        node = ((pod or {}).get("spec") or {}).get("nodeName")
        if pod is not None and node and not is_terminal(pod):
            requests = pod_requests(pod)
            self._pods[key] = (str(node), requests)
            self._nodes.setdefault(str(node), Counter()).update(requests)

    def snapshot(self) -> dict[str, Counter[str]]:
        return {node: +used for node, used in self._nodes.items() if +used}


def used_by_node(pods: Iterable[Obj]) -> dict[str, Counter[str]]:
    usage = NodeUsage()
    for i, pod in enumerate(pods):
        usage.update(str(i), pod)
    return usage.snapshot()


def toleration_matches(toleration: Obj, taint: Obj) -> bool:
    effect = toleration.get("effect")
    if effect and effect != taint.get("effect"):
        return False
    op = toleration.get("operator") or "Equal"
    key = toleration.get("key") or ""
    if op == "Exists":
        return not key or key == taint.get("key")
    return key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated_taint(pod: Obj, node: Obj) -> Obj | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(toleration_matches(t, taint) for t in tolerations):
            return taint
    return None


def filter_node(pod: Obj, node: Obj, used: Counter[str] | None) -> list[str]:
    """Why `pod` cannot go to `node` (empty list: it fits)."""
    spec = pod.get("spec") or {}
    node_spec = node.get("spec") or {}
    if node_spec.get("unschedulable"):
        unsched = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
        if not any(toleration_matches(t, unsched) for t in spec.get("tolerations") or []):
            return [REASON_UNSCHEDULABLE]
    if not node_matches_pod_affinity(spec, node):
        return [REASON_AFFINITY]
    taint = untolerated_taint(pod, node)
    if taint is not None:
        return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]
    requests = pod_requests(pod)
    alloc = node_allocatable(node)
    used = used or Counter()
    reasons: list[str] = []
    for name, want in sorted(requests.items()):
        if want <= 0:
            continue
        if name not in alloc and name in ("cpu", "memory", "ephemeral-storage"):
            continue  # a node that does not report a basic resource is not limited by it
        free = alloc.get(name, 0) - used.get(name, 0)
        if want > free:
            reasons.append(REASON_TOO_MANY_PODS if name == "pods" else f"Insufficient {name}")
    return reasons


def score_node(pod: Obj, node: Obj, used: Counter[str] | None) -> float:
    """LeastAllocated: mean free fraction of cpu and memory after placing the pod."""
    alloc = node_allocatable(node)
    req = pod_requests(pod)
    used = used or Counter()
    fractions = []
    for name in ("cpu", "memory"):
        cap = alloc.get(name, 0)
        if cap <= 0:
            continue
        fractions.append(max(0.0, (cap - used.get(name, 0) - req.get(name, 0)) / cap))
    return sum(fractions) / len(fractions) if fractions else 0.0


@dataclass(frozen=True)
class Decision:
    node: str | None
    message: str


def failed_scheduling_message(total: int, reasons: Counter[str]) -> str:
    parts = sorted(f"{count} {reason}" for reason, count in reasons.items())
    text = f"0/{total} nodes are available"
    return f"{text}: {', '.join(parts)}." if parts else f"{text}."


def schedule(pod: Obj, nodes: list[Obj], used: dict[str, Counter[str]]) -> Decision:
    reasons: Counter[str] = Counter()
    feasible: list[tuple[float, str]] = []
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name"))
        why = filter_node(pod, node, used.get(name))
        if why:
            reasons.update(why)
        else:
            feasible.append((score_node(pod, node, used.get(name)), name))
    if not feasible:
        return Decision(None, failed_scheduling_message(len(nodes), reasons))
    _, best = min(feasible, key=lambda item: (-item[0], item[1]))
    return Decision(best, "")


def unschedulable_condition(message: str, now: str) -> Obj:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
