"""What `start`, `stop` and `restart` of a VirtualMachine change, as KubeVirt's virt-api decides (pure).

By run strategy:

    start    Halted -> runStrategy Always; Manual, RerunOnFailure -> a Start request (after a
             Stop request for a finished VMI); Always, Once -> refused
    stop     Always, Once -> runStrategy Halted; Manual, RerunOnFailure -> a Stop request for the
             running VMI; Halted -> refused unless it shortens a running VMI's grace period
    restart  Always, Manual, RerunOnFailure -> Stop (of this VMI) + Start requests; Halted, Once
             -> refused

Requests go to `status.stateChangeRequests` through a JSON patch guarded by a `test` of the
current list, so two racing requests cannot both be queued (the loser gets 409). The spec
changes likewise test the field they replace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubevisor.api.vm import run_strategy
from kubevisor.apiserver.errors import APIError, bad_request

Obj = dict[str, Any]
FINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Change:
    """JSON patches to apply: to the VM (`spec`) or its status subresource (`status`), and to the VMI."""

    vm_spec: list[Obj] = field(default_factory=list)
    vm_status: list[Obj] = field(default_factory=list)
    vmi: list[Obj] = field(default_factory=list)
    delete_pod_grace: int | None = None  # restart --force: delete the launcher pod with this grace


def refused(name: str, reason: str, kind: str = "virtualmachine") -> APIError:
    """KubeVirt's 409 for a request the object's state does not allow."""
    return APIError(409, f'Operation cannot be fulfilled on {kind}.kubevirt.io "{name}": {reason}',
                    "Conflict", {"name": name, "group": "kubevirt.io", "kind": kind})


def _phase(vmi: Obj | None) -> str:
    return str(((vmi or {}).get("status") or {}).get("phase") or "")


def _final(vmi: Obj | None) -> bool:
    return _phase(vmi) in FINAL


def _name(vm: Obj) -> str:
    return str((vm.get("metadata") or {}).get("name") or "")


def guarded_set(obj: Obj, path: str, value: Any) -> list[Obj]:
    """Set `path` (a JSON pointer into obj) to value, failing if it changed since obj was read.

    `test` cannot say "absent", so a field that is not there yet is guarded by the object's
    resourceVersion instead.
    """
    current: Any = obj
    for part in path.strip("/").split("/"):
        if not isinstance(current, dict) or part not in current:
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            return [{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                    {"op": "add", "path": path, "value": value}]
        current = current[part]
    return [{"op": "test", "path": path, "value": current}, {"op": "replace", "path": path, "value": value}]


def state_change_patch(vm: Obj, *requests: Obj) -> list[Obj]:
    """Queue requests, guarded by a test of what is queued now; a lone Stop replaces the queue."""
    status = vm.get("status") or {}
    current = status.get("stateChangeRequests")
    ops: list[Obj] = []
    if not status:  # no status at all (the controller has not written one yet)
        ops.append({"op": "add", "path": "/status", "value": {"stateChangeRequests": list(requests)}})
        return ops
    if current and not (len(requests) == 1 and requests[0].get("action") == "Stop"):
        raise refused(_name(vm), "unable to complete request: stop/start already underway")
    ops.extend(guarded_set(vm, "/status/stateChangeRequests", list(requests)))
    if status.get("startFailure"):
        ops.append({"op": "remove", "path": "/status/startFailure"})
    return ops


def running_patch(vm: Obj, running: bool) -> list[Obj]:
    spec = vm.get("spec") or {}
    if spec.get("runStrategy") is not None:
        return guarded_set(vm, "/spec/runStrategy", "Always" if running else "Halted")
    return guarded_set(vm, "/spec/running", running)


def _uid(vmi: Obj) -> str:
    return str((vmi.get("metadata") or {}).get("uid") or "")


def start(vm: Obj, vmi: Obj | None, options: Obj) -> Change:
    name = _name(vm)
    if vmi is not None and _phase(vmi) not in ("", "Unknown") and not _final(vmi):
        raise refused(name, "VM is already running")
    data = {"paused": "true"} if options.get("paused") is True else None
    start_request: Obj = {"action": "Start", **({"data": data} if data else {})}
    strategy = run_strategy(vm)
    if strategy == "Halted":
        if data:
            return Change(vm_status=state_change_patch(vm, start_request))
        return Change(vm_spec=running_patch(vm, True))
    if strategy in ("RerunOnFailure", "Manual"):
        if strategy == "RerunOnFailure" and _phase(vmi) == "Failed":
            raise refused(name, "RerunOnFailure does not support starting VM from failed state")
        restart = vmi is not None and (
            (strategy == "RerunOnFailure" and _phase(vmi) == "Succeeded")
            or (strategy == "Manual" and _final(vmi))
        )
        if restart:
            assert vmi is not None
            stop_request = {"action": "Stop", "uid": _uid(vmi)}
            return Change(vm_status=state_change_patch(vm, stop_request, start_request))
        return Change(vm_status=state_change_patch(vm, start_request))
    raise refused(name, f"{strategy} does not support manual start requests")


def _grace(options: Obj, key: str) -> int | None:
    grace = options.get(key)
    if grace is None:
        return None
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        raise bad_request("gracePeriod has to be greater or equal to 0")
    return grace


def stop(vm: Obj, vmi: Obj | None, options: Obj) -> Change:
    name = _name(vm)
    grace = _grace(options, "gracePeriod")
    running = vmi is not None and not _final(vmi)
    vmi_ops: list[Obj] = []
    old_grace: int | None = None
    if running and grace is not None:
        assert vmi is not None
        old_grace = (vmi.get("spec") or {}).get("terminationGracePeriodSeconds")
        vmi_ops = guarded_set(vmi, "/spec/terminationGracePeriodSeconds", grace)
    strategy = run_strategy(vm)
    if strategy in ("Always", "Once"):
        return Change(vm_spec=running_patch(vm, False), vmi=vmi_ops)
    if not running:
        raise refused(name, "VM is not running")
    assert vmi is not None
    if strategy == "Halted" and (grace is None or (old_grace is not None and grace >= old_grace)):
        raise refused(name, "Halted only supports manual stop requests with a shorter graceperiod")
    return Change(vm_status=state_change_patch(vm, {"action": "Stop", "uid": _uid(vmi)}), vmi=vmi_ops)


def restart(vm: Obj, vmi: Obj | None, options: Obj) -> Change:
    name = _name(vm)
    grace = _grace(options, "gracePeriodSeconds")
    if grace is not None and grace > 0:
        raise bad_request("For force restart, only gracePeriod=0 is supported for now")
    strategy = run_strategy(vm)
    if strategy in ("Halted", "Once"):
        raise refused(name, f"RunStategy {strategy} does not support manual restart requests")
    if vmi is None:
        raise refused(name, "VM is not running")
    return Change(
        vm_status=state_change_patch(vm, {"action": "Stop", "uid": _uid(vmi)}, {"action": "Start"}),
        delete_pod_grace=1 if grace == 0 else None,
    )
