"""runStrategy decisions (KubeVirt's syncRunStrategy), state change requests, crash-loop back-off."""

import datetime as dt
import random

import pytest

from kubevisor.controller.run_strategy import (
    Action,
    RunStrategyError,
    decide,
    firmware_uuid,
    is_set_to_start,
    run_strategy,
    should_trim_first_request,
    start_backoff_seconds,
    vmi_from_vm,
)

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def vm(strategy=None, running=None, requests=None, status_strategy=None, start_failure=None):
    spec = {
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"domain": {"memory": {"guest": "128Mi"}}}}
    }
    if strategy is not None:
        spec["runStrategy"] = strategy
    if running is not None:
        spec["running"] = running
    status = {}
    if requests:
        status["stateChangeRequests"] = requests
    if status_strategy:
        status["runStrategy"] = status_strategy
    if start_failure:
        status["startFailure"] = start_failure
    return {
        "metadata": {"name": "vm1", "namespace": "default", "uid": "vm-uid", "generation": 3},
        "spec": spec,
        "status": status,
    }


def vmi(phase="Running", uid="vmi-uid", deleting=False):
    meta = {"name": "vm1", "namespace": "default", "uid": uid}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


STOP = {"action": "Stop", "uid": "vmi-uid"}
START = {"action": "Start"}


@pytest.mark.parametrize(
    ("spec_vm", "spec_vmi", "expected"),
    [
        # Always
        (vm("Always"), None, Action(start=True)),
        (vm("Always"), vmi("Running"), Action()),
        (vm("Always"), vmi("Succeeded"), Action(stop=True)),
        (vm("Always"), vmi("Failed"), Action(stop=True)),
        (vm("Always"), vmi("Failed", deleting=True), Action(stop=False)),
        (vm("Always", requests=[STOP]), vmi("Running"), Action(stop=True)),
        (vm("Always", requests=[{"action": "Stop", "uid": "other"}]), vmi("Running"), Action()),
        # legacy running
        (vm(running=True), None, Action(start=True)),
        (vm(running=False), vmi("Running"), Action(stop=True)),
        (vm(), vmi("Running"), Action(stop=True)),
        # RerunOnFailure
        (vm("RerunOnFailure"), None, Action(start=True)),
        (vm("RerunOnFailure", status_strategy="RerunOnFailure"), None, Action()),
        (vm("RerunOnFailure", status_strategy="RerunOnFailure", requests=[START]), None, Action(start=True)),
        (vm("RerunOnFailure"), vmi("Failed"), Action(stop=True, add_start_request=True)),
        (vm("RerunOnFailure"), vmi("Succeeded"), Action(stop=True)),
        (vm("RerunOnFailure"), vmi("Running"), Action()),
        (vm("RerunOnFailure", requests=[STOP]), vmi("Running"), Action(stop=True)),
        # Once
        (vm("Once"), None, Action(start=True)),
        (vm("Once"), vmi("Succeeded"), Action()),
        (vm("Once"), vmi("Failed"), Action()),
        # Manual
        (vm("Manual"), None, Action()),
        (vm("Manual", requests=[START]), None, Action(start=True)),
        (vm("Manual"), vmi("Succeeded"), Action()),
        (vm("Manual", requests=[STOP]), vmi("Running"), Action(stop=True)),
        # Halted
        (vm("Halted"), None, Action()),
        (vm("Halted"), vmi("Running"), Action(stop=True)),
        (vm("Halted", requests=[START]), None, Action(set_running=True)),
    ],
)
def test_decide(spec_vm, spec_vmi, expected):
    assert decide(spec_vm, spec_vmi, NOW) == expected


def test_backoff_delays_a_start():
    failure = {
        "consecutiveFailCount": 2,
        "retryAfterTimestamp": "2026-01-01T12:00:30Z",
        "lastFailedVMIUID": "x",
    }
    assert decide(vm("Always", start_failure=failure), None, NOW) == Action(requeue_after=30.0)
    assert decide(vm("Always", start_failure=failure), None, NOW + dt.timedelta(seconds=31)) == Action(
        start=True
    )


def test_running_and_run_strategy_are_exclusive():
    with pytest.raises(RunStrategyError, match=r"spec\.running"):
        run_strategy(vm("Always", running=True))
    with pytest.raises(RunStrategyError, match=r"spec\.runStrategy"):
        run_strategy(vm("Sometimes"))


@pytest.mark.parametrize(
    ("req", "the_vmi", "trim"),
    [
        (STOP, None, True),
        (STOP, vmi("Running"), False),
        (STOP, vmi("Running", uid="new"), True),
        (START, None, False),
        (START, vmi("Running"), True),
        (START, vmi("Failed"), False),
        (START, vmi("Running", deleting=True), False),
    ],
)
def test_trim_first_request(req, the_vmi, trim):
    assert should_trim_first_request(vm("Manual", requests=[req]), the_vmi) is trim


def test_is_set_to_start():
    assert is_set_to_start(vm("Always"), None)
    assert not is_set_to_start(vm("Halted"), None)
    assert not is_set_to_start(vm("RerunOnFailure"), vmi("Succeeded"))
    assert is_set_to_start(vm("Once"), None) and not is_set_to_start(vm("Once"), vmi("Running"))


def test_backoff_grows_quadratically_and_caps():
    rng = random.Random(1)
    first = start_backoff_seconds(1, rng=rng)
    assert 10 <= first <= 15
    third = start_backoff_seconds(3, rng=rng)
    assert 90 <= third <= 135
    assert start_backoff_seconds(20, rng=rng) == 300


def test_vmi_from_vm_is_deterministic_and_owned():
    body = vmi_from_vm(vm("Always"))
    assert body["metadata"]["name"] == "vm1"
    assert body["metadata"]["labels"] == {"a": "b"}
    assert body["metadata"]["annotations"]["kubevirt.io/vm-generation"] == "3"
    assert body["metadata"]["ownerReferences"][0]["uid"] == "vm-uid"
    assert body["metadata"]["ownerReferences"][0]["controller"] is True
    assert body["metadata"]["finalizers"] == ["kubevirt.io/virtualMachineControllerFinalize"]
    assert body["spec"]["domain"]["firmware"]["uuid"] == firmware_uuid("vm1")
    assert vmi_from_vm(vm("Always")) == body
