"""What a VM's runStrategy asks for, given its VMI (pure; KubeVirt's syncRunStrategy).

  Always         keep a VMI; a final one (or a stop request) is deleted, then recreated
  RerunOnFailure a Failed VMI is deleted and a start request queued; a Succeeded one is
                 deleted and stays down
  Once           create a VMI once; never replace it
  Manual         only start/stop requests (status.stateChangeRequests) act
  Halted         no VMI; a start request flips the VM to Always (running: true)
The legacy `spec.running` bool means Always (true) or Halted (false); neither set means
Halted. Starts honour the crash-loop back-off (status.startFailure.retryAfterTimestamp).
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import uuid
from dataclasses import dataclass
from typing import Any

from kubevisor.controller.vmi_status import FAILED, SUCCEEDED, being_deleted, is_final, phase_of

Obj = dict[str, Any]

ALWAYS = "Always"
RERUN_ON_FAILURE = "RerunOnFailure"
ONCE = "Once"
MANUAL = "Manual"
HALTED = "Halted"
STRATEGIES = (ALWAYS, RERUN_ON_FAILURE, ONCE, MANUAL, HALTED)

START = "Start"
STOP = "Stop"

MAX_CRASH_LOOP_BACKOFF = 300  # seconds, KubeVirt's defaultMaxCrashLoopBackoffDelaySeconds
MIN_CRASH_LOOP_INTERVAL = 10

VM_CONTROLLER_FINALIZER = "kubevirt.io/virtualMachineControllerFinalize"
VM_GENERATION_ANNOTATION = "kubevirt.io/vm-generation"
_FIRMWARE_UUID_NAMESPACE = uuid.UUID("6a1a24a1-4061-4607-8bf4-a3963d0c5895")  # KubeVirt's, for equal UUIDs


class RunStrategyError(ValueError):
    pass


def run_strategy(vm: Obj) -> str:
    spec = vm.get("spec") or {}
    strategy = spec.get("runStrategy")
    running = spec.get("running")
    if strategy is not None and running is not None:
        raise RunStrategyError("spec.running: running and runStrategy are mutually exclusive")
    if strategy is not None:
        if strategy not in STRATEGIES:
            raise RunStrategyError(f"spec.runStrategy: unsupported value {strategy!r}")
        return str(strategy)
    return ALWAYS if running is True else HALTED


def first_request(vm: Obj) -> Obj | None:
    requests = (vm.get("status") or {}).get("stateChangeRequests") or []
    return requests[0] if requests else None


def has_start_request(vm: Obj) -> bool:
    req = first_request(vm)
    return req is not None and req.get("action") == START


def has_stop_request_for(vm: Obj, vmi: Obj | None) -> bool:
    req = first_request(vm)
    if req is None or vmi is None or req.get("action") != STOP:
        return False
    return bool(req.get("uid")) and req.get("uid") == (vmi.get("metadata") or {}).get("uid")


@dataclass(frozen=True)
class Action:
    """start: create the VMI; stop: delete it; requeue_after: try again in N s;
    add_start_request: queue a Start (RerunOnFailure after a failure); set_running: flip to Always."""

    start: bool = False
    stop: bool = False
    requeue_after: float | None = None
    add_start_request: bool = False
    set_running: bool = False


def backoff_left(vm: Obj, now: dt.datetime) -> float:
    failure = (vm.get("status") or {}).get("startFailure") or {}
    retry = failure.get("retryAfterTimestamp")
    if not retry:
        return 0.0
    try:
        when = dt.datetime.fromisoformat(str(retry).replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (when - now).total_seconds())


def decide(vm: Obj, vmi: Obj | None, now: dt.datetime) -> Action:
    strategy = run_strategy(vm)
    status_strategy = (vm.get("status") or {}).get("runStrategy")

    def start_with_backoff() -> Action:
        left = backoff_left(vm, now)
        return Action(requeue_after=left) if left > 0 else Action(start=True)

    if strategy == ALWAYS:
        if vmi is not None:
            if has_stop_request_for(vm, vmi) or is_final(vmi):
                return Action(stop=not being_deleted(vmi))
            return Action()
        return start_with_backoff()
    if strategy == RERUN_ON_FAILURE:
        if vmi is not None:
            failed = phase_of(vmi) == FAILED
            if not being_deleted(vmi) and (
                has_stop_request_for(vm, vmi) or failed or phase_of(vmi) == SUCCEEDED
            ):
                return Action(stop=True, add_start_request=failed)
            return Action()
        if not has_start_request(vm) and status_strategy == strategy:
            return Action()
        return start_with_backoff()
    if strategy == MANUAL:
        if vmi is not None:
            return Action(stop=has_stop_request_for(vm, vmi) and not being_deleted(vmi))
        return Action(start=True) if has_start_request(vm) else Action()
    if strategy == HALTED:
        if vmi is None:
            return Action(set_running=has_start_request(vm))
        return Action(stop=not being_deleted(vmi))
    if strategy == ONCE:
        return Action(start=vmi is None)
    raise RunStrategyError(f"spec.runStrategy: unsupported value {strategy!r}")


def should_trim_first_request(vm: Obj, vmi: Obj | None) -> bool:
    """Has the first state change request been acted upon?"""
    req = first_request(vm)
    if req is None:
        return False
    if req.get("action") == STOP:
        if vmi is None or not req.get("uid"):
            return True
        return req.get("uid") != (vmi.get("metadata") or {}).get("uid")
    if req.get("action") == START:
        return vmi is not None and not being_deleted(vmi) and not is_final(vmi)
    return True  # unknown actions can never be acted upon


def is_set_to_start(vm: Obj, vmi: Obj | None) -> bool:
    strategy = run_strategy(vm)
    if strategy == ALWAYS:
        return True
    if strategy == HALTED:
        return False
    if strategy == MANUAL:
        return not has_stop_request_for(vm, vmi) if vmi is not None else has_start_request(vm)
    if strategy == RERUN_ON_FAILURE:
        return phase_of(vmi) != SUCCEEDED if vmi is not None else True
    return vmi is None  # Once


def start_backoff_seconds(
    fail_count: int, max_delay: int = MAX_CRASH_LOOP_BACKOFF, rng: random.Random | None = None
) -> int:
    """KubeVirt's crash-loop delay: max(10, max/30) * n^2 + random(0..delay/2), capped at max."""
    fail_count = max(fail_count, 1)
    interval = max(MIN_CRASH_LOOP_INTERVAL, max_delay // 30)
    delay = interval * fail_count * fail_count
    delay += (rng or random.Random()).randrange(delay // 2 + 1)
    return min(delay, max_delay)


def firmware_uuid(name: str) -> str:
    """The stable firmware UUID KubeVirt gives a VM's guests (the same across restarts)."""
    return str(uuid.uuid5(_FIRMWARE_UUID_NAMESPACE, name))


def vmi_from_vm(vm: Obj) -> Obj:
    """The VMI a VM starts: same name, template labels/annotations/spec, VM as controller owner."""
    meta = vm["metadata"]
    template = (vm.get("spec") or {}).get("template") or {}
    tmeta = template.get("metadata") or {}
    spec = copy.deepcopy(template.get("spec") or {})
    domain = spec.setdefault("domain", {})
    firmware = domain.setdefault("firmware", {})
    if not firmware.get("uuid"):
        firmware["uuid"] = firmware_uuid(meta["name"])
    annotations = dict(tmeta.get("annotations") or {})
    annotations[VM_GENERATION_ANNOTATION] = str(meta.get("generation") or 1)
    body: Obj = {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachineInstance",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace") or "default",
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "kubevirt.io/v1",
                    "kind": "VirtualMachine",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "finalizers": [VM_CONTROLLER_FINALIZER],
        },
        "spec": spec,
    }
    return body
