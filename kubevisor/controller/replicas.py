"""VMI replica sets (pure): how many VMIs to create, which to delete, the status to report.

Finished VMIs (Succeeded/Failed) are deleted and replaced, as KubeVirt's VMIRS does. On
scale-down the least valuable go first, like ReplicaSets: not yet on a node before
scheduled, not Running before Running, not Ready before Ready, newest before oldest.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from kubevisor.controller.selectors import label_selector_matches, label_selector_string
from kubevisor.controller.vmi_status import (
    RUNNING,
    SCHEDULED,
    being_deleted,
    get_condition,
    is_final,
    phase_of,
)

Obj = dict[str, Any]

BURST_REPLICAS = 250  # at most this many creates/deletes per sync, like KubeVirt


@dataclass
class ReplicaPlan:
    create: int = 0
    delete: list[Obj] = field(default_factory=list)


def desired_replicas(rs: Obj) -> int:
    replicas = (rs.get("spec") or {}).get("replicas")
    return 1 if replicas is None else max(0, int(replicas))


def is_ready(vmi: Obj) -> bool:
    cond = get_condition(vmi, "Ready")
    return cond is not None and cond.get("status") == "True"


def _deletion_rank(vmi: Obj) -> tuple[int, int, int]:
    """Ascending: the first are deleted first."""
    phase = phase_of(vmi)
    on_node = 1 if phase in (SCHEDULED, RUNNING) else 0
    running = 1 if phase == RUNNING else 0
    ready = 1 if is_ready(vmi) else 0
    return (on_node, running, ready)


def _created(vmi: Obj) -> str:
    return str((vmi.get("metadata") or {}).get("creationTimestamp") or "")


def plan(rs: Obj, vmis: list[Obj]) -> ReplicaPlan:
    """`vmis`: the VMIs this set controls (owned or adopted)."""
    out = ReplicaPlan()
    finished = [v for v in vmis if is_final(v) and not being_deleted(v)]
    active = [v for v in vmis if not is_final(v) and not being_deleted(v)]
    out.delete.extend(finished)
    want = desired_replicas(rs)
    diff = len(active) - want
    if diff < 0:
        out.create = min(-diff, BURST_REPLICAS)
    elif diff > 0:
        # Newest first within a rank: sort by creation descending, then (stably) by rank.
        ranked = sorted(sorted(active, key=_created, reverse=True), key=_deletion_rank)
        out.delete.extend(ranked[: min(diff, BURST_REPLICAS)])
    return out


def selector_of(rs: Obj) -> Obj | None:
    return (rs.get("spec") or {}).get("selector")


def matches(rs: Obj, vmi: Obj) -> bool:
    selector = selector_of(rs)
    if not selector:
        return False  # an empty selector would select everything: KubeVirt rejects it
    return label_selector_matches(selector, (vmi.get("metadata") or {}).get("labels") or {})


def vmi_from_template(rs: Obj, suffix: str) -> Obj:
    meta = rs["metadata"]
    template = (rs.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": f"{meta['name']}{suffix}",
            "namespace": meta.get("namespace") or "default",
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachineInstanceReplicaSet",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def compute_status(rs: Obj, vmis: list[Obj], failure: str | None, now: str) -> Obj:
    status = copy.deepcopy(rs.get("status") or {})
    active = [v for v in vmis if not is_final(v) and not being_deleted(v)]
    status["replicas"] = len(active)
    status["readyReplicas"] = sum(1 for v in active if is_ready(v))
    status["labelSelector"] = label_selector_string(selector_of(rs))
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
    if failure:
        conditions.append(
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": failure,
                "lastTransitionTime": now,
                "lastProbeTime": None,
            }
        )
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)
    return status
