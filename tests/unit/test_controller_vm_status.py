"""VM printableStatus, conditions and start-failure accounting."""

import datetime as dt
import random

import pytest

from kubevisor.controller.vm_status import Expecting, compute_vm_status, printable_status, sync_start_failure

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def vm(strategy="Always", deleting=False, status=None):
    meta = {"name": "vm1", "namespace": "default", "uid": "vm-uid", "generation": 2}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"runStrategy": strategy}, "status": status or {}}


def vmi(phase="", conditions=None, deleting=False, stamps=None, uid="u1"):
    meta = {"name": "vm1", "uid": uid, "annotations": {"kubevirt.io/vm-generation": "2"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"phase": phase, "conditions": conditions or [], "phaseTransitionTimestamps": stamps or []},
    }


UNSCHED = {
    "type": "PodScheduled",
    "status": "False",
    "reason": "Unschedulable",
    "message": "0/1 nodes are available: 1 Insufficient memory.",
}
PVC = {"type": "Synchronized", "status": "False", "reason": "FailedPvcNotFound", "message": "PVC default/x"}
PAUSED = {"type": "Paused", "status": "True"}
FAILURE = {"consecutiveFailCount": 1, "retryAfterTimestamp": "2026-01-01T12:00:10Z", "lastFailedVMIUID": "u0"}


@pytest.mark.parametrize(
    ("the_vm", "the_vmi", "expecting", "expected"),
    [
        (vm("Halted"), None, Expecting(), "Stopped"),
        (vm(), None, Expecting(start=True), "Starting"),
        (vm(), vmi(""), Expecting(), "Starting"),
        (vm(), vmi("Pending"), Expecting(), "Starting"),
        (vm(), vmi("Scheduling"), Expecting(), "Starting"),
        (vm(), vmi("Scheduled"), Expecting(), "Starting"),
        (vm(), vmi("Running"), Expecting(), "Running"),
        (vm(), vmi("Running", [PAUSED]), Expecting(), "Paused"),
        (vm(), vmi("Running"), Expecting(stop=True), "Stopping"),
        (vm(), vmi("Running", deleting=True), Expecting(), "Stopping"),
        (vm(deleting=True), vmi("Running"), Expecting(), "Terminating"),
        (vm(), vmi("Scheduling", [UNSCHED]), Expecting(), "ErrorUnschedulable"),
        (vm(), vmi("Pending", [PVC]), Expecting(), "ErrorPvcNotFound"),
        (vm(), vmi("Succeeded"), Expecting(), "Stopped"),
        (vm(status={"startFailure": FAILURE}), None, Expecting(), "CrashLoopBackOff"),
        (vm(status={"startFailure": FAILURE}), vmi("Failed"), Expecting(), "CrashLoopBackOff"),
        (vm("Manual", status={"startFailure": FAILURE}), None, Expecting(), "Stopped"),
        (vm(), vmi("Unknown"), Expecting(), "Unknown"),
    ],
)
def test_printable_status(the_vm, the_vmi, expecting, expected):
    assert printable_status(the_vm, the_vmi, expecting) == expected


def test_start_failure_counts_once_per_vmi_and_clears_after_running():
    rng = random.Random(0)
    failed = vmi("Failed", uid="a")
    first = sync_start_failure(vm(), failed, NOW, rng)
    assert first["consecutiveFailCount"] == 1 and first["lastFailedVMIUID"] == "a"
    again = sync_start_failure(vm(status={"startFailure": first}), failed, NOW, rng)
    assert again == first
    second = sync_start_failure(vm(status={"startFailure": first}), vmi("Failed", uid="b"), NOW, rng)
    assert second["consecutiveFailCount"] == 2
    ran = vmi("Failed", uid="c", stamps=[{"phase": "Running", "phaseTransitionTimestamp": "x"}])
    assert sync_start_failure(vm(status={"startFailure": second}), ran, NOW, rng) is None


def test_status_ready_and_conditions_follow_the_vmi():
    ready = {"type": "Ready", "status": "True", "reason": "", "message": ""}
    status = compute_vm_status(vm(), vmi("Running", [ready, PAUSED]), Expecting(), NOW)
    assert status["created"] is True and status["ready"] is True
    assert status["printableStatus"] == "Paused"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types == {"Ready": "True", "Paused": "True"}
    assert status["observedGeneration"] == 2 and status["desiredGeneration"] == 2


def test_status_without_vmi():
    status = compute_vm_status(vm("Halted"), None, Expecting(), NOW, sync_error=("FailedCreate", "boom"))
    assert status["created"] is False and status["ready"] is False
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["Ready"]["reason"] == "VMINotExists"
    assert cond["Failure"]["status"] == "True" and cond["Failure"]["message"] == "boom"
    assert "runStrategy" not in status  # only recorded once a VMI was created


def test_status_trims_an_acted_upon_request():
    the_vm = vm("Manual", status={"stateChangeRequests": [{"action": "Start"}]})
    status = compute_vm_status(the_vm, vmi("Scheduling"), Expecting(), NOW)
    assert "stateChangeRequests" not in status
    kept = compute_vm_status(the_vm, None, Expecting(), NOW)
    assert kept["stateChangeRequests"] == [{"action": "Start"}]
