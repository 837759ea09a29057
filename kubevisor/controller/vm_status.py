"""A VM's status from its VMI (pure): printableStatus, conditions, start failures.

printableStatus is the first that holds, in KubeVirt's order: Terminating, Stopping,
Migrating, Paused, Running, ErrorPvcNotFound, ErrorUnschedulable, Starting,
CrashLoopBackOff, Stopped, else Unknown. Conditions: Ready (from the VMI's Ready, or
False VMINotExists / VMIConditionMissing), Failure (from the last sync error), and the
VMI's other conditions copied over.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from kubevisor.controller.run_strategy import (
    ALWAYS,
    ONCE,
    RERUN_ON_FAILURE,
    run_strategy,
    should_trim_first_request,
    start_backoff_seconds,
)
from kubevisor.controller.vmi_status import (
    COND_POD_SCHEDULED,
    COND_SYNCHRONIZED,
    REASON_PVC_NOT_FOUND,
    RUNNING,
    SCHEDULED,
    SCHEDULING,
    being_deleted,
    get_condition,
    is_final,
    phase_of,
    remove_condition,
    set_condition,
)

Obj = dict[str, Any]

STOPPED = "Stopped"
PROVISIONING = "Provisioning"
STARTING = "Starting"
PRINT_RUNNING = "Running"
PAUSED = "Paused"
STOPPING = "Stopping"
TERMINATING = "Terminating"
CRASH_LOOP_BACKOFF = "CrashLoopBackOff"
MIGRATING = "Migrating"
UNKNOWN = "Unknown"
ERROR_UNSCHEDULABLE = "ErrorUnschedulable"
ERROR_PVC_NOT_FOUND = "ErrorPvcNotFound"

COND_READY = "Ready"
COND_FAILURE = "Failure"
_NOT_COPIED = {"Ready", "Failure", "RestartRequired"}


@dataclass(frozen=True)
class Expecting:
    """What the controller has asked for and not yet seen (from its expectations)."""

    start: bool = False
    stop: bool = False


def _cond_is(vmi: Obj | None, type_: str, status: str, reason: str | None = None) -> bool:
    cond = get_condition(vmi, type_)
    return (
        cond is not None and cond.get("status") == status and (reason is None or cond.get("reason") == reason)
    )


def printable_status(vm: Obj, vmi: Obj | None, expecting: Expecting) -> str:
    if being_deleted(vm):
        return TERMINATING
    if vmi is not None and not is_final(vmi) and (being_deleted(vmi) or expecting.stop):
        return STOPPING
    if vmi is not None and (vmi.get("status") or {}).get("migrationState", {}).get("completed") is False:
        return MIGRATING
    paused = _cond_is(vmi, "Paused", "True")
    if vmi is not None and phase_of(vmi) == RUNNING:
        return PAUSED if paused else PRINT_RUNNING
    if _cond_is(vmi, COND_SYNCHRONIZED, "False", REASON_PVC_NOT_FOUND):
        return ERROR_PVC_NOT_FOUND
    if _cond_is(vmi, COND_POD_SCHEDULED, "False", "Unschedulable"):
        return ERROR_UNSCHEDULABLE
    if vmi is None:
        if expecting.start:
            return STARTING
    elif phase_of(vmi) in ("", "Pending", SCHEDULING, SCHEDULED):
        return STARTING
    if (vmi is None or is_final(vmi)) and not expecting.start:
        failure = (vm.get("status") or {}).get("startFailure") or {}
        strategy = _safe_strategy(vm)
        if int(failure.get("consecutiveFailCount") or 0) > 0 and strategy in (ALWAYS, RERUN_ON_FAILURE, ONCE):
            return CRASH_LOOP_BACKOFF
    if vmi is not None:
        if is_final(vmi):
            return STOPPED
    elif not expecting.start:
        return STOPPED
    return UNKNOWN


def _safe_strategy(vm: Obj) -> str:
    try:
        return run_strategy(vm)
    except ValueError:
        return ""


def was_running(vmi: Obj | None) -> bool:
    return any(
        s.get("phase") == RUNNING
        for s in ((vmi or {}).get("status") or {}).get("phaseTransitionTimestamps") or []
    )


def sync_start_failure(
    vm: Obj, vmi: Obj | None, now: dt.datetime, rng: random.Random | None = None
) -> Obj | None:
    """The new status.startFailure: cleared once a VMI ran, counted when one failed before running."""
    current = (vm.get("status") or {}).get("startFailure")
    if was_running(vmi) or _safe_strategy(vm) not in (ALWAYS, RERUN_ON_FAILURE, ONCE):
        return None
    if vmi is None or not is_final(vmi):
        return current
    uid = (vmi.get("metadata") or {}).get("uid")
    if current and current.get("lastFailedVMIUID") == uid:
        return dict(current)
    count = int((current or {}).get("consecutiveFailCount") or 0) + 1
    delay = start_backoff_seconds(count, rng=rng)
    retry = (now + dt.timedelta(seconds=delay)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"lastFailedVMIUID": uid, "retryAfterTimestamp": retry, "consecutiveFailCount": count}


def sync_conditions(
    conditions: list[Obj], vmi: Obj | None, sync_error: tuple[str, str] | None, now: str
) -> list[Obj]:
    conditions = list(conditions)
    ready = get_condition(vmi, "Ready")
    if vmi is None:
        conditions = set_condition(
            conditions,
            {
                "type": COND_READY,
                "status": "False",
                "reason": "VMINotExists",
                "message": "VMI does not exist",
            },
            now,
        )
    elif ready is None:
        conditions = set_condition(
            conditions,
            {
                "type": COND_READY,
                "status": "False",
                "reason": "VMIConditionMissing",
                "message": "VMI is missing the Ready condition",
            },
            now,
        )
    else:
        conditions = set_condition(
            conditions,
            {
                "type": COND_READY,
                "status": ready.get("status"),
                "reason": ready.get("reason") or "",
                "message": ready.get("message") or "",
            },
            now,
        )
    if sync_error is None:
        conditions = remove_condition(conditions, COND_FAILURE)
    else:
        conditions = set_condition(
            conditions,
            {"type": COND_FAILURE, "status": "True", "reason": sync_error[0], "message": sync_error[1]},
            now,
        )
    if vmi is None:
        return conditions
    vmi_conds = [
        c for c in (vmi.get("status") or {}).get("conditions") or [] if c.get("type") not in _NOT_COPIED
    ]
    types = {c.get("type") for c in vmi_conds}
    conditions = [c for c in conditions if c.get("type") in _NOT_COPIED or c.get("type") in types]
    for cond in vmi_conds:
        conditions = set_condition(
            conditions,
            {k: v for k, v in cond.items() if k != "lastTransitionTime"}
            | {"lastTransitionTime": cond.get("lastTransitionTime")},
            now,
        )
    return conditions


def compute_vm_status(
    vm: Obj,
    vmi: Obj | None,
    expecting: Expecting,
    now: dt.datetime,
    sync_error: tuple[str, str] | None = None,
    rng: random.Random | None = None,
) -> Obj:
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    status = copy.deepcopy(vm.get("status") or {})
    created = vmi is not None
    status["created"] = created
    status["ready"] = _cond_is(vmi, "Ready", "True") if created else False
    strategy = _safe_strategy(vm)
    if strategy and (status.get("runStrategy") or created):
        status["runStrategy"] = strategy
    if vmi is not None:
        generation = ((vmi.get("metadata") or {}).get("annotations") or {}).get("kubevirt.io/vm-generation")
        if generation and generation.isdigit():
            status["observedGeneration"] = int(generation)
        status["desiredGeneration"] = int((vm.get("metadata") or {}).get("generation") or 1)
    requests = list(status.get("stateChangeRequests") or [])
    if requests and should_trim_first_request({"status": {"stateChangeRequests": requests}}, vmi):
        requests = requests[1:]
    if requests:
        status["stateChangeRequests"] = requests
    else:
        status.pop("stateChangeRequests", None)
    failure = sync_start_failure(vm, vmi, now, rng)
    if failure:
        status["startFailure"] = failure
    else:
        status.pop("startFailure", None)
    status["conditions"] = sync_conditions(list(status.get("conditions") or []), vmi, sync_error, stamp)
    with_failure = dict(vm)
    with_failure["status"] = status
    status["printableStatus"] = printable_status(with_failure, vmi, expecting)
    return status


def semantically_equal(a: Obj, b: Obj) -> bool:
    """Status equality ignoring condition timestamps that only moved."""

    def strip(s: Obj) -> Obj:
        s = copy.deepcopy(s)
        for c in s.get("conditions") or []:
            c.pop("lastProbeTime", None)
            c.pop("lastTransitionTime", None)
        return s

    return strip(a) == strip(b)
