"""VMI phase and conditions derived from the launcher pod (pure).

The controller's share of the VMI phase machine, as KubeVirt splits it:
  "" → Pending        the VMI is accepted; no launcher pod yet
  Pending → Scheduling  the launcher pod exists but is not running and ready
  Scheduling → Scheduled the pod runs and is ready on a node: the node agent takes over
  Scheduled → Running   written by the node agent once the guest runs (never here)
  → Succeeded / Failed  from the pod's end: pod Succeeded (the launcher exits 0 when the
                        guest powered itself off) → Succeeded if the guest had been
                        started, pod Failed or gone → Failed.
Final phases never change. A VMI being deleted whose pod is gone ends Succeeded if its
guest had started, Failed otherwise.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]

PENDING = "Pending"
SCHEDULING = "Scheduling"
SCHEDULED = "Scheduled"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
UNKNOWN = "Unknown"
FINAL_PHASES = (SUCCEEDED, FAILED)
STARTED_PHASES = (SCHEDULED, RUNNING)

COND_READY = "Ready"
COND_POD_SCHEDULED = "PodScheduled"
COND_SYNCHRONIZED = "Synchronized"
COND_PAUSED = "Paused"

REASON_FAILED_CREATE = "FailedCreate"
REASON_PVC_NOT_FOUND = "FailedPvcNotFound"


def phase_of(vmi: Obj | None) -> str:
    return str(((vmi or {}).get("status") or {}).get("phase") or "")


def is_final(vmi: Obj | None) -> bool:
    return phase_of(vmi) in FINAL_PHASES


def being_deleted(obj: Obj | None) -> bool:
    return bool(((obj or {}).get("metadata") or {}).get("deletionTimestamp"))


def pod_condition(pod: Obj | None, type_: str) -> Obj | None:
    for cond in ((pod or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def pod_phase(pod: Obj | None) -> str:
    return str(((pod or {}).get("status") or {}).get("phase") or "")


def pod_is_ready(pod: Obj | None) -> bool:
    cond = pod_condition(pod, "Ready")
    return pod_phase(pod) == "Running" and cond is not None and cond.get("status") == "True"


def next_phase(vmi: Obj, pod: Obj | None) -> str:
    current = phase_of(vmi)
    if current in FINAL_PHASES:
        return current
    if pod is None:
        if being_deleted(vmi):
            return SUCCEEDED if current in STARTED_PHASES else FAILED
        if current in ("", PENDING):
            return PENDING
        return FAILED  # the launcher pod vanished under a scheduled VMI
    pphase = pod_phase(pod)
    if pphase == "Succeeded":
        return SUCCEEDED if current in STARTED_PHASES else FAILED
    if pphase == "Failed":
        return FAILED
    if current in STARTED_PHASES or current == UNKNOWN:
        return current
    if being_deleted(pod):
        return FAILED  # the pod is going away before the guest ever started
    return SCHEDULED if pod_is_ready(pod) and (pod.get("spec") or {}).get("nodeName") else SCHEDULING


def get_condition(vmi: Obj | None, type_: str) -> Obj | None:
    for cond in ((vmi or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def set_condition(conditions: list[Obj], new: Obj, now: str) -> list[Obj]:
    """Replace the condition of new's type, keeping lastTransitionTime if the status is unchanged."""
    out = []
    found = False
    for cond in conditions:
        if cond.get("type") == new["type"]:
            found = True
            merged = dict(new)
            same = cond.get("status") == new.get("status")
            merged["lastTransitionTime"] = cond.get("lastTransitionTime") if same else now
            merged.setdefault("lastProbeTime", None)
            out.append(merged)
        else:
            out.append(cond)
    if not found:
        merged = dict(new)
        merged["lastTransitionTime"] = new.get("lastTransitionTime") or now
        merged.setdefault("lastProbeTime", None)
        out.append(merged)
    return out


def remove_condition(conditions: list[Obj], type_: str) -> list[Obj]:
    return [c for c in conditions if c.get("type") != type_]


