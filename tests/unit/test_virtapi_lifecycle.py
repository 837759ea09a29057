"""start / stop / restart of a VM: what each run strategy turns them into (KubeVirt's virt-api rules).

The patches are applied with the same JSON Patch code the apiserver uses, so a guard that
would not hold (a `test` of a missing member) fails here.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubevisor.apiserver.errors import APIError
from kubevisor.apiserver.patches import TEST_FAILED, PatchError, apply_json_patch
from kubevisor.virtapi import lifecycle

Obj = dict[str, Any]


def vm(strategy: str | None = None, running: bool | None = None, status: Obj | None = None) -> Obj:
    spec: Obj = {"template": {"spec": {}}}
    if strategy is not None:
        spec["runStrategy"] = strategy
    if running is not None:
        spec["running"] = running
    obj: Obj = {"metadata": {"name": "v", "namespace": "ns", "resourceVersion": "7", "uid": "vm-uid"},
                "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def vmi(phase: str, grace: int | None = 30) -> Obj:
    spec: Obj = {} if grace is None else {"terminationGracePeriodSeconds": grace}
    return {"metadata": {"name": "v", "uid": "vmi-uid", "resourceVersion": "9"}, "spec": spec,
            "status": {"phase": phase}}


def applied(obj: Obj, ops: list[Obj]) -> Obj:
    return apply_json_patch(copy.deepcopy(obj), ops)


def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(APIError) as info:
        fn(*args)
    assert info.value.code == 409
    return info.value.message


# -- start ---------------------------------------------------------------------------------------
def test_start_halted_flips_the_run_strategy_to_always() -> None:
    v = vm("Halted", status={"printableStatus": "Stopped"})
    change = lifecycle.start(v, None, {})
    assert applied(v, change.vm_spec)["spec"]["runStrategy"] == "Always"
    assert not change.vm_status


def test_start_of_a_legacy_running_false_vm_sets_running_true() -> None:
    v = vm(running=False)
    assert applied(v, lifecycle.start(v, None, {}).vm_spec)["spec"]["running"] is True
    bare = vm()  # neither field: Halted by default; the patch adds `running`
    assert applied(bare, lifecycle.start(bare, None, {}).vm_spec)["spec"]["running"] is True


def test_start_paused_queues_a_start_request_with_data() -> None:
    v = vm("Halted", status={"printableStatus": "Stopped"})
    out = applied(v, lifecycle.start(v, None, {"paused": True}).vm_status)
    assert out["status"]["stateChangeRequests"] == [{"action": "Start", "data": {"paused": "true"}}]


@pytest.mark.parametrize("strategy", ["Always", "Once"])
def test_start_is_refused_where_the_controller_decides(strategy: str) -> None:
    assert "does not support manual start requests" in refused(lifecycle.start, vm(strategy), None, {})


def test_start_of_a_running_vm_is_refused() -> None:
    assert "VM is already running" in refused(lifecycle.start, vm("Manual"), vmi("Running"), {})


def test_start_manual_queues_start_and_restarts_a_finished_vmi() -> None:
    v = vm("Manual", status={"printableStatus": "Stopped"})
    assert applied(v, lifecycle.start(v, None, {}).vm_status)["status"]["stateChangeRequests"] == [
        {"action": "Start"}
    ]
    out = applied(v, lifecycle.start(v, vmi("Succeeded"), {}).vm_status)
    assert out["status"]["stateChangeRequests"] == [{"action": "Stop", "uid": "vmi-uid"}, {"action": "Start"}]


def test_rerun_on_failure_does_not_start_from_failed() -> None:
    message = refused(lifecycle.start, vm("RerunOnFailure", status={}), vmi("Failed"), {})
    assert "does not support starting VM from failed state" in message


def test_a_vm_without_status_gets_one() -> None:
    v = vm("Manual")
    assert applied(v, lifecycle.start(v, None, {}).vm_status)["status"] == {
        "stateChangeRequests": [{"action": "Start"}]
    }


def test_start_clears_a_start_failure() -> None:
    v = vm("Manual", status={"startFailure": {"consecutiveFailCount": 2}, "stateChangeRequests": []})
    out = applied(v, lifecycle.start(v, None, {}).vm_status)
    assert "startFailure" not in out["status"]


def test_a_second_request_while_one_is_queued_is_refused() -> None:
    v = vm("Manual", status={"stateChangeRequests": [{"action": "Start"}]})
    assert "already underway" in refused(lifecycle.start, v, None, {})


def test_queue_guard_fails_when_the_vm_changed_meanwhile() -> None:
    v = vm("Manual", status={"printableStatus": "Stopped"})
    ops = lifecycle.start(v, None, {}).vm_status
    raced = copy.deepcopy(v)
    raced["metadata"]["resourceVersion"] = "8"
    raced["status"]["stateChangeRequests"] = [{"action": "Stop", "uid": "x"}]
    with pytest.raises(PatchError, match=TEST_FAILED):
        apply_json_patch(raced, ops)


# -- stop ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["Always", "Once"])
def test_stop_always_and_once_halt_the_vm(strategy: str) -> None:
    v = vm(strategy)
    assert applied(v, lifecycle.stop(v, vmi("Running"), {}).vm_spec)["spec"]["runStrategy"] == "Halted"


@pytest.mark.parametrize("strategy", ["Manual", "RerunOnFailure"])
def test_stop_manual_queues_a_stop_of_that_vmi(strategy: str) -> None:
    v = vm(strategy, status={"stateChangeRequests": [{"action": "Start"}]})
    out = applied(v, lifecycle.stop(v, vmi("Running"), {}).vm_status)
    assert out["status"]["stateChangeRequests"] == [{"action": "Stop", "uid": "vmi-uid"}]


def test_stop_of_a_stopped_vm_is_refused() -> None:
    assert "VM is not running" in refused(lifecycle.stop, vm("Manual", status={}), None, {})
    assert "VM is not running" in refused(lifecycle.stop, vm("Halted", status={}), vmi("Succeeded"), {})


def test_stop_with_a_grace_period_patches_the_vmi() -> None:
    running = vmi("Running", grace=30)
    change = lifecycle.stop(vm("Always"), running, {"gracePeriod": 0})
    assert applied(running, change.vmi)["spec"]["terminationGracePeriodSeconds"] == 0
    no_grace = vmi("Running", grace=None)
    change = lifecycle.stop(vm("Always"), no_grace, {"gracePeriod": 5})
    assert applied(no_grace, change.vmi)["spec"]["terminationGracePeriodSeconds"] == 5


def test_stop_of_halted_only_shortens_the_grace_period() -> None:
    running = vmi("Running", grace=30)
    message = refused(lifecycle.stop, vm("Halted", status={}), running, {"gracePeriod": 60})
    assert "shorter graceperiod" in message
    change = lifecycle.stop(vm("Halted", status={}), running, {"gracePeriod": 0})
    assert change.vmi and change.vm_status


def test_a_negative_grace_period_is_a_bad_request() -> None:
    with pytest.raises(APIError) as info:
        lifecycle.stop(vm("Always"), vmi("Running"), {"gracePeriod": -1})
    assert info.value.code == 400


# -- restart -------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["Always", "Manual", "RerunOnFailure"])
def test_restart_queues_stop_then_start(strategy: str) -> None:
    v = vm(strategy, status={"printableStatus": "Running"})  # no stateChangeRequests member yet
    out = applied(v, lifecycle.restart(v, vmi("Running"), {}).vm_status)
    assert out["status"]["stateChangeRequests"] == [{"action": "Stop", "uid": "vmi-uid"}, {"action": "Start"}]


@pytest.mark.parametrize("strategy", ["Halted", "Once"])
def test_restart_is_refused_for_halted_and_once(strategy: str) -> None:
    assert "does not support manual restart" in refused(lifecycle.restart, vm(strategy), vmi("Running"), {})


def test_restart_of_a_vm_without_vmi_is_refused() -> None:
    assert "VM is not running" in refused(lifecycle.restart, vm("Always"), None, {})


def test_forced_restart_deletes_the_pod_and_only_grace_zero_is_allowed() -> None:
    forced = lifecycle.restart(vm("Always", status={}), vmi("Running"), {"gracePeriodSeconds": 0})
    assert forced.delete_pod_grace == 1
    with pytest.raises(APIError) as info:
        lifecycle.restart(vm("Always", status={}), vmi("Running"), {"gracePeriodSeconds": 5})
    assert info.value.code == 400
