"""VMI phase transitions from the launcher pod, conditions, phase timestamps."""

import pytest

from kubevisor.controller.vmi_status import compute_status, next_phase, phase_event

NOW = "2026-01-01T12:00:00Z"


def vmi(phase="", deleting=False, conditions=None):
    meta = {"name": "v", "uid": "u"}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"metadata": meta, "status": {"phase": phase, "conditions": conditions or []}}


def pod(phase="Pending", ready=False, node="node1", deleting=False, scheduled=None):
    conditions = []
    if ready:
        conditions.append({"type": "Ready", "status": "True"})
    if scheduled:
        conditions.append(scheduled)
    meta = {"name": "virt-launcher-v-abcde", "uid": "pod-uid"}
    if deleting:
        meta["deletionTimestamp"] = NOW
    spec = {"containers": [{"name": "compute", "image": "img:1"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": meta, "spec": spec, "status": {"phase": phase, "conditions": conditions}}


@pytest.mark.parametrize(
    ("current", "the_pod", "deleting", "expected"),
    [
        ("", None, False, "Pending"),
        ("Pending", None, False, "Pending"),
        ("Pending", pod("Pending", node=None), False, "Scheduling"),
        ("Scheduling", pod("Pending"), False, "Scheduling"),
        ("Scheduling", pod("Running", ready=False), False, "Scheduling"),
        ("Scheduling", pod("Running", ready=True), False, "Scheduled"),
        ("", pod("Running", ready=True), False, "Scheduled"),
        ("Scheduled", pod("Running", ready=True), False, "Scheduled"),
        ("Running", pod("Running", ready=True), False, "Running"),
        ("Running", pod("Succeeded"), False, "Succeeded"),
        ("Running", pod("Failed"), False, "Failed"),
        ("Scheduling", pod("Succeeded"), False, "Failed"),
        ("Running", None, False, "Failed"),
        ("Scheduling", None, False, "Failed"),
        ("Scheduling", pod("Pending", deleting=True), False, "Failed"),
        ("Running", pod("Running", ready=True, deleting=True), False, "Running"),
        ("Running", None, True, "Succeeded"),
        ("Pending", None, True, "Failed"),
        ("Succeeded", pod("Running", ready=True), False, "Succeeded"),
        ("Failed", None, False, "Failed"),
    ],
)
def test_next_phase(current, the_pod, deleting, expected):
    assert next_phase(vmi(current, deleting), the_pod) == expected


def test_unschedulable_pod_condition_is_mirrored_then_cleared():
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}
    status = compute_status(vmi("Scheduling"), pod("Pending", node=None, scheduled=cond), NOW)
    mirrored = [c for c in status["conditions"] if c["type"] == "PodScheduled"]
    assert mirrored and mirrored[0]["reason"] == "Unschedulable" and mirrored[0]["message"] == "0/1 nodes"
    later = compute_status({"metadata": {}, "status": status}, pod("Running", ready=True), NOW)
    assert not [c for c in later["conditions"] if c["type"] == "PodScheduled"]


def test_scheduled_sets_node_active_pod_and_timestamps():
    status = compute_status(vmi("Scheduling"), pod("Running", ready=True), NOW)
    assert status["phase"] == "Scheduled"
    assert status["nodeName"] == "node1"
    assert status["activePods"] == {"pod-uid": "node1"}
    assert status["launcherContainerImageVersion"] == "img:1"
    assert status["phaseTransitionTimestamps"] == [{"phase": "Scheduled", "phaseTransitionTimestamp": NOW}]


def test_ready_condition_only_when_running_and_pod_ready():
    ready = {
        c["type"]: c for c in compute_status(vmi("Running"), pod("Running", ready=True), NOW)["conditions"]
    }
    assert ready["Ready"]["status"] == "True"
    paused = compute_status(
        vmi("Running", conditions=[{"type": "Paused", "status": "True"}]), pod("Running", ready=True), NOW
    )
    assert {c["type"]: c["status"] for c in paused["conditions"]}["Ready"] == "False"
    sched = compute_status(vmi("Scheduled"), pod("Running", ready=True), NOW)
    assert {c["type"]: c["reason"] for c in sched["conditions"]}["Ready"] == "GuestNotRunning"


def test_sync_error_sets_synchronized_false_and_success_clears_it():
    status = compute_status(vmi("Pending"), None, NOW, ("FailedPvcNotFound", "PVC default/x does not exist"))
    sync = next(c for c in status["conditions"] if c["type"] == "Synchronized")
    assert sync["status"] == "False" and sync["reason"] == "FailedPvcNotFound"
    cleared = compute_status({"metadata": {}, "status": status}, pod("Pending"), NOW)
    assert not [c for c in cleared["conditions"] if c["type"] == "Synchronized"]


def test_failure_reason_and_final_drops_active_pods():
    status = compute_status(vmi("Running"), pod("Failed"), NOW)
    assert status["phase"] == "Failed" and status["reason"] == "PodFailed" and "activePods" not in status
    gone = compute_status(vmi("Running"), None, NOW)
    assert gone["reason"] == "PodDeleted"


def test_phase_events():
    assert phase_event("Scheduling", "Scheduled")[1] == "Scheduled"
    assert phase_event("Running", "Failed")[0] == "Warning"
    assert phase_event("Running", "Running") is None