def compute_status(vmi: Obj, pod: Obj | None, now: str, sync_error: tuple[str, str] | None = None) -> Obj:
    """The VMI status the controller wants, given its launcher pod (or None) and a sync error."""
    status = copy.deepcopy(vmi.get("status") or {})
    old_phase = str(status.get("phase") or "")
    phase = next_phase(vmi, pod)
    status["phase"] = phase
    conditions = list(status.get("conditions") or [])

    # Pod scheduling problems are mirrored so the VM can say ErrorUnschedulable.
    scheduled = pod_condition(pod, "PodScheduled")
    if (
        pod is not None
        and phase not in FINAL_PHASES
        and scheduled is not None
        and scheduled.get("status") == "False"
    ):
        conditions = set_condition(
            conditions,
            {
                "type": COND_POD_SCHEDULED,
                "status": "False",
                "reason": scheduled.get("reason") or "",
                "message": scheduled.get("message") or "",
            },
            now,
        )
    else:
        conditions = remove_condition(conditions, COND_POD_SCHEDULED)

    if sync_error is not None:
        reason, message = sync_error
        conditions = set_condition(
            conditions,
            {"type": COND_SYNCHRONIZED, "status": "False", "reason": reason, "message": message},
            now,
        )
    else:
        sync = get_condition(vmi, COND_SYNCHRONIZED)
        if sync is not None and sync.get("reason") in (REASON_FAILED_CREATE, REASON_PVC_NOT_FOUND):
            conditions = remove_condition(conditions, COND_SYNCHRONIZED)

    paused = any(c.get("type") == COND_PAUSED and c.get("status") == "True" for c in conditions)
    if phase == RUNNING and pod_is_ready(pod) and not paused and not being_deleted(pod):
        conditions = set_condition(
            conditions, {"type": COND_READY, "status": "True", "reason": "", "message": ""}, now
        )
    else:
        if phase == RUNNING and paused:
            reason = "Paused"
        elif phase == RUNNING:
            reason = "PodNotReady"
        elif phase in FINAL_PHASES:
            reason = "PodTerminating" if pod is not None else "GuestNotRunning"
        else:
            reason = "GuestNotRunning"
        conditions = set_condition(
            conditions, {"type": COND_READY, "status": "False", "reason": reason, "message": ""}, now
        )
    status["conditions"] = conditions

    if pod is not None:
        node = (pod.get("spec") or {}).get("nodeName")
        uid = (pod.get("metadata") or {}).get("uid")
        if uid and phase not in FINAL_PHASES:
            status["activePods"] = {uid: node or ""}
        if phase in (SCHEDULED, RUNNING) and node and not status.get("nodeName"):
            status["nodeName"] = node
        image = next(
            (
                c.get("image")
                for c in (pod.get("spec") or {}).get("containers") or []
                if c.get("name") == "compute"
            ),
            None,
        )
        if image:
            status["launcherContainerImageVersion"] = image
    if phase in FINAL_PHASES:
        status.pop("activePods", None)

    stamps = list(status.get("phaseTransitionTimestamps") or [])
    if phase and (phase != old_phase or not any(s.get("phase") == phase for s in stamps)):
        stamps.append({"phase": phase, "phaseTransitionTimestamp": now})
    status["phaseTransitionTimestamps"] = stamps
    if phase == FAILED and old_phase != FAILED and not status.get("reason"):
        if pod is None and not being_deleted(vmi) and old_phase not in ("", PENDING):
            status["reason"] = "PodDeleted"
        elif pod_phase(pod) == "Failed":
            status["reason"] = "PodFailed"
    return status


def phase_event(old_phase: str, new_phase: str) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event announcing a phase change, if any."""
    if old_phase == new_phase:
        return None
    table = {
        SCHEDULED: ("Normal", "Scheduled", "VirtualMachineInstance is scheduled on its node"),
        SUCCEEDED: ("Normal", "Succeeded", "The VirtualMachineInstance has shut down"),
        FAILED: ("Warning", "Failed", "The VirtualMachineInstance failed"),
    }
    return table.get(new_phase)
